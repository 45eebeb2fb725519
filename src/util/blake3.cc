// SPDX-License-Identifier: Apache-2.0
//
// Written from the BLAKE3 specification (Aumasson, Neves, O'Connor,
// Wilcox-O'Hearn, 2020): its compression function, chunk chaining and
// binary tree hashing, in the hash mode only (no key, no derivation, 32
// bytes of output).
#include "util/blake3.h"

#include "util/endian.h"

#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace cbt {

namespace {

constexpr size_t kBlockLen = 64;
constexpr size_t kChunkLen = 1024;
constexpr size_t kBlocksPerChunk = kChunkLen / kBlockLen;

constexpr uint32_t kChunkStart = 1;
constexpr uint32_t kChunkEnd = 2;
constexpr uint32_t kParent = 4;
constexpr uint32_t kRoot = 8;

constexpr uint32_t kIv[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
                             0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19};

// Which message word each of the 16 positions of each of the 7 rounds
// takes: the words of round r+1 are those of round r permuted.
struct Schedule {
  uint8_t word[7][16];
};

constexpr Schedule MakeSchedule() {
  constexpr uint8_t kPermutation[16] = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};
  Schedule s{};
  for (int i = 0; i < 16; ++i) s.word[0][i] = static_cast<uint8_t>(i);
  for (int r = 1; r < 7; ++r) {
    for (int i = 0; i < 16; ++i) s.word[r][i] = s.word[r - 1][kPermutation[i]];
  }
  return s;
}

constexpr Schedule kSchedule = MakeSchedule();

inline void StoreCv(uint8_t* out, const uint32_t cv[8]) {
  for (int i = 0; i < 8; ++i) StoreLe32(out + 4 * i, cv[i]);
}

inline uint32_t Rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

inline void G(uint32_t* v, int a, int b, int c, int d, uint32_t x, uint32_t y) {
  v[a] = v[a] + v[b] + x;
  v[d] = Rotr(v[d] ^ v[a], 16);
  v[c] = v[c] + v[d];
  v[b] = Rotr(v[b] ^ v[c], 12);
  v[a] = v[a] + v[b] + y;
  v[d] = Rotr(v[d] ^ v[a], 8);
  v[c] = v[c] + v[d];
  v[b] = Rotr(v[b] ^ v[c], 7);
}

