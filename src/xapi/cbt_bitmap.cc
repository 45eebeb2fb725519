// SPDX-License-Identifier: Apache-2.0
//
// Reading list_changed_blocks' bitmap: decoding, and bit b of byte b / 8,
// counted from the most significant bit, for block b.
#include "xapi/cbt_bitmap.h"

#include "util/base64.h"

#include <algorithm>

namespace cbt::xapi {

namespace {

bool BitSet(const std::string& bitmap, uint64_t block) {
  return (static_cast<unsigned char>(bitmap[block / 8]) & (0x80 >> (block % 8))) != 0;
}

}  // namespace

Result<std::string> DecodeCbtBitmap(const std::string& base64) {
  auto bits = DecodeBase64(base64);
  if (!bits.ok()) return Status::Corruption("changed-block bitmap is not valid base64");
  return bits;
}

std::vector<bool> BlocksFromBitmap(const std::string& bitmap, uint64_t disk_size) {
  const uint64_t nblocks = CbtBlockCount(disk_size);
  std::vector<bool> out(nblocks);
  for (uint64_t b = 0; b < nblocks && b / 8 < bitmap.size(); ++b) out[b] = BitSet(bitmap, b);
  return out;
}

std::vector<ChangedExtent> ExtentsFromBitmap(const std::string& bitmap, uint64_t disk_size) {
  std::vector<ChangedExtent> out;
  const uint64_t nblocks = CbtBlockCount(disk_size);
  for (uint64_t b = 0; b < nblocks && b / 8 < bitmap.size(); ++b) {
    if (!BitSet(bitmap, b)) continue;
    const uint64_t off = b * kCbtBlockSize;
    const uint64_t len = std::min(kCbtBlockSize, disk_size - off);
    if (!out.empty() && out.back().offset + out.back().length == off) {
      out.back().length += len;
    } else {
      out.push_back({off, len});
    }
  }
  return out;
}

}  // namespace cbt::xapi
