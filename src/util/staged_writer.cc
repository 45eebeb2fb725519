// SPDX-License-Identifier: Apache-2.0
#include "util/staged_writer.h"

#include "util/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace cbt {

StagedWriter::~StagedWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  // The thread writes what is queued before it ends: the buffers must not
  // be freed under a write in flight.
  if (thread_.joinable()) thread_.join();
}

void StagedWriter::SetDirect(bool on) {
  const int fl = ::fcntl(fd_, F_GETFL);
  const bool set = fl != -1 && ::fcntl(fd_, F_SETFL, on ? (fl | O_DIRECT) : (fl & ~O_DIRECT)) == 0;
  direct_ = on && set;
}

bool StagedWriter::EnableDirect() {
  if (end_ % kAlign == 0 && staged_ == 0 && !thread_.joinable()) SetDirect(true);
  return direct_;
}

Status StagedWriter::Write(const char* data, uint64_t len) {
  if (!direct_) {
    CBT_RETURN_IF_ERROR(PwriteAll(fd_, data, len, end_, path_));
    end_ += len;
    return Status::Ok();
  }
  while (len > 0) {
    if (stage_ == nullptr) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] {
        return !free_.empty() || static_cast<int>(buffers_.size()) < kBuffers || !error_.ok();
      });
      if (!error_.ok()) return error_;
      if (!free_.empty()) {
        stage_ = free_.back();
        free_.pop_back();
      } else {
        void* p = nullptr;
        if (::posix_memalign(&p, kAlign, kStageSize) != 0) {
          return Status::IoError(path_ + ": out of memory");
        }
        buffers_.emplace_back(static_cast<char*>(p), &std::free);
        stage_ = buffers_.back().get();
      }
      stage_off_ = end_;
    }
    const uint64_t n = std::min(len, kStageSize - staged_);
    std::memcpy(stage_ + staged_, data, n);
    staged_ += n;
    data += n;
    len -= n;
    end_ += n;
    if (staged_ == kStageSize) CBT_RETURN_IF_ERROR(Submit());
  }
  return Status::Ok();
}

Status StagedWriter::Submit() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const Chunk c{stage_, stage_off_, staged_};
    stage_ = nullptr;
    staged_ = 0;
    if (!error_.ok()) {  // nothing after a failed write is worth writing
      free_.push_back(c.buf);
      return error_;
    }
    queue_.push_back(c);
  }
  if (!thread_.joinable()) thread_ = std::thread([this] { WriteBehind(); });
  cv_.notify_all();
  return Status::Ok();
}

void StagedWriter::WriteBehind() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;
    const Chunk c = queue_.front();
    const bool skip = !error_.ok();  // as in Submit
    lock.unlock();
    Status st = skip ? Status::Ok() : WriteChunk(c);
    lock.lock();
    queue_.pop_front();  // only now: Drain waits for an empty queue
    free_.push_back(c.buf);
    if (!st.ok() && error_.ok()) error_ = st;
    cv_.notify_all();
  }
}

Status StagedWriter::WriteChunk(const Chunk& c) {
  uint64_t done = 0;
  const uint64_t aligned = c.len - c.len % kAlign;
  while (!refused_ && done < aligned) {
    const ssize_t w =
        ::pwrite(fd_, c.buf + done, aligned - done, static_cast<off_t>(c.offset + done));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EINVAL) {  // this file or medium takes no O_DIRECT
      refused_ = true;
      break;
    }
    if (w < 0) return Status::FromErrno(errno, path_);
    if (w == 0) return Status::IoError(path_ + ": short write");
    done += static_cast<uint64_t>(w);
    if (done % kAlign != 0) refused_ = true;  // a short write left the rest unaligned
  }
  if (done == c.len) return Status::Ok();
  // The part O_DIRECT cannot take: a last partial page (the file's end),
  // or everything once the file refused it.
  if (refused_ || c.len != aligned) {
    const int fl = ::fcntl(fd_, F_GETFL);
    if (fl != -1 && (fl & O_DIRECT) != 0) ::fcntl(fd_, F_SETFL, fl & ~O_DIRECT);
  }
  return PwriteAll(fd_, c.buf + done, c.len - done, c.offset + done, path_);
}

Status StagedWriter::Drain() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return queue_.empty(); });
  return error_;
}

Status StagedWriter::Finish() {
  if (!direct_) return Status::Ok();
  Status st = Drain();
  if (st.ok() && staged_ > 0) st = WriteChunk({stage_, stage_off_, staged_});
  if (stage_ != nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(stage_);
    stage_ = nullptr;
    staged_ = 0;
  }
  SetDirect(false);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  buffers_.clear();
  free_.clear();
  return st;
}

}  // namespace cbt
