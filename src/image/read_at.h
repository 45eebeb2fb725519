// SPDX-License-Identifier: Apache-2.0
//
// How the volume parsers (image/partitions.h, image/lvm.h) read a device
// they do not trust: through a ReadAt callback, so that one parser serves a
// composed disk, a slice of one, a test's buffer and a fuzzer's input, and
// always after checking the range against the device's size (ReadInside).
// Also the little-endian field loads that both on-disk formats need.
//
// Thread-safety: pure functions.
#ifndef CBT_IMAGE_READ_AT_H_
#define CBT_IMAGE_READ_AT_H_

#include "util/endian.h"
#include "util/status.h"

#include <cstddef>
#include <cstdint>
#include <functional>

namespace cbt::image {

// Reads `len` bytes at `off` of one device; Status on failure or past the end.
using ReadAt = std::function<Status(uint64_t off, void* buf, size_t len)>;

// The sector size the parsers assume: XenServer VDIs have 512-byte sectors.
inline constexpr uint64_t kSectorSize = 512;

// Reads [off, off+len) of a device of `size` bytes.  False, without calling
// `read`, if that range is not inside the device; false if `read` fails.
inline bool ReadInside(const ReadAt& read, uint64_t size, uint64_t off, void* buf, size_t len) {
  if (off > size || len > size - off) return false;
  return read(off, buf, len).ok();
}

// Little-endian loads from bytes the caller has checked are there.
using cbt::LoadLe32;
using cbt::LoadLe64;

}  // namespace cbt::image

#endif  // CBT_IMAGE_READ_AT_H_
