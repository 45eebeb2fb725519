// SPDX-License-Identifier: Apache-2.0
//
// BLAKE3 (the hash mode, 32-byte output), for the content keys of stored
// blocks.
//
// Why not SHA-256: keying every block is most of what a full backup adds to
// a plain copy.  SHA-256 runs at about 1.6 GB/s even with the CPU's SHA
// instructions; BLAKE3 hashes the 1 KiB chunks of a block independently, so
// eight of them go through one pass of 256-bit vector instructions (AVX2),
// and a 64 KiB block hashes several times faster.  It is as strong for this
// use: a 256-bit output, collision resistance of 128 bits.
//
// The result is the standard BLAKE3 hash of the bytes (what `b3sum` prints);
// the vector path is taken when the CPU has AVX2 and gives the same bytes
// as the portable one.
//
// Thread-safety: pure functions.
#ifndef CBT_UTIL_BLAKE3_H_
#define CBT_UTIL_BLAKE3_H_

#include <array>
#include <cstddef>
#include <cstdint>

namespace cbt {

using Blake3Digest = std::array<uint8_t, 32>;

// The BLAKE3 hash of `len` bytes at `data`.
Blake3Digest Blake3(const void* data, size_t len);

// For tests: hashes with the portable code only, whatever the CPU has.
Blake3Digest Blake3Portable(const void* data, size_t len);

// Whether Blake3 takes the AVX2 path on this CPU.
bool Blake3UsesAvx2();

}  // namespace cbt

#endif  // CBT_UTIL_BLAKE3_H_