// Chains one 64-byte block (`len` of its bytes are input, the rest zeros)
// into `cv`.
void Compress(uint32_t cv[8], const uint8_t* block, uint32_t len, uint64_t counter,
              uint32_t flags) {
  uint32_t m[16];
  for (int i = 0; i < 16; ++i) m[i] = LoadLe32(block + 4 * i);
  uint32_t v[16] = {cv[0],
                    cv[1],
                    cv[2],
                    cv[3],
                    cv[4],
                    cv[5],
                    cv[6],
                    cv[7],
                    kIv[0],
                    kIv[1],
                    kIv[2],
                    kIv[3],
                    static_cast<uint32_t>(counter),
                    static_cast<uint32_t>(counter >> 32),
                    len,
                    flags};
  for (int r = 0; r < 7; ++r) {
    const uint8_t* s = kSchedule.word[r];
    G(v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
    G(v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
    G(v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
    G(v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
    G(v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
    G(v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
    G(v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
    G(v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
  }
  for (int i = 0; i < 8; ++i) cv[i] = v[i] ^ v[i + 8];
}

// The chaining value of chunk number `counter`, `len` bytes (1 to 1024; 0
// only for the empty input).  `extra` is kRoot for a chunk that is the
// whole input: its last block then gives the hash.
void ChunkCv(const uint8_t* in, size_t len, uint64_t counter, uint32_t extra, uint8_t* out) {
  uint32_t cv[8];
  std::memcpy(cv, kIv, sizeof cv);
  const size_t blocks = len == 0 ? 1 : (len + kBlockLen - 1) / kBlockLen;
  for (size_t b = 0; b < blocks; ++b) {
    const uint32_t flags = (b == 0 ? kChunkStart : 0) | (b + 1 == blocks ? kChunkEnd | extra : 0);
    const size_t n = len - b * kBlockLen < kBlockLen ? len - b * kBlockLen : kBlockLen;
    if (n == kBlockLen) {
      Compress(cv, in + b * kBlockLen, kBlockLen, counter, flags);
    } else {
      uint8_t block[kBlockLen] = {};
      if (n > 0) std::memcpy(block, in + b * kBlockLen, n);
      Compress(cv, block, static_cast<uint32_t>(n), counter, flags);
    }
  }
  StoreCv(out, cv);
}

// A parent node's chaining value from its children's, the 64 bytes at
// `in`; `out` may overlap `in`.
void ParentCv(const uint8_t* in, uint32_t extra, uint8_t* out) {
  uint32_t cv[8];
  std::memcpy(cv, kIv, sizeof cv);
  Compress(cv, in, kBlockLen, 0, kParent | extra);
  StoreCv(out, cv);
}

// For each of the `n` inputs, chains its `blocks` whole blocks from the IV
// (input i with counter `counter` + i if `increment`, else `counter`; the
// first block with `start` added to `flags`, the last with `end`) and
// writes its chaining value to out + 32 i.  Input i is read before output
// i is written, so output i may overlap input i / 2 and those before it.
void HashManyPortable(const uint8_t* const* in, size_t n, size_t blocks, uint64_t counter,
                      bool increment, uint32_t flags, uint32_t start, uint32_t end, uint8_t* out) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t cv[8];
    std::memcpy(cv, kIv, sizeof cv);
    for (size_t b = 0; b < blocks; ++b) {
      const uint32_t f = flags | (b == 0 ? start : 0) | (b + 1 == blocks ? end : 0);
      Compress(cv, in[i] + b * kBlockLen, kBlockLen, counter + (increment ? i : 0), f);
    }
    StoreCv(out + 32 * i, cv);
  }
}

#if defined(__x86_64__)
#define CBT_AVX2 __attribute__((target("avx2")))

// The seven rounds over the sixteen state vectors v0..v15 and the message
// vectors m[], with the CBT_G of the vector width in use.  A macro, not a
// function over an array: GCC kept an array of the state partly in memory
// (2.5 GB/s against 2.8 GB/s on 64 KiB blocks in cache).
#define CBT_ROUNDS()                                    \
  _Pragma("GCC unroll 7") for (int r = 0; r < 7; ++r) { \
    const uint8_t* s = kSchedule.word[r];               \
    CBT_G(v0, v4, v8, v12, m[s[0]], m[s[1]]);           \
    CBT_G(v1, v5, v9, v13, m[s[2]], m[s[3]]);           \
    CBT_G(v2, v6, v10, v14, m[s[4]], m[s[5]]);          \
    CBT_G(v3, v7, v11, v15, m[s[6]], m[s[7]]);          \
    CBT_G(v0, v5, v10, v15, m[s[8]], m[s[9]]);          \
    CBT_G(v1, v6, v11, v12, m[s[10]], m[s[11]]);        \
    CBT_G(v2, v7, v8, v13, m[s[12]], m[s[13]]);         \
    CBT_G(v3, v4, v9, v14, m[s[14]], m[s[15]]);         \
  }

// Eight inputs at once: lane i of every vector belongs to input i.

CBT_AVX2 inline __m256i Rotr16(__m256i x) {
  return _mm256_shuffle_epi8(
      x, _mm256_set_epi8(13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2, 13, 12, 15, 14, 9, 8,
                         11, 10, 5, 4, 7, 6, 1, 0, 3, 2));
}

CBT_AVX2 inline __m256i Rotr8(__m256i x) {
  return _mm256_shuffle_epi8(
      x, _mm256_set_epi8(12, 15, 14, 13, 8, 11, 10, 9, 4, 7, 6, 5, 0, 3, 2, 1, 12, 15, 14, 13, 8,
                         11, 10, 9, 4, 7, 6, 5, 0, 3, 2, 1));
}

CBT_AVX2 inline __m256i Rotr12(__m256i x) {
  return _mm256_or_si256(_mm256_srli_epi32(x, 12), _mm256_slli_epi32(x, 20));
}

CBT_AVX2 inline __m256i Rotr7(__m256i x) {
  return _mm256_or_si256(_mm256_srli_epi32(x, 7), _mm256_slli_epi32(x, 25));
}

// Transposes the 8x8 matrix of 32-bit words whose rows are r[0..7].
CBT_AVX2 inline void Transpose8(__m256i* r) {
  const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]);
  const __m256i t1 = _mm256_unpackhi_epi32(r[0], r[1]);
  const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]);
  const __m256i t3 = _mm256_unpackhi_epi32(r[2], r[3]);
  const __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]);
  const __m256i t5 = _mm256_unpackhi_epi32(r[4], r[5]);
  const __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]);
  const __m256i t7 = _mm256_unpackhi_epi32(r[6], r[7]);
  const __m256i u0 = _mm256_unpacklo_epi64(t0, t2);
  const __m256i u1 = _mm256_unpackhi_epi64(t0, t2);
  const __m256i u2 = _mm256_unpacklo_epi64(t1, t3);
  const __m256i u3 = _mm256_unpackhi_epi64(t1, t3);
  const __m256i u4 = _mm256_unpacklo_epi64(t4, t6);
  const __m256i u5 = _mm256_unpackhi_epi64(t4, t6);
  const __m256i u6 = _mm256_unpacklo_epi64(t5, t7);
  const __m256i u7 = _mm256_unpackhi_epi64(t5, t7);
  r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
  r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
  r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
  r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
  r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
  r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
  r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
  r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

