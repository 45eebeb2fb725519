// SPDX-License-Identifier: Apache-2.0
#include "util/linux_aio.h"

#include "util/check.h"

#include <linux/aio_abi.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <type_traits>

namespace cbt {

static_assert(std::is_same_v<aio_context_t, unsigned long>, "aio_context_t is unsigned long");

LinuxAio::LinuxAio() {
  if (::syscall(SYS_io_setup, static_cast<long>(kMaxInFlight), &ctx_) != 0) setup_errno_ = errno;
}

LinuxAio::~LinuxAio() {
  if (setup_errno_ == 0) ::syscall(SYS_io_destroy, ctx_);
}

Result<LinuxAio*> LinuxAio::ForThread() {
  thread_local LinuxAio aio;
  if (aio.setup_errno_ != 0) {
    return Status::NotSupported(std::string("Linux asynchronous I/O is not available: ") +
                                std::strerror(aio.setup_errno_));
  }
  return &aio;
}

void LinuxAio::Run(Read* reads, size_t count) {
  for (size_t first = 0; first < count; first += kMaxInFlight) {
    RunRound(reads + first, std::min(kMaxInFlight, count - first));
  }
}

void LinuxAio::RunRound(Read* reads, size_t count) {
  struct iocb cbs[kMaxInFlight];
  struct iocb* ptrs[kMaxInFlight];
  for (size_t i = 0; i < count; ++i) {
    reads[i].result = kNotRun;
    cbs[i] = iocb{};
    cbs[i].aio_lio_opcode = IOCB_CMD_PREAD;
    cbs[i].aio_fildes = static_cast<uint32_t>(reads[i].fd);
    cbs[i].aio_buf = reinterpret_cast<uintptr_t>(reads[i].buf);
    cbs[i].aio_nbytes = reads[i].len;
    cbs[i].aio_offset = static_cast<int64_t>(reads[i].offset);
    cbs[i].aio_data = i;
    ptrs[i] = &cbs[i];
  }
  // The kernel may take fewer than asked; what it refuses (an error other
  // than EINTR) stays kNotRun for the caller to read another way.
  const long total = static_cast<long>(count);
  long submitted = 0;
  while (submitted < total) {
    long n = ::syscall(SYS_io_submit, ctx_, total - submitted, ptrs + submitted);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    submitted += n;
  }
  struct io_event events[kMaxInFlight];
  long done = 0;
  while (done < submitted) {
    long n = ::syscall(SYS_io_getevents, ctx_, submitted - done, submitted - done, events, nullptr);
    if (n < 0 && errno == EINTR) continue;
    // Only a bad context or argument gets here, and reads may still be
    // landing in buffers the caller would then reuse: the process stops.
    CBT_CHECK(n >= 0, std::string("io_getevents failed: ") + std::strerror(errno));
    for (long i = 0; i < n; ++i) {
      CBT_CHECK(events[i].data < count, "io_getevents returned a completion of another batch");
      reads[events[i].data].result = static_cast<int64_t>(events[i].res);
    }
    done += n;
  }
}

}  // namespace cbt
