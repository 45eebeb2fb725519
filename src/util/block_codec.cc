// SPDX-License-Identifier: Apache-2.0
#include "util/block_codec.h"

#include "util/blake3.h"

#include <openssl/sha.h>
#include <zstd.h>

#include <array>
#include <cmath>
#include <memory>
#include <vector>

namespace cbt {

namespace {

struct CCtxFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxFree {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

// One context per thread: creating one costs more than compressing a block.
ZSTD_CCtx* ThreadCCtx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxFree> ctx(ZSTD_createCCtx());
  return ctx.get();
}

ZSTD_DCtx* ThreadDCtx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxFree> ctx(ZSTD_createDCtx());
  return ctx.get();
}

constexpr size_t kSpans = 32;
constexpr size_t kSpan = 128;               // bytes taken from each span
constexpr size_t kSample = kSpans * kSpan;  // 4 KiB in all, spread over the block

// c * log2(c) for every count a byte value can reach in a sample: a table
// look-up costs a fraction of the 256 log2 calls per block it replaces.
const std::array<double, kSample + 1>& CountLogCount() {
  static const std::array<double, kSample + 1> table = [] {
    std::array<double, kSample + 1> t{};
    for (size_t c = 2; c <= kSample; ++c)
      t[c] = static_cast<double>(c) * std::log2(static_cast<double>(c));
    return t;
  }();
  return table;
}

// Whether a sample of `raw` looks like random bytes: compressed files
// (packages, media, archives), encrypted volumes, and the random data of
// the benchmarks.  zstd takes about 20 us to give up on such a 64 KiB
// block; the sample takes about 2 us.  Its byte entropy is what Huffman
// coding could gain: above 7.9 bits a byte that is under 1.5%, which the
// frame's own overhead eats.  What the sample cannot see is a long repeat
// of random bytes inside one block (a 32 KiB random run stored twice),
// whose savings are then lost: rare on real disks, never a wrong byte.
bool LooksIncompressible(std::string_view raw) {
  if (raw.size() < kSample * 4) return false;
  const size_t step = raw.size() / kSpans;
  uint32_t hist[256] = {};
  for (size_t s = 0; s < kSpans; ++s) {
    const auto* p = reinterpret_cast<const unsigned char*>(raw.data() + s * step);
    for (size_t i = 0; i < kSpan; ++i) ++hist[p[i]];
  }
  // Entropy in bits per byte: log2(n) - sum(c log2 c) / n.
  const auto& clogc = CountLogCount();
  double sum = 0;
  for (uint32_t c : hist) sum += clogc[c];
  return std::log2(static_cast<double>(kSample)) - sum / static_cast<double>(kSample) > 7.9;
}

}  // namespace

ContentKey KeyOf(std::string_view data, KeyAlgorithm algorithm) {
  if (algorithm == KeyAlgorithm::kBlake3) return Blake3(data.data(), data.size());
  ContentKey key;
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), key.data());
  return key;
}

std::string KeyHex(const ContentKey& key) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(64);
  for (uint8_t b : key) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

bool Compress(std::string_view raw, int level, std::string* out) {
  out->clear();
  if (raw.empty() || LooksIncompressible(raw)) return false;
  ZSTD_CCtx* ctx = ThreadCCtx();
  if (ctx == nullptr) return false;
  // A frame one byte shorter than the block is the most that is kept; the
  // bound stops zstd early instead of letting it write a longer frame.  The
  // frame goes to a per-thread buffer first: sizing *out to the bound would
  // clear 64 KiB per block, most of a backup's blocks for nothing (those
  // that do not shrink).
  thread_local std::vector<char> buf;
  if (buf.size() < raw.size() - 1) buf.resize(raw.size() - 1);
  ZSTD_CCtx_reset(ctx, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(ctx, ZSTD_c_compressionLevel, level);
  // The raw size is in the frame, so a reader can check it before writing.
  ZSTD_CCtx_setParameter(ctx, ZSTD_c_contentSizeFlag, 1);
  ZSTD_CCtx_setParameter(ctx, ZSTD_c_checksumFlag, 0);
  const size_t n = ZSTD_compress2(ctx, buf.data(), raw.size() - 1, raw.data(), raw.size());
  if (ZSTD_isError(n) || n >= raw.size()) return false;
  out->assign(buf.data(), n);
  return true;
}

Status Decompress(std::string_view frame, char* out, size_t raw_size) {
  const unsigned long long size = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size != raw_size) {
    return Status::Corruption("compressed block: not a zstd frame of " + std::to_string(raw_size) +
                              " bytes");
  }
  ZSTD_DCtx* ctx = ThreadDCtx();
  if (ctx == nullptr) return Status::IoError("compressed block: out of memory");
  const size_t n = ZSTD_decompressDCtx(ctx, out, raw_size, frame.data(), frame.size());
  if (ZSTD_isError(n)) {
    return Status::Corruption(std::string("compressed block: ") + ZSTD_getErrorName(n));
  }
  if (n != raw_size) return Status::Corruption("compressed block: short frame");
  return Status::Ok();
}

}  // namespace cbt