// HashManyPortable for exactly eight inputs.  All of a block's inputs are
// loaded before anything is written, so the same overlaps are allowed.
CBT_AVX2 void HashMany8(const uint8_t* const* in, size_t blocks, uint64_t counter, bool increment,
                        uint32_t flags, uint32_t start, uint32_t end, uint8_t* out) {
  __m256i h[8];
  for (int i = 0; i < 8; ++i) h[i] = _mm256_set1_epi32(static_cast<int>(kIv[i]));
  alignas(32) uint32_t lo[8];
  alignas(32) uint32_t hi[8];
  for (int i = 0; i < 8; ++i) {
    const uint64_t c = counter + (increment ? static_cast<uint64_t>(i) : 0);
    lo[i] = static_cast<uint32_t>(c);
    hi[i] = static_cast<uint32_t>(c >> 32);
  }
  const __m256i counter_lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo));
  const __m256i counter_hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi));
  for (size_t b = 0; b < blocks; ++b) {
    __m256i m[16];
    for (int i = 0; i < 8; ++i) {
      const uint8_t* p = in[i] + b * kBlockLen;
      m[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
      m[i + 8] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32));
    }
    Transpose8(m);
    Transpose8(m + 8);
    const uint32_t f = flags | (b == 0 ? start : 0) | (b + 1 == blocks ? end : 0);
    __m256i v0 = h[0], v1 = h[1], v2 = h[2], v3 = h[3], v4 = h[4], v5 = h[5], v6 = h[6], v7 = h[7];
    __m256i v8 = _mm256_set1_epi32(static_cast<int>(kIv[0]));
    __m256i v9 = _mm256_set1_epi32(static_cast<int>(kIv[1]));
    __m256i v10 = _mm256_set1_epi32(static_cast<int>(kIv[2]));
    __m256i v11 = _mm256_set1_epi32(static_cast<int>(kIv[3]));
    __m256i v12 = counter_lo, v13 = counter_hi;
    __m256i v14 = _mm256_set1_epi32(static_cast<int>(kBlockLen));
    __m256i v15 = _mm256_set1_epi32(static_cast<int>(f));
