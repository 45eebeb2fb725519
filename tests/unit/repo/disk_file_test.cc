// SPDX-License-Identifier: Apache-2.0
#include "repo/disk_file.h"

#include "testutil.h"

#include "util/file.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

using namespace cbt;
using namespace cbt::repo;
using cbt::testing::Block;
using cbt::testing::TempDir;

namespace {

std::string WriteSample(const TempDir& dir, FileKind kind = FileKind::kOverlay) {
  std::string path = dir.Sub("d.cbd");
  auto w = DiskFileWriter::Create(path, kind, 10 * kBlockSize + 100);
  REQUIRE(w.ok());
  // Out of order on purpose: the index must come out sorted.
  REQUIRE((*w)->AddData(7, Block(7).data()).ok());
  REQUIRE((*w)->AddData(2, Block(2).data()).ok());
  REQUIRE((*w)->AddZero(5).ok());
  REQUIRE((*w)->AddData(10, Block(10).data()).ok());
  REQUIRE((*w)->Finish().ok());
  CHECK((*w)->data_blocks() == 3);
  CHECK((*w)->zero_blocks() == 1);
  return path;
}

void Patch(const std::string& path, uint64_t off, const void* data, size_t len) {
  int fd = ::open(path.c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, data, len, static_cast<off_t>(off)) == static_cast<ssize_t>(len));
  ::close(fd);
}

}  // namespace

TEST_CASE("DiskFile: round trip keeps blocks, zero entries and order", "[repo]") {
  TempDir dir;
  auto f = DiskFile::Open(WriteSample(dir));
  REQUIRE(f.ok());
  const auto& e = (*f)->entries();
  REQUIRE(e.size() == 4);
  CHECK(e[0].block == 2);
  CHECK(e[1].block == 5);
  CHECK(e[1].kind == EntryKind::kZero);
  CHECK(e[2].block == 7);
  CHECK(e[3].block == 10);
  CHECK((*f)->virtual_size() == 10 * kBlockSize + 100);
  CHECK((*f)->kind() == FileKind::kOverlay);
  std::vector<char> buf(kBlockSize);
  REQUIRE((*f)->ReadBlock(e[2], buf.data()).ok());
  CHECK(buf == Block(7));
  // Three data blocks, a header and a four-entry index: nothing else.
  CHECK((*f)->file_size() == kHeaderSize + 3 * kBlockSize + 4 * kIndexEntrySize);
}

TEST_CASE("DiskFile: a flipped data byte is reported with its disk offset", "[repo]") {
  TempDir dir;
  std::string path = WriteSample(dir);
  auto f = DiskFile::Open(path);
  REQUIRE(f.ok());
  const IndexEntry e = (*f)->entries()[2];
  char x = 0x5a;
  Patch(path, e.offset + 1234, &x, 1);
  std::vector<char> buf(kBlockSize);
  Status s = (*f)->ReadBlock(e, buf.data());
  CHECK(s.IsCorruption());
  CHECK(s.message().find(std::to_string(7 * kBlockSize)) != std::string::npos);
  // Other blocks still read.
  CHECK((*f)->ReadBlock((*f)->entries()[0], buf.data()).ok());
}

TEST_CASE("DiskFile: truncated files are refused", "[repo]") {
  TempDir dir;
  std::string path = WriteSample(dir);
  auto size = ::truncate(path.c_str(), kHeaderSize + kBlockSize);
  REQUIRE(size == 0);
  auto f = DiskFile::Open(path);
  REQUIRE_FALSE(f.ok());
  CHECK(f.status().IsCorruption());
}

TEST_CASE("DiskFile: damaged header or index is refused", "[repo]") {
  TempDir dir;
  std::string path = WriteSample(dir);
  auto f = DiskFile::Open(path);
  REQUIRE(f.ok());
  const uint64_t index_off = kHeaderSize + 3 * kBlockSize;
  char x = 0x01;
  Patch(path, index_off + 3, &x, 1);
  CHECK(DiskFile::Open(path).status().IsCorruption());

  std::string path2 = dir.Sub("e.cbd");
  auto w = DiskFileWriter::Create(path2, FileKind::kBase, kBlockSize);
  REQUIRE(w.ok());
  REQUIRE((*w)->Finish().ok());
  Patch(path2, 40, &x, 1);  // virtual size
  CHECK(DiskFile::Open(path2).status().IsCorruption());
}

