// SPDX-License-Identifier: Apache-2.0
//
// Linux asynchronous I/O (io_setup, io_submit, io_getevents) through raw
// system calls: many reads in flight from one thread, for readers that
// bypass the page cache (O_DIRECT) and would otherwise wait for the device
// once per read.  Raw system calls need no library, and unlike io_uring
// they are not refused by the usual container seccomp profiles.
//
// Failures are values.  A thread the kernel gives no context gets a Status
// from ForThread; a read that fails or is cut short says so in its
// `result`, and the caller reads it again another way.  The one exception
// is io_getevents failing, which only a bad context or argument (a bug)
// can cause: reads may still be landing in the caller's buffers then, so
// the process ends through CBT_CHECK (util/check.h) instead of returning.
//
// Thread-safety: each thread has its own context (ForThread), so
// concurrent readers never wait for each other's completions.  A context
// is used only by its thread.
#ifndef CBT_UTIL_LINUX_AIO_H_
#define CBT_UTIL_LINUX_AIO_H_

#include "util/status.h"

#include <cstddef>
#include <cstdint>

namespace cbt {

class LinuxAio {
 public:
  // Reads one context has in flight at most; Run takes more in rounds.
  static constexpr size_t kMaxInFlight = 64;
  // The `result` of a read the kernel did not take.
  static constexpr int64_t kNotRun = -1;

  // One read of `len` bytes at `offset` of `fd` into `buf`.  On an
  // O_DIRECT descriptor, `buf`, `len` and `offset` must be aligned as the
  // file requires, or the read fails with -EINVAL.
  struct Read {
    int fd = -1;
    void* buf = nullptr;
    uint64_t len = 0;
    uint64_t offset = 0;
    // Set by Run: the bytes read (fewer than `len` at the end of the file
    // or on a short read), -errno if the read failed, or kNotRun if the
    // kernel did not take it (EAGAIN, ENOMEM).
    int64_t result = kNotRun;

    bool complete() const { return result == static_cast<int64_t>(len); }
  };

  // The calling thread's context, made by its first call.  NotSupported,
  // with the kernel's reason, where the kernel gives none (AIO compiled
  // out, the system-wide aio-max-nr reached); a thread refused once stays
  // refused.
  static Result<LinuxAio*> ForThread();

  LinuxAio(const LinuxAio&) = delete;
  LinuxAio& operator=(const LinuxAio&) = delete;
  ~LinuxAio();

  // Runs the `count` reads at `reads`, at most kMaxInFlight at a time, and
  // sets each one's result.  Returns when every read the kernel took has
  // completed: nothing writes to the buffers after Run returns.
  void Run(Read* reads, size_t count);

 private:
  LinuxAio();
  // Run for at most kMaxInFlight reads.
  void RunRound(Read* reads, size_t count);

  unsigned long ctx_ = 0;  // the kernel's aio_context_t
  int setup_errno_ = 0;    // why io_setup failed, 0 if it did not
};

}  // namespace cbt

#endif  // CBT_UTIL_LINUX_AIO_H_
