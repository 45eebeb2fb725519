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
// The result is the standard BLAKE3 hash of the bytes (what `b3sum` prints)
// on every path: sixteen chunks at once with AVX-512, eight with AVX2, one
// at a time otherwise, whichever is the widest the CPU has.
//
// Thread-safety: pure functions.
#ifndef CBT_UTIL_BLAKE3_H_
#define CBT_UTIL_BLAKE3_H_

#include <array>
#include <cstddef>
#include <cstdint>

namespace cbt {

using Blake3Digest = std::array<uint8_t, 32>;

enum class Blake3Path { kPortable, kAvx2, kAvx512 };

// The BLAKE3 hash of `len` bytes at `data`, on Blake3BestPath().
Blake3Digest Blake3(const void* data, size_t len);

// The widest path this CPU runs.
Blake3Path Blake3BestPath();

// Whether this CPU runs `path` (kPortable: always).
bool Blake3Supports(Blake3Path path);

// For tests: Blake3 on `path`, or on kPortable if this CPU lacks `path`.
Blake3Digest Blake3With(Blake3Path path, const void* data, size_t len);

}  // namespace cbt

#endif  // CBT_UTIL_BLAKE3_H_