TEST_CASE("DiskFile: unknown version is refused as unsupported", "[repo]") {
  TempDir dir;
  std::string path = WriteSample(dir);
  // Rewrite the version and fix the header checksum, as a newer writer would.
  unsigned char h[kHeaderSize];
  int fd = ::open(path.c_str(), O_RDWR);
  REQUIRE(::pread(fd, h, sizeof h, 0) == kHeaderSize);
  h[8] = 3;
  uint64_t sum = Checksum(h, 80);
  for (int i = 0; i < 8; ++i) h[80 + i] = static_cast<unsigned char>(sum >> (8 * i));
  REQUIRE(::pwrite(fd, h, sizeof h, 0) == kHeaderSize);
  ::close(fd);
  auto f = DiskFile::Open(path);
  REQUIRE_FALSE(f.ok());
  CHECK(f.status().code() == Status::Code::kNotSupported);
  CHECK(f.status().message().find("version 3") != std::string::npos);
}

TEST_CASE("DiskFile: an unfinished file is never valid", "[repo]") {
  TempDir dir;
  std::string path = dir.Sub("u.cbd");
  {
    auto w = DiskFileWriter::Create(path, FileKind::kBase, 4 * kBlockSize);
    REQUIRE(w.ok());
    REQUIRE((*w)->AddData(1, Block(1).data()).ok());
    // No Finish(): as if the writer was killed.
  }
  CHECK(DiskFile::Open(path).status().IsCorruption());
}

TEST_CASE("DiskFileWriter: rejects repeated and out-of-range blocks", "[repo]") {
  TempDir dir;
  auto w = DiskFileWriter::Create(dir.Sub("r.cbd"), FileKind::kOverlay, 4 * kBlockSize);
  REQUIRE(w.ok());
  REQUIRE((*w)->AddData(1, Block(1).data()).ok());
  CHECK_FALSE((*w)->AddZero(1).ok());
  CHECK_FALSE((*w)->AddData(4, Block(4).data()).ok());
  CHECK(DiskFileWriter::Create(dir.Sub("r.cbd"), FileKind::kBase, 1).status().code() ==
        Status::Code::kExists);
}

