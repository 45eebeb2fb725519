// SPDX-License-Identifier: Apache-2.0
#include "image/composed_image.h"

#include "testutil.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

using namespace cbt;
using namespace cbt::repo;
using cbt::image::ComposedImage;
using cbt::testing::Block;
using cbt::testing::TempDir;

namespace {

constexpr uint64_t kSize = 6 * kBlockSize - 512;  // last block partial

struct Chain {
  TempDir dir;
  std::shared_ptr<const ComposedImage> img;
  std::vector<std::string> paths;
};

// base: blocks 0,1,2,5 = Block(0..); overlay 1: block 1 new, block 2 zero;
// overlay 2: block 0 new.
std::unique_ptr<Chain> MakeChain() {
  auto c = std::make_unique<Chain>();
  std::vector<std::shared_ptr<const DiskFile>> files;
  auto add = [&](const std::string& name, FileKind kind, auto fill) {
    std::string path = c->dir.Sub(name);
    files.push_back(cbt::testing::WriteDiskFile(path, kind, kSize, fill));
    c->paths.push_back(path);
  };
  add("base", FileKind::kBase, [](DiskFileWriter& w) {
    for (uint64_t b : {0, 1, 2, 5})
      REQUIRE(w.AddData(b, Block(static_cast<uint32_t>(b)).data()).ok());
  });
  add("o1", FileKind::kOverlay, [](DiskFileWriter& w) {
    REQUIRE(w.AddData(1, Block(101).data()).ok());
    REQUIRE(w.AddZero(2).ok());
  });
  add("o2", FileKind::kOverlay,
      [](DiskFileWriter& w) { REQUIRE(w.AddData(0, Block(200).data()).ok()); });
  auto img = ComposedImage::FromChain(files, {"p0", "p1", "p2"}, {"vm", "p2", "vdi"});
  REQUIRE(img.ok());
  c->img = *img;
  return c;
}

std::vector<char> Expected() {
  std::vector<char> e(6 * kBlockSize, 0);
  auto put = [&](uint64_t b, const std::vector<char>& data) {
    std::memcpy(e.data() + b * kBlockSize, data.data(), kBlockSize);
  };
  put(0, Block(200));
  put(1, Block(101));
  put(5, Block(5));
  e.resize(kSize);
  return e;
}

}  // namespace

TEST_CASE("ComposedImage: newest file wins and zero entries hide parent data", "[image]") {
  auto c = MakeChain();
  REQUIRE(c->img->size() == kSize);
  std::vector<char> got(kSize + 1000, 'x');
  auto n = c->img->Read(got.data(), got.size(), 0);
  REQUIRE(n.ok());
  CHECK(*n == kSize);
  got.resize(kSize);
  CHECK(got == Expected());
}

TEST_CASE("ComposedImage: unaligned reads match the composed bytes", "[image]") {
  auto c = MakeChain();
  auto expected = Expected();
  for (uint64_t off : {uint64_t{1}, uint64_t{kBlockSize - 7}, uint64_t{3 * kBlockSize + 11},
                       uint64_t{kSize - 300}}) {
    std::vector<char> got(100000);
    auto n = c->img->Read(got.data(), got.size(), off);
    REQUIRE(n.ok());
    CHECK(*n == std::min<uint64_t>(got.size(), kSize - off));
    CHECK(std::memcmp(got.data(), expected.data() + off, *n) == 0);
  }
}

TEST_CASE("ComposedImage: SEEK_DATA and SEEK_HOLE follow the block map", "[image]") {
  auto c = MakeChain();
  CHECK(c->img->NextData(0) == 0);
  CHECK(c->img->NextHole(0) == 2 * kBlockSize);  // block 2 became zero
  CHECK(c->img->NextData(2 * kBlockSize) == 5 * kBlockSize);
  CHECK(c->img->NextHole(5 * kBlockSize) == kSize);
  CHECK(c->img->DataBlockCount() == 3);
}

TEST_CASE("ComposedImage: a corrupted block fails only reads that touch it", "[image]") {
  auto c = MakeChain();
  // Corrupt block 1's data in overlay 1 (its only data block, at 4096).
  int fd = ::open(c->paths[1].c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  char x = 0x7f;
  REQUIRE(::pwrite(fd, &x, 1, kHeaderSize + 99) == 1);
  ::close(fd);
  std::vector<char> buf(kBlockSize);
  auto bad = c->img->Read(buf.data(), 10, kBlockSize + 5);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().IsCorruption());
  CHECK(bad.status().message().find("offset 65536") != std::string::npos);
  CHECK(bad.status().message().find("point p1") != std::string::npos);
  CHECK(c->img->Read(buf.data(), kBlockSize, 0).ok());
  CHECK(c->img->Read(buf.data(), kBlockSize, 5 * kBlockSize).ok());
}

TEST_CASE("ComposedImage: a chain not starting with a base is refused", "[image]") {
  auto c = MakeChain();
  auto o = DiskFile::Open(c->paths[1]);
  REQUIRE(o.ok());
  auto img = ComposedImage::FromChain({*o}, {"p1"}, {"vm", "p1", "vdi"});
  CHECK(img.status().IsCorruption());
}
