// SPDX-License-Identifier: Apache-2.0
//
// Paces the writeback of a file written front to back through the page
// cache, so that a backup's writes reach the device steadily while the
// backup runs, in requests small enough not to hold up the reads it is
// waiting for.
//
// Left alone, the kernel keeps gigabytes dirty until fsync, which then
// writes them all while the backup waits.  Asked to write back large
// ranges at once (or written with large O_DIRECT writes), the device
// queues tens of megabytes of writes ahead of every read: on the backup
// benchmark, whose simulator reads the same device, the reads then took ten
// times the device time they take in nbdcopy's copy, and a full backup
// took 9.2-9.7 s against 7.3-8.5 s with this pacing (eight paired runs).
// So every kStep written is handed to the kernel's writeback at once, and
// once more than kWindows steps are in flight the oldest is waited for and
// dropped from the page cache, which a backup would otherwise fill with
// data it does not read again.  nbdcopy paces its writes the same way.
//
// Thread-safety: one caller per window.
#ifndef CBT_UTIL_WRITEBACK_WINDOW_H_
#define CBT_UTIL_WRITEBACK_WINDOW_H_

#include "util/status.h"

#include <cstdint>
#include <deque>
#include <string>
#include <utility>

namespace cbt {

class WritebackWindow {
 public:
  static constexpr uint64_t kStep = 1ull << 20;
  static constexpr size_t kWindows = 8;

  // For `fd` (borrowed: it must outlive this window), named `path` in
  // errors, whose bytes from `from` on are not yet handed to writeback.
  WritebackWindow(int fd, std::string path, uint64_t from)
      : fd_(fd), path_(std::move(path)), from_(from) {}

  // The file's bytes up to `end` are written.  May wait for the device.
  // Returns a failure of the writeback it waited for: the kernel reports
  // such a failure once per open file, so fsync will not report it again
  // and the caller must treat the file as failed.
  Status Wrote(uint64_t end);

  // Writes the file's bytes up to `end` to the device and waits for them,
  // then drops them from the page cache.  After Ok every byte up to `end`
  // has reached the device, maybe only its volatile cache: a sync of the
  // filesystem (SyncFilesystemsOf) makes them durable, without the cache
  // flush per file that fsync costs.  A file that takes no writeback hints
  // is fdatasynced instead.  Returns a failure of the writeback: reported
  // once per open file, so the caller must treat the file as failed.
  Status WriteOut(uint64_t end);

  // Drops the file's pages, up to `end`, from the page cache.  Call after
  // fsync succeeded (only clean pages are dropped).
  void Release(uint64_t end);

 private:
  int fd_;
  std::string path_;
  uint64_t from_;                                        // first byte not yet handed to writeback
  std::deque<std::pair<uint64_t, uint64_t>> in_flight_;  // (offset, length)
  bool off_ = false;  // the file takes no writeback hints (not a regular file)
};

}  // namespace cbt

#endif  // CBT_UTIL_WRITEBACK_WINDOW_H_