TEST_CASE("DiskFile: files are created 0600", "[repo]") {
  TempDir dir;
  std::string path = WriteSample(dir);
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("DiskFileWriter: a run of blocks is stored like single blocks", "[repo]") {
  TempDir dir;
  auto w = DiskFileWriter::Create(dir.Sub("run.cbd"), FileKind::kBase, 8 * kBlockSize);
  REQUIRE(w.ok());
  std::vector<char> data;
  std::vector<uint64_t> sums;
  for (uint32_t b = 2; b < 5; ++b) {
    auto blk = Block(b);
    data.insert(data.end(), blk.begin(), blk.end());
    sums.push_back(Checksum(blk.data(), kBlockSize));
  }
  REQUIRE((*w)->AddDataRun(2, data.data(), 3, sums.data()).ok());
  CHECK_FALSE((*w)->AddDataRun(4, data.data(), 1, sums.data()).ok());  // block 4 again
  REQUIRE((*w)->Finish().ok());
  auto f = DiskFile::Open(dir.Sub("run.cbd"));
  REQUIRE(f.ok());
  REQUIRE((*f)->entries().size() == 3);
  std::vector<char> buf(kBlockSize);
  for (const auto& e : (*f)->entries()) {
    REQUIRE((*f)->ReadBlock(e, buf.data()).ok());
    CHECK(buf == Block(static_cast<uint32_t>(e.block)));
  }
}

namespace {

// Rewrites index entry `i` of a finished file with `mutate`, then fixes the
// index and header checksums, as a buggy or hostile writer would.
template <typename F>
void RewriteEntry(const std::string& path, size_t i, F mutate) {
  int fd = ::open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  unsigned char h[kHeaderSize];
  REQUIRE(::pread(fd, h, sizeof h, 0) == kHeaderSize);
  auto get64 = [](const unsigned char* p) {
    uint64_t v = 0;
    for (int k = 7; k >= 0; --k) v = (v << 8) | p[k];
    return v;
  };
  auto put64 = [](unsigned char* p, uint64_t v) {
    for (int k = 0; k < 8; ++k) p[k] = static_cast<unsigned char>(v >> (8 * k));
  };
  const uint64_t count = get64(h + 48), index_offset = get64(h + 64);
  std::vector<unsigned char> index(count * kIndexEntrySize);
  REQUIRE(::pread(fd, index.data(), index.size(), static_cast<off_t>(index_offset)) ==
          static_cast<ssize_t>(index.size()));
  mutate(index.data() + i * kIndexEntrySize, put64);
  REQUIRE(::pwrite(fd, index.data(), index.size(), static_cast<off_t>(index_offset)) ==
          static_cast<ssize_t>(index.size()));
  put64(h + 72, Checksum(index.data(), index.size()));
  put64(h + 80, Checksum(h, 80));
  REQUIRE(::pwrite(fd, h, sizeof h, 0) == kHeaderSize);
  ::close(fd);
}

}  // namespace

TEST_CASE("DiskFile: two blocks sharing one data slot are refused", "[repo]") {
  TempDir dir;
  std::string path = WriteSample(dir);
  // Block 7 was written first (slot 0); make block 2 (entry 0) point there too.
  RewriteEntry(path, 0, [](unsigned char* e, auto put64) { put64(e + 16, kHeaderSize); });
  auto f = DiskFile::Open(path);
  REQUIRE_FALSE(f.ok());
  CHECK(f.status().message().find("shares its data") != std::string::npos);
}

TEST_CASE("DiskFile: a zero entry with an offset is refused", "[repo]") {
  TempDir dir;
  std::string path = WriteSample(dir);
  RewriteEntry(path, 1, [](unsigned char* e, auto put64) { put64(e + 16, kHeaderSize); });
  CHECK(DiskFile::Open(path).status().IsCorruption());
}

TEST_CASE("DiskFileWriter: aligned, unaligned and long runs all read back", "[repo]") {
  // More than WritebackWindow::kWindows steps of writeback in all, from
  // aligned and unaligned memory.
  TempDir dir;
  constexpr uint32_t kRun = 80;  // 5 MiB
  auto w = DiskFileWriter::Create(dir.Sub("dio.cbd"), FileKind::kBase, 3 * kRun * kBlockSize);
  REQUIRE(w.ok());
  void* mem = nullptr;
  REQUIRE(::posix_memalign(&mem, 4096, kRun * kBlockSize + 4096) == 0);
  std::unique_ptr<char, decltype(&std::free)> buf(static_cast<char*>(mem), &std::free);
  auto fill = [&](char* at, uint32_t first) {
    std::vector<uint64_t> sums;
    for (uint32_t b = 0; b < kRun; ++b) {
      auto blk = Block(first + b);
      std::memcpy(at + b * kBlockSize, blk.data(), kBlockSize);
      sums.push_back(Checksum(blk.data(), kBlockSize));
    }
    return sums;
  };
  auto sums = fill(buf.get(), 0);
  REQUIRE((*w)->AddDataRun(0, buf.get(), kRun, sums.data()).ok());
  sums = fill(buf.get() + 1, kRun);  // unaligned by one byte
  REQUIRE((*w)->AddDataRun(kRun, buf.get() + 1, kRun, sums.data()).ok());
  for (uint32_t b = 2 * kRun; b < 3 * kRun; b += 2) REQUIRE((*w)->AddData(b, Block(b).data()).ok());
  REQUIRE((*w)->Finish().ok());
  auto f = DiskFile::Open(dir.Sub("dio.cbd"));
  REQUIRE(f.ok());
  REQUIRE((*f)->entries().size() == 2 * kRun + kRun / 2);
  std::vector<char> out(kBlockSize);
  for (const auto& e : (*f)->entries()) {
    REQUIRE((*f)->ReadBlock(e, out.data()).ok());
    CHECK(out == Block(static_cast<uint32_t>(e.block)));
  }
}

TEST_CASE("Checksum is XXH3-64 with seed 0, whichever vector path the CPU takes") {
  // Values from libxxhash's portable XXH3_64bits, over byte i = i mod 251:
  // every size class of XXH3 (up to 16, 128 and 240 bytes, then stripes).
  const std::pair<size_t, uint64_t> known[] = {
      {0, 0x2d06800538d394c2ull},    {3, 0x5f4299fc161c9cbbull},     {17, 0x9ef341a99de37328ull},
      {129, 0xec7642b431ba3e5aull},  {240, 0x375a384d957fe865ull},   {241, 0x02e8cd95421c6d02ull},
      {1000, 0x33ef703fb2b20ed1ull}, {65536, 0xaaae63800707a868ull}, {65553, 0x40a9eb4906a5e376ull},
  };
  std::string data(65553, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i % 251);
  for (const auto& [len, sum] : known) {
    INFO("length " << len);
    CHECK(Checksum(data.data(), len) == sum);
  }
}
