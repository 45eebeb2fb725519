// SPDX-License-Identifier: Apache-2.0
//
// The CBT bitmap arrives base64-encoded from VDI.list_changed_blocks.  The
// first 8 input bytes choose the disk size; the rest is the base64 text.
// Decoded extents must be sorted, disjoint, block-aligned, inside the disk,
// and cover exactly the set bits.
#include "util/base64.h"
#include "xapi/cbt_bitmap.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t disk_size = 0;
  std::memcpy(&disk_size, data, 8);
  disk_size %= uint64_t{1} << 40;  // up to 1 TiB: the extent list stays small
  const std::string text(reinterpret_cast<const char*>(data + 8), size - 8);
  auto bitmap = cbt::DecodeBase64(text);
  if (!bitmap.ok()) return 0;
  auto extents = cbt::xapi::ExtentsFromBitmap(*bitmap, disk_size);
  constexpr uint64_t kBlock = 65536;
  uint64_t covered = 0, prev_end = 0;
  for (const auto& e : extents) {
    if (e.length == 0 || e.offset % kBlock != 0 || e.offset < prev_end ||
        e.offset + e.length > disk_size) {
      std::abort();
    }
    prev_end = e.offset + e.length;
    covered += (e.length + kBlock - 1) / kBlock;
  }
  uint64_t set = 0;
  const uint64_t blocks = (disk_size + kBlock - 1) / kBlock;
  for (uint64_t b = 0; b < blocks && b / 8 < bitmap->size(); ++b) {
    if ((static_cast<unsigned char>((*bitmap)[b / 8]) >> (7 - b % 8)) & 1) ++set;
  }
  if (covered != set) std::abort();
  return 0;
}
