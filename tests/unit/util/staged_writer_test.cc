// SPDX-License-Identifier: Apache-2.0
#include "util/staged_writer.h"

#include "testutil.h"

#include "util/file.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <random>
#include <string>

namespace cbt {
namespace {

using testing::TempDir;

// Writes `total` bytes of pseudo-random content from offset 4096 in
// pieces of random sizes (one byte to a little more than a staging
// buffer) and returns them; the file must then hold them.
std::string WriteRandom(StagedWriter& w, size_t total, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string all;
  while (all.size() < total) {
    const size_t n = std::uniform_int_distribution<size_t>(1, StagedWriter::kStageSize + 5000)(rng);
    std::string piece(n, '\0');
    for (auto& c : piece) c = static_cast<char>(rng());
    REQUIRE(w.Write(piece.data(), piece.size()).ok());
    all += piece;
  }
  return all;
}

void CheckFile(const std::string& path, const std::string& want) {
  auto got = ReadFile(path);
  REQUIRE(got.ok());
  REQUIRE(got->size() == 4096 + want.size());
  CHECK(got->substr(0, 4096) == std::string(4096, 'h'));
  CHECK(got->substr(4096) == want);
}

void Run(const std::string& path) {
  auto fd = CreateExclusive(path);
  REQUIRE(fd.ok());
  REQUIRE(PwriteAll(fd->get(), std::string(4096, 'h').data(), 4096, 0, path).ok());
  StagedWriter w(fd->get(), path, 4096);
  w.EnableDirect();
  const std::string data = WriteRandom(w, 21 << 20, 7);
  CHECK(w.offset() == 4096 + data.size());
  REQUIRE(w.Finish().ok());
  CHECK_FALSE(w.direct());
  // After Finish, writes go through the page cache, at any offset.
  REQUIRE(w.Write("tail", 4).ok());
  CheckFile(path, data + "tail");
}

}  // namespace

TEST_CASE("StagedWriter: writes of any size and alignment read back in order", "[util]") {
  TempDir dir;
  Run(dir.Sub("f"));
}

TEST_CASE("StagedWriter: a filesystem without O_DIRECT gets the same bytes", "[util]") {
  // tmpfs refused O_DIRECT up to Linux 6.5; either way the bytes must match.
  if (!IsDirectory("/dev/shm")) return;
  char tmpl[] = "/dev/shm/cbt-staged-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string path = std::string(tmpl) + "/f";
  Run(path);
  (void)RemoveTree(tmpl);
}

TEST_CASE("StagedWriter: an unaligned start stays buffered", "[util]") {
  TempDir dir;
  auto fd = CreateExclusive(dir.Sub("f"));
  REQUIRE(fd.ok());
  StagedWriter w(fd->get(), dir.Sub("f"), 100);
  CHECK_FALSE(w.EnableDirect());
  REQUIRE(w.Write("abc", 3).ok());
  REQUIRE(w.Finish().ok());
  auto got = ReadFile(dir.Sub("f"));
  REQUIRE(got.ok());
  CHECK(got->substr(100) == "abc");
}

TEST_CASE("StagedWriter: a failed write behind is returned, and later writes fail", "[util]") {
  TempDir dir;
  const std::string path = dir.Sub("f");
  REQUIRE(CreateExclusive(path).ok());
  // Read-only: every write fails, whichever thread makes it.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(fd.get() >= 0);
  StagedWriter w(fd.get(), path, 0);
  w.EnableDirect();
  const std::string piece(1 << 20, 'x');
  Status st;
  for (int i = 0; i < 40 && st.ok(); ++i) st = w.Write(piece.data(), piece.size());
  Status fin = w.Finish();
  CHECK_FALSE(fin.ok());
  CHECK_FALSE((st.ok() && fin.ok()));
  CHECK(fin.message().find(path) != std::string::npos);
}

}  // namespace cbt
