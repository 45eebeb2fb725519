// SPDX-License-Identifier: Apache-2.0
//
// The kernel read-ahead of a cbtfs mount.  The kernel sends FUSE reads of at
// most its read-ahead window (128 KiB by default), one round trip each.
// Sequential readers (restore, cp, dd) go much faster with a larger window,
// which only the mount's bdi setting in sysfs can give.
//
// Thread-safety: RaiseReadahead may be called from any thread.  Errors are
// not reported: the setting needs root, and failing to make it only leaves
// the kernel's default.
#ifndef CBT_FUSE_READAHEAD_H_
#define CBT_FUSE_READAHEAD_H_

#include <string>

namespace cbt::cbtfs {

// 4 MiB measured best: the kernel then has several 1 MiB requests out at
// once, so both cores work on a sequential read; 1 MiB gave half the
// throughput of a cold base, 16 MiB no more than 4.
inline constexpr unsigned kDefaultReadaheadKb = 4096;

// Sets the read-ahead of the mount at `mountpoint` (absolute) to `kb` KiB;
// `kb` 0 leaves it alone.  This must run once the mount answers requests, so
// it is called from init and does its work on a detached thread of its own,
// returning at once.
void RaiseReadahead(const std::string& mountpoint, unsigned kb);

}  // namespace cbt::cbtfs

#endif  // CBT_FUSE_READAHEAD_H_
