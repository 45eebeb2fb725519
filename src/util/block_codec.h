// SPDX-License-Identifier: Apache-2.0
//
// The per-block primitives of a deduplicating, compressing store: a block's
// content key (BLAKE3, or SHA-256 in repositories that began with it;
// collision-resistant, so equal keys mean equal blocks) and zstd
// compression of one block with a known raw size.
//
// Compression is per block so that any block of any point reads with one
// pread and one decompression, whatever the chain depth.  A block that
// does not shrink is stored raw by the caller (Compress says so).
//
// Thread-safety: reentrant; each thread keeps its own zstd contexts.
#ifndef CBT_UTIL_BLOCK_CODEC_H_
#define CBT_UTIL_BLOCK_CODEC_H_

#include "util/status.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace cbt {

using ContentKey = std::array<uint8_t, 32>;

// How a repository keys its blocks (docs/FORMAT.md, "content key").
enum class KeyAlgorithm {
  kBlake3,  // of every repository this build creates or converts
  kSha256,  // of repositories of version 3 created before BLAKE3 keys
};

// The content key of `data`: its BLAKE3 or SHA-256 hash.
ContentKey KeyOf(std::string_view data, KeyAlgorithm algorithm = KeyAlgorithm::kBlake3);
// Lower-case hex of a key (64 characters).
std::string KeyHex(const ContentKey& key);

// zstd levels accepted by Compress (zstd's own range, negative = faster).
inline constexpr int kMinZstdLevel = -7;
inline constexpr int kMaxZstdLevel = 19;

// Compresses `raw` at `level` into *out and returns true, or returns false
// (and leaves *out empty) when the frame would not be smaller than `raw`,
// in which case the block is worth storing as it is.  A block whose
// sampled bytes look random is not tried at all (also false).
// REQUIRES: kMinZstdLevel <= level <= kMaxZstdLevel.
bool Compress(std::string_view raw, int level, std::string* out);

// Decompresses the zstd frame `frame` into exactly `raw_size` bytes at
// `out`.  Corruption (never a crash or a write past `raw_size`) when the
// frame is malformed, truncated, or holds another size.
Status Decompress(std::string_view frame, char* out, size_t raw_size);

}  // namespace cbt

#endif  // CBT_UTIL_BLOCK_CODEC_H_
