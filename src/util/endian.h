// SPDX-License-Identifier: Apache-2.0
//
// Fixed-width integers in byte buffers, independent of the host's byte
// order: little-endian for the repository's disk files and the partition
// tables and LVM metadata read from images, big-endian for the network and
// VHD formats.  `p` points at raw bytes (char or unsigned char) holding at
// least the integer's width; no alignment is needed.
#ifndef CBT_UTIL_ENDIAN_H_
#define CBT_UTIL_ENDIAN_H_

#include <cstdint>

namespace cbt {

namespace endian_internal {

template <typename T>
inline T LoadLe(const void* p) {
  const auto* b = static_cast<const unsigned char*>(p);
  T v = 0;
  for (int i = sizeof(T) - 1; i >= 0; --i) v = static_cast<T>((v << 8) | b[i]);
  return v;
}

template <typename T>
inline void StoreLe(void* p, T v) {
  auto* b = static_cast<unsigned char*>(p);
  for (unsigned i = 0; i < sizeof(T); ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
}

template <typename T>
inline T LoadBe(const void* p) {
  const auto* b = static_cast<const unsigned char*>(p);
  T v = 0;
  for (unsigned i = 0; i < sizeof(T); ++i) v = static_cast<T>((v << 8) | b[i]);
  return v;
}

template <typename T>
inline void StoreBe(void* p, T v) {
  auto* b = static_cast<unsigned char*>(p);
  for (unsigned i = 0; i < sizeof(T); ++i) {
    b[i] = static_cast<unsigned char>(v >> (8 * (sizeof(T) - 1 - i)));
  }
}

}  // namespace endian_internal

inline uint16_t LoadLe16(const void* p) { return endian_internal::LoadLe<uint16_t>(p); }
inline uint32_t LoadLe32(const void* p) { return endian_internal::LoadLe<uint32_t>(p); }
inline uint64_t LoadLe64(const void* p) { return endian_internal::LoadLe<uint64_t>(p); }
inline void StoreLe16(void* p, uint16_t v) { endian_internal::StoreLe(p, v); }
inline void StoreLe32(void* p, uint32_t v) { endian_internal::StoreLe(p, v); }
inline void StoreLe64(void* p, uint64_t v) { endian_internal::StoreLe(p, v); }

inline uint16_t LoadBe16(const void* p) { return endian_internal::LoadBe<uint16_t>(p); }
inline uint32_t LoadBe32(const void* p) { return endian_internal::LoadBe<uint32_t>(p); }
inline uint64_t LoadBe64(const void* p) { return endian_internal::LoadBe<uint64_t>(p); }
inline void StoreBe16(void* p, uint16_t v) { endian_internal::StoreBe(p, v); }
inline void StoreBe32(void* p, uint32_t v) { endian_internal::StoreBe(p, v); }
inline void StoreBe64(void* p, uint64_t v) { endian_internal::StoreBe(p, v); }

}  // namespace cbt

#endif  // CBT_UTIL_ENDIAN_H_