#define CBT_G(a, b, c, d, x, y)                    \
  a = _mm256_add_epi32(_mm256_add_epi32(a, b), x); \
  d = Rotr16(_mm256_xor_si256(d, a));              \
  c = _mm256_add_epi32(c, d);                      \
  b = Rotr12(_mm256_xor_si256(b, c));              \
  a = _mm256_add_epi32(_mm256_add_epi32(a, b), y); \
  d = Rotr8(_mm256_xor_si256(d, a));               \
  c = _mm256_add_epi32(c, d);                      \
  b = Rotr7(_mm256_xor_si256(b, c))
    CBT_ROUNDS();
#undef CBT_G
    h[0] = _mm256_xor_si256(v0, v8);
    h[1] = _mm256_xor_si256(v1, v9);
    h[2] = _mm256_xor_si256(v2, v10);
    h[3] = _mm256_xor_si256(v3, v11);
    h[4] = _mm256_xor_si256(v4, v12);
    h[5] = _mm256_xor_si256(v5, v13);
    h[6] = _mm256_xor_si256(v6, v14);
    h[7] = _mm256_xor_si256(v7, v15);
  }
  Transpose8(h);
  for (int i = 0; i < 8; ++i) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * i), h[i]);
  }
}

#define CBT_AVX512 __attribute__((target("avx512f")))

// The unmasked forms of these intrinsics pass GCC 12 an "undefined" vector
// that its -Wuninitialized reports; with every lane selected, the masked
// forms compute the same and take a defined one.
CBT_AVX512 inline __m512i UnpackLo32(__m512i a, __m512i b) {
  return _mm512_mask_unpacklo_epi32(a, 0xFFFF, a, b);
}
CBT_AVX512 inline __m512i UnpackHi32(__m512i a, __m512i b) {
  return _mm512_mask_unpackhi_epi32(a, 0xFFFF, a, b);
}
CBT_AVX512 inline __m512i UnpackLo64(__m512i a, __m512i b) {
  return _mm512_mask_unpacklo_epi64(a, 0xFF, a, b);
}
CBT_AVX512 inline __m512i UnpackHi64(__m512i a, __m512i b) {
  return _mm512_mask_unpackhi_epi64(a, 0xFF, a, b);
}
template <int kBits>
CBT_AVX512 inline __m512i Rotr(__m512i x) {
  return _mm512_mask_ror_epi32(x, 0xFFFF, x, kBits);
}
template <int kImm>
CBT_AVX512 inline __m512i Shuffle128(__m512i a, __m512i b) {
  return _mm512_mask_shuffle_i32x4(a, 0xFFFF, a, b, kImm);
}

// Transposes the 16x16 matrix of 32-bit words whose rows are r[0..15].
CBT_AVX512 inline void Transpose16(__m512i* r) {
  __m512i t[16];
  for (int k = 0; k < 16; k += 2) {
    t[k] = UnpackLo32(r[k], r[k + 1]);
    t[k + 1] = UnpackHi32(r[k], r[k + 1]);
  }
  // u[4 g + j], 128-bit lane l: word 4 l + j of rows 4 g to 4 g + 3.
  __m512i u[16];
  for (int g = 0; g < 16; g += 4) {
    u[g] = UnpackLo64(t[g], t[g + 2]);
    u[g + 1] = UnpackHi64(t[g], t[g + 2]);
    u[g + 2] = UnpackLo64(t[g + 1], t[g + 3]);
    u[g + 3] = UnpackHi64(t[g + 1], t[g + 3]);
  }
  // Row 4 l + j gathers lane l of u[j], u[4 + j], u[8 + j], u[12 + j].
  for (int j = 0; j < 4; ++j) {
    const __m512i x0 = Shuffle128<0x44>(u[j], u[4 + j]);
    const __m512i x1 = Shuffle128<0xEE>(u[j], u[4 + j]);
    const __m512i y0 = Shuffle128<0x44>(u[8 + j], u[12 + j]);
    const __m512i y1 = Shuffle128<0xEE>(u[8 + j], u[12 + j]);
    r[j] = Shuffle128<0x88>(x0, y0);
    r[4 + j] = Shuffle128<0xDD>(x0, y0);
    r[8 + j] = Shuffle128<0x88>(x1, y1);
    r[12 + j] = Shuffle128<0xDD>(x1, y1);
  }
}

