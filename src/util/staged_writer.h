// SPDX-License-Identifier: Apache-2.0
//
// Writes a file front to back with O_DIRECT where the filesystem takes it.
// A backup writes gigabytes once and reads them rarely: through the page
// cache each byte is copied once more by the CPU, the kernel's writeback
// competes with the backup for the cores, and fsync then waits for all of
// it at once.  O_DIRECT needs page-aligned offsets, lengths and memory, so
// writes are gathered in page-aligned staging buffers of kStageSize.
//
// An O_DIRECT write waits for the device, and the caller is a backup's
// NBD reader, whose connection stalls while it waits (measured: a quarter
// of each reader's time).  So a full buffer is written by a thread of the
// writer's own while the caller fills the next one; the caller waits only
// when kBuffers are all in flight, that is when the device is the
// bottleneck anyway.
//
// A file or filesystem that refuses O_DIRECT (tmpfs, some network
// filesystems), or a short write, turns it off for good: the rest goes
// through the page cache, so nothing is ever lost to the fallback.  Files
// written buffered get no thread and no staging.
//
// Thread-safety: one caller per writer (the writer's thread is internal).
#ifndef CBT_UTIL_STAGED_WRITER_H_
#define CBT_UTIL_STAGED_WRITER_H_

#include "util/status.h"

#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace cbt {

class StagedWriter {
 public:
  static constexpr uint64_t kAlign = 4096;
  static constexpr uint64_t kStageSize = 4ull << 20;
  static constexpr int kBuffers = 2;

  // Writes to `fd` (borrowed: it must outlive this writer), named `path`
  // in errors, from file offset `offset` on.
  StagedWriter(int fd, std::string path, uint64_t offset)
      : fd_(fd), path_(std::move(path)), end_(offset) {}
  // Waits for the writes in flight (a writer dropped without Finish leaves
  // a file whose content is undefined from its first unwritten byte).
  ~StagedWriter();
  StagedWriter(const StagedWriter&) = delete;
  StagedWriter& operator=(const StagedWriter&) = delete;

  // Turns O_DIRECT on if the file takes it and `offset` is aligned;
  // returns whether it is on.
  bool EnableDirect();
  bool direct() const { return direct_; }

  // Appends `len` bytes at offset().  May return the failure of an
  // earlier write, since buffers are written behind.  After a failure the
  // file's content from the first unwritten byte on is undefined.
  Status Write(const char* data, uint64_t len);
  // Writes out what is staged (the part after the last whole page through
  // the page cache), waits for every write, and turns O_DIRECT off: later
  // writes are buffered.  Returns the first failure of any write.  Does not
  // fsync.
  Status Finish();

  // The offset the next byte goes to.
  uint64_t offset() const { return end_; }

 private:
  struct Chunk {
    char* buf;
    uint64_t offset;
    uint64_t len;
  };
  using Buffer = std::unique_ptr<char, void (*)(void*)>;

  // Hands the staged buffer to the write-behind thread and takes a free
  // one (waiting for one if kBuffers are in flight).
  Status Submit();
  // Waits until nothing is in flight; returns the first failure.
  Status Drain();
  void WriteBehind();
  // Writes `c` with O_DIRECT, or buffered once the file refused it.
  Status WriteChunk(const Chunk& c);
  void SetDirect(bool on);

  int fd_;
  std::string path_;
  uint64_t end_;  // offset of the next byte (staged or not)
  bool direct_ = false;
  char* stage_ = nullptr;   // the buffer being filled, when direct_
  uint64_t staged_ = 0;     // bytes in stage_
  uint64_t stage_off_ = 0;  // file offset of stage_[0]

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Buffer> buffers_;  // all of them, made as needed
  std::vector<char*> free_;      // buffers neither staged nor in flight
  std::deque<Chunk> queue_;      // submitted, not yet written (front in flight)
  bool writing_ = false;         // the thread is writing queue_.front()
  bool stop_ = false;
  bool refused_ = false;  // O_DIRECT was refused: write buffered
  Status error_;          // the first failed write
  std::thread thread_;
};

}  // namespace cbt

#endif  // CBT_UTIL_STAGED_WRITER_H_
