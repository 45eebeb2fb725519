// SPDX-License-Identifier: Apache-2.0
//
// Writing a disk of a new point from a raw image file: either every block
// that differs from the parent point (a full compare), or only the blocks a
// changed-block list names (as Changed Block Tracking reports them).
//
// Thread-safety: no shared state.
#ifndef CBT_IMAGE_IMAGE_IMPORT_H_
#define CBT_IMAGE_IMAGE_IMPORT_H_

#include "image/composed_image.h"
#include "repo/disk_file.h"
#include "util/status.h"

#include <cstdint>
#include <string>
#include <vector>

namespace cbt::image {

// Writes into `w` the blocks of the raw image `fd` (`size` bytes, named
// `path` in messages) that differ from `parent`, or every non-zero block
// when `parent` is null.  A block that differs and is all zeros becomes a
// ZERO entry.  Holes of a sparse image are skipped without reading when
// there is no parent.
Status WriteDifferences(int fd, const std::string& path, uint64_t size, const ComposedImage* parent,
                        repo::DiskFileWriter* w);

// Writes into `w` the blocks numbered in `blocks` (sorted or not, no
// duplicates), read from `fd`: all-zero ones as ZERO entries, others as DATA.
// InvalidArgument if a block lies beyond the image.
Status WriteListedBlocks(int fd, const std::string& path, uint64_t size,
                         const std::vector<uint64_t>& blocks, repo::DiskFileWriter* w);

// Parses a changed-block list: one 64 KiB block number per line, or a range
// "FIRST-LAST" (inclusive); blank lines and lines starting with '#' are
// ignored.  Returns the blocks sorted and without duplicates.
Result<std::vector<uint64_t>> ParseBlockList(const std::string& text, const std::string& what);

}  // namespace cbt::image

#endif  // CBT_IMAGE_IMAGE_IMPORT_H_
