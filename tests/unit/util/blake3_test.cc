// SPDX-License-Identifier: Apache-2.0
#include "util/blake3.h"

#include "testutil.h"

#include "util/file.h"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace cbt {
namespace {

using testing::TempDir;

std::string Hex(const Blake3Digest& d) {
  static const char kHex[] = "0123456789abcdef";
  std::string s;
  for (uint8_t b : d) {
    s += kHex[b >> 4];
    s += kHex[b & 15];
  }
  return s;
}

// The input of the specification's test vectors: byte i is i mod 251.
std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i % 251);
  return s;
}

// The paths this CPU runs; a missing one is said, not failed: it depends
// on the machine, not on the code.
std::vector<Blake3Path> Paths() {
  std::vector<Blake3Path> paths = {Blake3Path::kPortable};
  for (Blake3Path p : {Blake3Path::kAvx2, Blake3Path::kAvx512}) {
    if (Blake3Supports(p)) {
      paths.push_back(p);
    } else {
      WARN("this CPU lacks BLAKE3 path " << static_cast<int>(p) << ": not tested");
    }
  }
  return paths;
}

TEST_CASE("BLAKE3: the hashes b3sum prints, on every path") {
  // From b3sum 1.2.0 (Debian 12), over the inputs of the specification's
  // test vectors: one block, one chunk, and trees of every shape up to 100
  // chunks (odd nodes carried up at several levels).
  const std::vector<std::pair<size_t, std::string>> known = {
      {0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
      {1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"},
      {63, "e9bc37a594daad83be9470df7f7b3798297c3d834ce80ba85d6e207627b7db7b"},
      {64, "4eed7141ea4a5cd4b788606bd23f46e212af9cacebacdc7d1f4c6dc7f2511b98"},
      {65, "de1e5fa0be70df6d2be8fffd0e99ceaa8eb6e8c93a63f2d8d1c30ecb6b263dee"},
      {1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"},
      {1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"},
      {1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"},
      {2048, "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a"},
      {2049, "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030"},
      {3072, "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2"},
      {3073, "7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3"},
      {4096, "015094013f57a5277b59d8475c0501042c0b642e531b0a1c8f58d2163229e969"},
      {5120, "9cadc15fed8b5d854562b26a9536d9707cadeda9b143978f319ab34230535833"},
      {7168, "61da957ec2499a95d6b8023e2b0e604ec7f6b50e80a9678b89d2628e99ada77a"},
      {8192, "aae792484c8efe4f19e2ca7d371d8c467ffb10748d8a5a1ae579948f718a2a63"},
      {8193, "bab6c09cb8ce8cf459261398d2e7aef35700bf488116ceb94a36d0f5f1b7bc3b"},
      {9216, "e5ef79624045ef3e98fd23342e61d7eb965997b32928f9de591cd0d465a223fb"},
      {11264, "8448f6e03270277a031f5a437dffe87e1a6e9101b55a58aac71bda082061ad27"},
      {13312, "9d343994f4564183c0c53fc05651ab4afd91e86592a3e3d63e2a70cc898dd386"},
      {16384, "f875d6646de28985646f34ee13be9a576fd515f76b5b0a26bb324735041ddde4"},
      {31744, "62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47"},
      {65535, "de7d0f4c044c56f56e0c5f7ab247be9491c4520e8688f0f0d25406f46fdfbd03"},
      {65536, "68d647e619a930e7b1082f74f334b0c65a315725569bdc123f0ee11881717bfe"},
      {65537, "7c99f9840a73dfcb6e5bfe4ff6d1558acab7e015640790c26411818bdbe17eca"},
      {102400, "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085"},
  };
  const std::vector<Blake3Path> paths = Paths();
  for (const auto& [n, hex] : known) {
    const std::string in = Pattern(n);
    INFO("length " << n);
    CHECK(Hex(Blake3(in.data(), in.size())) == hex);
    for (Blake3Path p : paths) {
      INFO("path " << static_cast<int>(p));
      CHECK(Hex(Blake3With(p, in.data(), in.size())) == hex);
    }
  }
}

TEST_CASE("BLAKE3: the vector paths and the portable one agree on any length") {
  const std::vector<Blake3Path> paths = Paths();
  std::mt19937 rng(5);
  std::string data(300 * 1024, '\0');
  for (auto& c : data) c = static_cast<char>(rng());
  for (int i = 0; i < 300; ++i) {
    const size_t n = std::uniform_int_distribution<size_t>(0, data.size())(rng);
    const size_t off = std::uniform_int_distribution<size_t>(0, data.size() - n)(rng);
    INFO("length " << n << " at " << off);
    const Blake3Digest portable = Blake3With(Blake3Path::kPortable, data.data() + off, n);
    CHECK(Blake3(data.data() + off, n) == portable);
    for (Blake3Path p : paths) {
      INFO("path " << static_cast<int>(p));
      CHECK(Blake3With(p, data.data() + off, n) == portable);
    }
  }
}

TEST_CASE("BLAKE3: random inputs hash as b3sum hashes them") {
  // The real tool, when it is installed (the CI installs it).
  if (std::system("command -v b3sum >/dev/null 2>&1") != 0) {
    // As the integration tests do: a missing peer skips, unless the run is
    // strict (CI), where it fails.
    const char* strict = std::getenv("CBT_TEST_STRICT");
    REQUIRE_FALSE((strict != nullptr && std::string(strict) == "1"));
    WARN("b3sum is not installed: compared with the known hashes only");
    return;
  }
  TempDir dir;
  std::mt19937 rng(9);
  for (size_t n :
       {size_t{65536}, size_t{1}, size_t{777}, size_t{70000}, size_t{1 << 20}, size_t{123457}}) {
    std::string in(n, '\0');
    for (auto& c : in) c = static_cast<char>(rng());
    const std::string path = dir.Sub("in");
    ::unlink(path.c_str());
    REQUIRE(WriteFileAtomic(path, in).ok());
    FILE* p = ::popen(("b3sum --no-names " + path).c_str(), "r");
    REQUIRE(p != nullptr);
    char line[128] = {};
    const bool got = std::fgets(line, sizeof line, p) != nullptr;
    ::pclose(p);
    REQUIRE(got);
    INFO("length " << n);
    CHECK(Hex(Blake3(in.data(), in.size())) == std::string(line, 64));
  }
}

}  // namespace
}  // namespace cbt
