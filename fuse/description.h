// SPDX-License-Identifier: Apache-2.0
//
// The text of a point's point.txt: the VM, the point, its source, every disk
// (kept or left out, and why), and the partitions, LVs and notes the volume
// scan found.  Every name that comes from the server or from a guest is
// escaped (util/text.h), so that printing the file cannot drive a terminal.
//
// Thread-safety: as Filesystem (tree.h); reads it and keeps nothing.
#ifndef CBT_FUSE_DESCRIPTION_H_
#define CBT_FUSE_DESCRIPTION_H_

#include "tree.h"

#include <string>

namespace cbt::cbtfs {

// The point.txt of the point `n` lies in, or "" when its manifest cannot be
// read.  The text names the parent point, which a delete changes, so it is
// made afresh for each use.
std::string PointDescription(const Filesystem& fs, const Node& n);

}  // namespace cbt::cbtfs

#endif  // CBT_FUSE_DESCRIPTION_H_