// HashMany8 for sixteen inputs, with AVX-512's rotate instruction in place
// of AVX2's shuffles and shift pairs.
CBT_AVX512 void HashMany16(const uint8_t* const* in, size_t blocks, uint64_t counter,
                           bool increment, uint32_t flags, uint32_t start, uint32_t end,
                           uint8_t* out) {
  __m512i h[8];
  for (int i = 0; i < 8; ++i) h[i] = _mm512_set1_epi32(static_cast<int>(kIv[i]));
  alignas(64) uint32_t lo[16];
  alignas(64) uint32_t hi[16];
  for (int i = 0; i < 16; ++i) {
    const uint64_t c = counter + (increment ? static_cast<uint64_t>(i) : 0);
    lo[i] = static_cast<uint32_t>(c);
    hi[i] = static_cast<uint32_t>(c >> 32);
  }
  const __m512i counter_lo = _mm512_load_si512(lo);
  const __m512i counter_hi = _mm512_load_si512(hi);
  for (size_t b = 0; b < blocks; ++b) {
    __m512i m[16];
    for (int i = 0; i < 16; ++i) m[i] = _mm512_loadu_si512(in[i] + b * kBlockLen);
    Transpose16(m);
    const uint32_t f = flags | (b == 0 ? start : 0) | (b + 1 == blocks ? end : 0);
    __m512i v0 = h[0], v1 = h[1], v2 = h[2], v3 = h[3], v4 = h[4], v5 = h[5], v6 = h[6], v7 = h[7];
    __m512i v8 = _mm512_set1_epi32(static_cast<int>(kIv[0]));
    __m512i v9 = _mm512_set1_epi32(static_cast<int>(kIv[1]));
    __m512i v10 = _mm512_set1_epi32(static_cast<int>(kIv[2]));
    __m512i v11 = _mm512_set1_epi32(static_cast<int>(kIv[3]));
    __m512i v12 = counter_lo, v13 = counter_hi;
    __m512i v14 = _mm512_set1_epi32(static_cast<int>(kBlockLen));
    __m512i v15 = _mm512_set1_epi32(static_cast<int>(f));
#define CBT_G(a, b, c, d, x, y)                    \
  a = _mm512_add_epi32(_mm512_add_epi32(a, b), x); \
  d = Rotr<16>(_mm512_xor_si512(d, a));            \
  c = _mm512_add_epi32(c, d);                      \
  b = Rotr<12>(_mm512_xor_si512(b, c));            \
  a = _mm512_add_epi32(_mm512_add_epi32(a, b), y); \
  d = Rotr<8>(_mm512_xor_si512(d, a));             \
  c = _mm512_add_epi32(c, d);                      \
  b = Rotr<7>(_mm512_xor_si512(b, c))
    CBT_ROUNDS();
#undef CBT_G
    h[0] = _mm512_xor_si512(v0, v8);
    h[1] = _mm512_xor_si512(v1, v9);
    h[2] = _mm512_xor_si512(v2, v10);
    h[3] = _mm512_xor_si512(v3, v11);
    h[4] = _mm512_xor_si512(v4, v12);
    h[5] = _mm512_xor_si512(v5, v13);
    h[6] = _mm512_xor_si512(v6, v14);
    h[7] = _mm512_xor_si512(v7, v15);
  }
  // Word k of input i's chaining value is lane i of h[k]; done once per
  // sixteen inputs, so plain stores suffice.
  alignas(64) uint32_t words[8][16];
  for (int k = 0; k < 8; ++k) _mm512_store_si512(words[k], h[k]);
  for (int i = 0; i < 16; ++i) {
    for (int k = 0; k < 8; ++k) StoreLe32(out + 32 * i + 4 * k, words[k][i]);
  }
}
#undef CBT_ROUNDS

