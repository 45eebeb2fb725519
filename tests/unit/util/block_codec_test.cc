// SPDX-License-Identifier: Apache-2.0
//
// Block compression and content keys: round trips at every level, blocks
// that do not shrink are left raw, and damaged frames are Corruption
// without writing past the block.
#include "util/block_codec.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

using namespace cbt;

namespace {

std::string TextBlock() {
  std::string s;
  while (s.size() < 65536) s += "GNU C Library: shared object " + std::to_string(s.size()) + "\n";
  s.resize(65536);
  return s;
}

std::string RandomBlock(uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(65536, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

}  // namespace

TEST_CASE("codec: compressible blocks round-trip at every level") {
  const std::string raw = TextBlock();
  for (int level : {kMinZstdLevel, -1, 1, 3, 9, kMaxZstdLevel}) {
    INFO(level);
    std::string frame;
    REQUIRE(Compress(raw, level, &frame));
    CHECK(frame.size() < raw.size() / 4);
    std::string back(raw.size(), '\0');
    REQUIRE(Decompress(frame, back.data(), back.size()).ok());
    CHECK(back == raw);
  }
  std::string zeros(65536, '\0'), frame;
  REQUIRE(Compress(zeros, 3, &frame));
  CHECK(frame.size() < 100);
}

TEST_CASE("codec: a block that does not shrink is stored raw") {
  std::string frame = "left over";
  CHECK_FALSE(Compress(RandomBlock(1), 3, &frame));
  CHECK(frame.empty());
  CHECK_FALSE(Compress("", 3, &frame));
}

TEST_CASE("codec: only blocks that look random skip zstd") {
  std::string frame;
  // Random bytes in half the block: the sample sees the zeros.
  std::string half = RandomBlock(3);
  std::fill(half.begin() + 32768, half.end(), '\0');
  CHECK(Compress(half, 3, &frame));
  CHECK(frame.size() < 34000);
  // Six bits of entropy a byte (base64 of random data) still shrink.
  static const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string b64 = RandomBlock(4);
  for (auto& c : b64) c = kB64[static_cast<unsigned char>(c) % 64];
  CHECK(Compress(b64, 3, &frame));
  CHECK(frame.size() < 52000);
  // Machine code: this test's own program, block by block.
  std::ifstream exe("/proc/self/exe", std::ios::binary);
  std::string code((std::istreambuf_iterator<char>(exe)), std::istreambuf_iterator<char>());
  REQUIRE(code.size() >= 4 * 65536);
  for (size_t off = 0; off + 65536 <= 4 * 65536; off += 65536) {
    CHECK(Compress(std::string_view(code).substr(off, 65536), 3, &frame));
  }
  CHECK_FALSE(Compress(RandomBlock(5), 3, &frame));
}

TEST_CASE("codec: damaged frames are Corruption, never an overrun") {
  const std::string raw = TextBlock();
  std::string frame;
  REQUIRE(Compress(raw, 3, &frame));
  // A guard after the block: nothing may be written there.
  std::string out(raw.size() + 16, 'G');
  auto bad = [&](const std::string& f, size_t size) {
    Status st = Decompress(f, out.data(), size);
    CHECK(out.substr(raw.size()) == std::string(16, 'G'));
    return st.code() == Status::Code::kCorruption;
  };
  CHECK(bad(frame.substr(0, frame.size() / 2), raw.size()));  // truncated
  CHECK(bad(frame, raw.size() - 1));                          // another size
  CHECK(bad(frame + frame, raw.size()));                      // two frames
  CHECK(bad(RandomBlock(2).substr(0, 300), raw.size()));      // not zstd
  CHECK(bad("", raw.size()));
  std::string flipped = frame;
  flipped[flipped.size() / 2] ^= 0x55;
  // A flipped bit may still decode (no frame checksum: the store checks
  // the block's own checksum); it must not overrun either way.
  (void)bad(flipped, raw.size());
  REQUIRE(Decompress(frame, out.data(), raw.size()).ok());
  CHECK(out.substr(0, raw.size()) == raw);
}

TEST_CASE("codec: content keys are BLAKE3, or SHA-256 where a repository began with it") {
  CHECK(KeyHex(KeyOf("")) == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
  CHECK(KeyHex(KeyOf("abc")) == "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");
  CHECK(KeyHex(KeyOf("", KeyAlgorithm::kSha256)) ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(KeyHex(KeyOf("abc", KeyAlgorithm::kSha256)) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(KeyOf(RandomBlock(3)) != KeyOf(RandomBlock(4)));
  CHECK(KeyOf(RandomBlock(3)) != KeyOf(RandomBlock(3), KeyAlgorithm::kSha256));
}
