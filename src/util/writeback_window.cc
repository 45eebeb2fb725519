// SPDX-License-Identifier: Apache-2.0
#include "util/writeback_window.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace cbt {

namespace {

// Whether a failed sync_file_range says the file takes no writeback hints
// (ESPIPE: not a regular file; EINVAL, ENOSYS: no such call here) rather
// than that its writeback failed.
bool TakesNoHints(int err) { return err == ESPIPE || err == EINVAL || err == ENOSYS; }

}  // namespace

Status WritebackWindow::Wrote(uint64_t end) {
  if (off_ || end < from_ + kStep) return Status::Ok();
  // Only starts the writeback: a failure of it is reported by the wait
  // below or by fsync.
  (void)::sync_file_range(fd_, static_cast<off_t>(from_), static_cast<off_t>(end - from_),
                          SYNC_FILE_RANGE_WRITE);
  in_flight_.emplace_back(from_, end - from_);
  from_ = end;
  if (in_flight_.size() <= kWindows) return Status::Ok();
  const auto [offset, length] = in_flight_.front();
  in_flight_.pop_front();
  if (::sync_file_range(
          fd_, static_cast<off_t>(offset), static_cast<off_t>(length),
          SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) != 0) {
    // Nothing was written back, so nothing failed: fsync does it all.
    if (TakesNoHints(errno)) {
      off_ = true;
      in_flight_.clear();
      return Status::Ok();
    }
    return Status::FromErrno(errno, path_ + ": writeback");
  }
  (void)::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(length),
                        POSIX_FADV_DONTNEED);
  return Status::Ok();
}

Status WritebackWindow::WriteOut(uint64_t end) {
  if (!off_ && ::sync_file_range(fd_, 0, static_cast<off_t>(end),
                                 SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                     SYNC_FILE_RANGE_WAIT_AFTER) != 0) {
    if (!TakesNoHints(errno)) {
      return Status::FromErrno(errno, path_ + ": writeback");
    }
    off_ = true;
  }
  if (off_ && ::fdatasync(fd_) != 0) return Status::FromErrno(errno, path_ + ": fdatasync");
  Release(end);  // every page is clean now
  return Status::Ok();
}

void WritebackWindow::Release(uint64_t end) {
  in_flight_.clear();
  (void)::posix_fadvise(fd_, 0, static_cast<off_t>(end), POSIX_FADV_DONTNEED);
}

}  // namespace cbt