bool CpuHas(Blake3Path path) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  static const bool avx512 = avx2 && __builtin_cpu_supports("avx512f");
  switch (path) {
    case Blake3Path::kPortable:
      return true;
    case Blake3Path::kAvx2:
      return avx2;
    case Blake3Path::kAvx512:
      return avx512;
  }
  return false;
}
#else
bool CpuHas(Blake3Path path) { return path == Blake3Path::kPortable; }
#endif

// `n` at most 16.
void HashMany(Blake3Path path, const uint8_t* const* in, size_t n, size_t blocks, uint64_t counter,
              bool increment, uint32_t flags, uint32_t start, uint32_t end, uint8_t* out) {
  size_t i = 0;
#if defined(__x86_64__)
  if (path == Blake3Path::kAvx512 && n == 16) {
    HashMany16(in, blocks, counter, increment, flags, start, end, out);
    return;
  }
  if (path != Blake3Path::kPortable) {
    for (; i + 8 <= n; i += 8) {
      HashMany8(in + i, blocks, counter + (increment ? i : 0), increment, flags, start, end,
                out + 32 * i);
    }
  }
#endif
  HashManyPortable(in + i, n - i, blocks, counter + (increment ? i : 0), increment, flags, start,
                   end, out + 32 * i);
}

Blake3Digest Hash(const uint8_t* data, size_t len, Blake3Path path) {
  Blake3Digest digest;
  if (len <= kChunkLen) {
    ChunkCv(data, len, 0, kRoot, digest.data());
    return digest;
  }
  const size_t chunks = (len + kChunkLen - 1) / kChunkLen;
  const size_t whole = len / kChunkLen;
  // The chaining values of the chunks, then of each level of the tree in
  // place.  A 64 KiB block has 64 chunks: no allocation.
  uint8_t local[64 * 32];
  std::vector<uint8_t> heap;
  uint8_t* cvs = local;
  if (chunks > 64) {
    heap.resize(chunks * 32);
    cvs = heap.data();
  }
  const uint8_t* ptrs[16];
  for (size_t i = 0; i < whole; i += 16) {
    const size_t n = whole - i < 16 ? whole - i : 16;
    for (size_t k = 0; k < n; ++k) ptrs[k] = data + (i + k) * kChunkLen;
    HashMany(path, ptrs, n, kBlocksPerChunk, i, true, 0, kChunkStart, kChunkEnd, cvs + 32 * i);
  }
  if (whole < chunks)
    ChunkCv(data + whole * kChunkLen, len - whole * kChunkLen, whole, 0, cvs + 32 * whole);
  // Pairing each level's nodes from the left, a last odd node going up
  // as it is, builds the tree the specification defines: every left
  // subtree is a whole power of two of chunks.
  size_t count = chunks;
  while (count > 2) {
    const size_t pairs = count / 2;
    for (size_t j = 0; j < pairs; j += 16) {
      const size_t n = pairs - j < 16 ? pairs - j : 16;
      for (size_t k = 0; k < n; ++k) ptrs[k] = cvs + 64 * (j + k);
      HashMany(path, ptrs, n, 1, 0, false, kParent, 0, 0, cvs + 32 * j);
    }
    if (count % 2 == 1) std::memmove(cvs + 32 * pairs, cvs + 32 * (count - 1), 32);
    count = pairs + count % 2;
  }
  ParentCv(cvs, kRoot, digest.data());
  return digest;
}

}  // namespace

Blake3Path Blake3BestPath() {
  static const Blake3Path best = CpuHas(Blake3Path::kAvx512) ? Blake3Path::kAvx512
                                 : CpuHas(Blake3Path::kAvx2) ? Blake3Path::kAvx2
                                                             : Blake3Path::kPortable;
  return best;
}

bool Blake3Supports(Blake3Path path) { return CpuHas(path); }

Blake3Digest Blake3(const void* data, size_t len) {
  return Hash(static_cast<const uint8_t*>(data), len, Blake3BestPath());
}

Blake3Digest Blake3With(Blake3Path path, const void* data, size_t len) {
  return Hash(static_cast<const uint8_t*>(data), len, CpuHas(path) ? path : Blake3Path::kPortable);
}

}  // namespace cbt
