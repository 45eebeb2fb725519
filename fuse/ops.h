// SPDX-License-Identifier: Apache-2.0
//
// The FUSE operations of a cbtfs mount (getattr, readlink, readdir, open,
// read, lseek, release, opendir, statfs, init) over the tree of tree.h.  The
// handlers are thin: all reading, composition and checksum checking is
// ComposedImage's.
//
// Disk images are read with O_DIRECT (ComposedImage::ReadDirect): the kernel
// already caches what cbtfs returns, so caching the repository's files as
// well would hold every byte twice, and cost a page allocation and more
// bookkeeping for each 4 KiB.  A request's blocks, from however many files
// of the chain, are read all at once; the kernel's readahead of the mounted
// file keeps several requests in flight.  Where O_DIRECT is refused or not
// known to work (DiskFile::direct_fd), images are read through the page
// cache with a read-ahead window of their own.
//
// Thread model: libfuse's multi-threaded loop calls the handlers from several
// threads; the only shared mutable state is the Filesystem's caches, guarded
// by its mutex.
// Errors: handlers return -errno as libfuse expects, and no exception leaves
// them (it would abort the daemon and leave a dead mount): out of memory
// becomes ENOMEM, anything else EIO, with a line in syslog and on stderr.
#ifndef CBT_FUSE_OPS_H_
#define CBT_FUSE_OPS_H_

#include "tree.h"

#include <fuse.h>

#include <string>

namespace cbt::cbtfs {

// What fuse_main's private_data must point to: the state the handlers share.
// It must live until fuse_main returns.
struct Mount {
  Filesystem fs;
  std::string mountpoint;  // absolute; init raises its read-ahead
  unsigned readahead_kb;   // wanted for the mount; 0 keeps the kernel's default
};

// The handlers, for fuse_main with a Mount as private_data.
fuse_operations Operations();

}  // namespace cbt::cbtfs

#endif  // CBT_FUSE_OPS_H_
