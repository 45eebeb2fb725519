// SPDX-License-Identifier: Apache-2.0
#include "image/composed_image.h"

#include "testutil.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

using namespace cbt;
using namespace cbt::repo;
using cbt::image::ComposedImage;
using namespace cbt::testing;

namespace {

constexpr uint64_t kSize = 6 * kBlockSize - 512;  // last block partial

// base: blocks 0,1,2,5 = Block(0..); overlay 1: block 1 new, block 2 zero;
// overlay 2: block 0 new.
std::unique_ptr<TempChain> MakeChain() {
  auto c = std::make_unique<TempChain>();
  c->Add("base", FileKind::kBase, kSize, [](DiskFileWriter& w) {
    for (uint64_t b : {0, 1, 2, 5})
      REQUIRE(w.AddData(b, Block(static_cast<uint32_t>(b)).data()).ok());
  });
  c->Add("o1", FileKind::kOverlay, kSize, [](DiskFileWriter& w) {
    REQUIRE(w.AddData(1, Block(101).data()).ok());
    REQUIRE(w.AddZero(2).ok());
  });
  c->Add("o2", FileKind::kOverlay, kSize,
         [](DiskFileWriter& w) { REQUIRE(w.AddData(0, Block(200).data()).ok()); });
  c->Compose();
  return c;
}

// Damages block 1's data in overlay 1 (its only data block, at 4096).
void CorruptBlock1(const TempChain& c) {
  int fd = ::open(c.paths[1].c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  char x = 0x7f;
  REQUIRE(::pwrite(fd, &x, 1, kHeaderSize + 99) == 1);
  ::close(fd);
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
  // Blocks 2-4 are holes (block 2 a zero block); 5 is data; past the end.
  CHECK(c->img->AllHoles(2 * kBlockSize, 3 * kBlockSize));
  CHECK_FALSE(c->img->AllHoles(2 * kBlockSize, 3 * kBlockSize + 1));
  CHECK_FALSE(c->img->AllHoles(2 * kBlockSize - 1, 2));
  CHECK(c->img->AllHoles(kSize, 4096));
  CHECK(c->img->AllHoles(0, 0));
}

TEST_CASE("ComposedImage: a corrupted block fails only reads that touch it", "[image]") {
  auto c = MakeChain();
  CorruptBlock1(*c);
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

namespace {

// A buffer aligned as ReadDirect wants it, `pad` bytes past an aligned start.
struct AlignedBuf {
  explicit AlignedBuf(size_t n, size_t pad = 0)
      : mem(static_cast<char*>(
            std::aligned_alloc(ComposedImage::kDirectAlign, (n + pad + 4095) / 4096 * 4096))),
        data(mem + pad) {
    std::memset(mem, 'x', n + pad);
  }
  ~AlignedBuf() { std::free(mem); }
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  char* mem;
  char* data;
};

}  // namespace

TEST_CASE("ComposedImage: ReadDirect returns the bytes Read returns", "[image]") {
  auto c = MakeChain();
  auto expected = Expected();
  // Where the test's filesystem refuses O_DIRECT this checks the fallback.
  INFO("O_DIRECT available: " << c->img->CanReadDirect());
  struct Case {
    uint64_t off, len;
    size_t pad;
  };
  for (Case k : {Case{0, 6 * kBlockSize, 0}, Case{kBlockSize, 2 * kBlockSize, 0},
                 Case{4096, 3 * kBlockSize, 0}, Case{kBlockSize - 7, 100000, 0},
                 Case{0, 6 * kBlockSize, 512}, Case{5 * kBlockSize, kBlockSize, 0},
                 Case{kSize - 300, 4096, 0}, Case{kSize, 4096, 0}}) {
    CAPTURE(k.off, k.len, k.pad);
    AlignedBuf buf(k.len, k.pad);
    auto n = c->img->ReadDirect(buf.data, k.len, k.off);
    REQUIRE(n.ok());
    const uint64_t want = k.off >= kSize ? 0 : std::min<uint64_t>(k.len, kSize - k.off);
    CHECK(*n == want);
    CHECK(std::memcmp(buf.data, expected.data() + std::min<uint64_t>(k.off, kSize), want) == 0);
    // Bytes past the end of the disk are left alone.
    if (want < k.len) CHECK(buf.data[want] == 'x');
  }
}

TEST_CASE("ComposedImage: ReadDirect gathers more runs than one batch of reads", "[image]") {
  // Every other block comes from the overlay: 200 blocks make 200 runs.
  TempDir dir;
  const uint64_t blocks = 200;
  const uint64_t size = blocks * kBlockSize;
  std::vector<std::shared_ptr<const DiskFile>> files;
  files.push_back(
      cbt::testing::WriteDiskFile(dir.Sub("base"), FileKind::kBase, size, [&](DiskFileWriter& w) {
        for (uint64_t b = 0; b < blocks; ++b)
          REQUIRE(w.AddData(b, Block(static_cast<uint32_t>(b)).data()).ok());
      }));
  files.push_back(
      cbt::testing::WriteDiskFile(dir.Sub("o1"), FileKind::kOverlay, size, [&](DiskFileWriter& w) {
        for (uint64_t b = 0; b < blocks; b += 2)
          REQUIRE(w.AddData(b, Block(static_cast<uint32_t>(1000 + b)).data()).ok());
      }));
  auto img = ComposedImage::FromChain(files, {"p0", "p1"}, {"vm", "p1", "vdi"});
  REQUIRE(img.ok());
  for (const auto& f : files) {
    REQUIRE(::fdatasync(f->fd()) == 0);
    REQUIRE(::posix_fadvise(f->fd(), 0, 0, POSIX_FADV_DONTNEED) == 0);
  }
  AlignedBuf buf(size);
  auto n = (*img)->ReadDirect(buf.data, size, 0);
  REQUIRE(n.ok());
  CHECK(*n == size);
  if ((*img)->CanReadDirect()) {
    // Every run went to the device directly: no data page of either file
    // entered the page cache.
    for (const auto& f : files) {
      const uint64_t data_end = kHeaderSize + f->entries().size() * kBlockSize;
      void* map = ::mmap(nullptr, data_end, PROT_READ, MAP_SHARED, f->fd(), 0);
      REQUIRE(map != MAP_FAILED);
      std::vector<unsigned char> resident(data_end / 4096);
      REQUIRE(::mincore(map, data_end, resident.data()) == 0);
      ::munmap(map, data_end);
      CHECK(std::count_if(resident.begin() + kHeaderSize / 4096, resident.end(),
                          [](unsigned char r) { return r & 1; }) == 0);
    }
  }
  for (uint64_t b = 0; b < blocks; ++b) {
    CAPTURE(b);
    auto want = Block(static_cast<uint32_t>(b % 2 == 0 ? 1000 + b : b));
    CHECK(std::memcmp(buf.data + b * kBlockSize, want.data(), kBlockSize) == 0);
  }
}

TEST_CASE("ComposedImage: ReadDirect fails a corrupted block and reads the others", "[image]") {
  auto c = MakeChain();
  CorruptBlock1(*c);
  AlignedBuf buf(6 * kBlockSize);
  auto bad = c->img->ReadDirect(buf.data, 2 * kBlockSize, 0);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().IsCorruption());
  CHECK(bad.status().message().find("offset 65536") != std::string::npos);
  CHECK(bad.status().message().find("point p1") != std::string::npos);
  CHECK(c->img->ReadDirect(buf.data, kBlockSize, 0).ok());
  CHECK(c->img->ReadDirect(buf.data, 4 * kBlockSize, 2 * kBlockSize).ok());
}

TEST_CASE("ComposedImage: where O_DIRECT is not known to work, ReadDirect uses the page cache",
          "[image]") {
  struct statfs st;
  if (::statfs("/dev/shm", &st) != 0 || st.f_type != TMPFS_MAGIC) {
    WARN("no tmpfs at /dev/shm; not checked");
    return;
  }
  auto c = [] {
    ScopedEnv tmpdir("TMPDIR", "/dev/shm");
    return MakeChain();
  }();
  REQUIRE(c->dir.path().rfind("/dev/shm/", 0) == 0);
  CHECK_FALSE(c->img->CanReadDirect());
  AlignedBuf buf(6 * kBlockSize);
  auto n = c->img->ReadDirect(buf.data, 6 * kBlockSize, 0);
  REQUIRE(n.ok());
  CHECK(*n == kSize);
  CHECK(std::memcmp(buf.data, Expected().data(), kSize) == 0);
}
