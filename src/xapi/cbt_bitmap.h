// SPDX-License-Identifier: Apache-2.0
//
// What VDI.list_changed_blocks answers, and the one place that reads it: a
// base64 string of a bitmap with one bit per 64 KiB block of the disk, the
// most significant bit of each byte first, a set bit meaning the block was
// written between the two VDIs.  Backup turns it into extents to read over
// NBD, restore into the blocks to send back.  The 64 KiB is the server's
// granularity; the repository's block (repo::kBlockSize) is the same size,
// which is what lets one bit stand for one stored block, and the callers
// check that at compile time.
//
// Thread-safety: pure functions.
#ifndef CBT_XAPI_CBT_BITMAP_H_
#define CBT_XAPI_CBT_BITMAP_H_

#include "util/status.h"

#include <cstdint>
#include <string>
#include <vector>

namespace cbt::xapi {

// Bytes of the disk one bit of the bitmap covers.
inline constexpr uint64_t kCbtBlockSize = 64 * 1024;

// A byte range of the disk.
struct ChangedExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// Blocks of a disk of `disk_size` bytes (the last one may be short).
inline uint64_t CbtBlockCount(uint64_t disk_size) {
  return (disk_size + kCbtBlockSize - 1) / kCbtBlockSize;
}

// Length of the decoded bitmap the server sends for a disk of `disk_size`
// bytes: one bit per block, rounded up to whole bytes.
inline uint64_t CbtBitmapBytes(uint64_t disk_size) { return (CbtBlockCount(disk_size) + 7) / 8; }

// Decodes list_changed_blocks' answer.  Corruption("changed-block bitmap is
// not valid base64") if it is not base64 (util/base64.h).  The length is
// not checked: compare it with CbtBitmapBytes.
Result<std::string> DecodeCbtBitmap(const std::string& base64);

// Per block of a disk of `disk_size` bytes, whether its bit is set.  Bits
// past the end of `bitmap` read as clear.
std::vector<bool> BlocksFromBitmap(const std::string& bitmap, uint64_t disk_size);

// The set blocks as extents, increasing, consecutive blocks merged into
// one extent, the last block clipped to `disk_size`.  Bits past the end of
// `bitmap` read as clear, bits past the disk are ignored.
std::vector<ChangedExtent> ExtentsFromBitmap(const std::string& bitmap, uint64_t disk_size);

}  // namespace cbt::xapi

#endif  // CBT_XAPI_CBT_BITMAP_H_
