// SPDX-License-Identifier: Apache-2.0
//
// The upload streams of a restore, read back by an independent parser: the
// dynamic VHD (footer, header, BAT, sector bitmaps, data) and xapi's raw
// chunked framing.  Each stream is drained in odd-sized pieces, so block,
// bitmap and frame boundaries fall inside a call.
#include "stream/vhd_stream.h"

#include "testutil.h"

#include "image/composed_image.h"
#include "repo/disk_file.h"

#include <catch2/catch.hpp>

#include <cstring>
#include <map>
#include <set>

using namespace cbt;
using namespace cbt::repo;
using cbt::image::ComposedImage;
using namespace cbt::testing;

namespace {

constexpr uint64_t kVhdBlock = 2 << 20;
// Three VHD blocks, the last one partial; the last 64 KiB block holds 2560
// bytes.
constexpr uint64_t kSize = 4 * (1 << 20) + 3 * kBlockSize + 5 * 512;

// base: data in blocks 0, 1, 5, 31, 32, 40, 64, 67; overlay: block 1 new,
// block 5 zero, block 66 new.  Every other block is a hole.
std::unique_ptr<TempChain> MakeImage() {
  auto m = std::make_unique<TempChain>();
  m->Add("base", FileKind::kBase, kSize, [](DiskFileWriter& w) {
    for (uint64_t b : {0, 1, 5, 31, 32, 40, 64, 67}) {
      REQUIRE(w.AddData(b, Block(static_cast<uint32_t>(b)).data()).ok());
    }
  });
  m->Add("o1", FileKind::kOverlay, kSize, [](DiskFileWriter& w) {
    REQUIRE(w.AddData(1, Block(101).data()).ok());
    REQUIRE(w.AddZero(5).ok());
    REQUIRE(w.AddData(66, Block(166).data()).ok());
  });
  m->Compose();
  return m;
}

std::string Expected(const ComposedImage& img) {
  std::string out(img.size(), '\0');
  auto n = img.Read(out.data(), out.size(), 0);
  REQUIRE(n.ok());
  REQUIRE(*n == out.size());
  return out;
}

template <typename Stream>
std::string Drain(Stream& s, size_t piece) {
  std::string out;
  std::vector<char> buf(piece);
  for (;;) {
    auto n = s.Next(buf.data(), buf.size());
    REQUIRE(n.ok());
    if (*n == 0) break;
    out.append(buf.data(), *n);
  }
  return out;
}

uint64_t Be(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

// The VHD checksum: ones' complement of the byte sum, its own field as zero.
uint32_t Checksum(std::string rec, size_t field) {
  std::memset(rec.data() + field, 0, 4);
  uint32_t sum = 0;
  for (char c : rec) sum += static_cast<unsigned char>(c);
  return ~sum;
}

// Parses `vhd` as xapi's importer would and applies it onto `disk`: only
// sectors whose bitmap bit is set are written.  Returns the VHD blocks
// present.
std::set<uint64_t> ApplyVhd(const std::string& vhd, std::string* disk) {
  REQUIRE(vhd.size() >= 512 * 3);
  REQUIRE(vhd.size() % 512 == 0);
  const std::string footer = vhd.substr(0, 512);
  CHECK(footer == vhd.substr(vhd.size() - 512));
  CHECK(footer.compare(0, 8, "conectix") == 0);
  CHECK(Be(footer, 60, 4) == 3);  // dynamic
  CHECK(Be(footer, 48, 8) == disk->size());
  CHECK(Be(footer, 64, 4) == Checksum(footer, 64));
  const uint64_t header_at = Be(footer, 16, 8);
  const std::string header = vhd.substr(header_at, 1024);
  CHECK(header.compare(0, 8, "cxsparse") == 0);
  CHECK(Be(header, 36, 4) == Checksum(header, 36));
  const uint64_t table = Be(header, 16, 8);
  const uint64_t entries = Be(header, 28, 4);
  const uint64_t block_size = Be(header, 32, 4);
  REQUIRE(block_size == kVhdBlock);
  CHECK(entries == (disk->size() + block_size - 1) / block_size);
  std::set<uint64_t> present;
  uint64_t last_end = table + entries * 4;
  for (uint64_t i = 0; i < entries; ++i) {
    const uint64_t sector = Be(vhd, table + 4 * i, 4);
    if (sector == 0xffffffffu) continue;
    present.insert(i);
    const uint64_t at = sector * 512;
    CHECK(at >= last_end);  // forward only, no overlap
    REQUIRE(at + 512 + block_size <= vhd.size() - 512);
    last_end = at + 512 + block_size;
    for (uint64_t s = 0; s < block_size / 512; ++s) {
      const bool set = (static_cast<unsigned char>(vhd[at + s / 8]) & (0x80 >> (s % 8))) != 0;
      const uint64_t off = i * block_size + s * 512;
      const std::string data = vhd.substr(at + 512 + s * 512, 512);
      if (!set) {
        CHECK(data == std::string(512, '\0'));
        continue;
      }
      REQUIRE(off + 512 <= disk->size());  // never a bit past the end
      disk->replace(off, 512, data);
    }
  }
  return present;
}

}  // namespace

TEST_CASE("VHD stream: every carried block arrives, nothing else is written") {
  auto m = MakeImage();
  const std::string want = Expected(*m->img);
  const uint64_t nblocks = BlockCount(kSize);
  auto src = stream::SourceFromImage(m->img);

  // A full restore carries the data blocks; a changed-blocks restore any
  // set, holes and zero blocks included (they must become zeros there).
  std::vector<bool> data(nblocks), changed(nblocks);
  for (uint64_t b = 0; b < nblocks; ++b) data[b] = src->MayHoldData(b);
  for (uint64_t b : {1, 2, 5, 40, 67}) changed[b] = true;

  for (const auto& carry : {data, changed}) {
    for (size_t piece : {size_t{1000}, size_t{4} << 20}) {
      auto s = stream::VhdStream::Create(*src, carry);
      REQUIRE(s.ok());
      const std::string vhd = Drain(**s, piece);
      CHECK(vhd.size() == (*s)->length());
      std::string disk(kSize, '\xee');
      std::set<uint64_t> present = ApplyVhd(vhd, &disk);
      std::set<uint64_t> expect_present;
      uint64_t carried = 0;
      for (uint64_t b = 0; b < nblocks; ++b) {
        if (!carry[b]) continue;
        ++carried;
        expect_present.insert(b * kBlockSize / kVhdBlock);
      }
      CHECK(present == expect_present);
      CHECK((*s)->carried_blocks() == carried);
      for (uint64_t b = 0; b < nblocks; ++b) {
        const uint64_t off = b * kBlockSize, n = std::min<uint64_t>(kBlockSize, kSize - off);
        INFO("block " << b << " piece " << piece);
        if (carry[b]) {
          CHECK(disk.compare(off, n, want, off, n) == 0);
        } else {
          CHECK(disk.compare(off, n, std::string(n, '\xee')) == 0);
        }
      }
    }
  }
}

TEST_CASE("chunked raw stream: frames carry exactly the chosen blocks") {
  auto m = MakeImage();
  const std::string want = Expected(*m->img);
  const uint64_t nblocks = BlockCount(kSize);
  auto src = stream::SourceFromImage(m->img);
  std::vector<bool> carry(nblocks);
  // Adjacent blocks (merged into one frame), a lone hole, the partial last.
  for (uint64_t b : {0, 1, 2, 3, 5, 20, 66, 67}) carry[b] = true;

  auto s = stream::ChunkedRawStream::Create(*src, carry);
  const std::string body = Drain(*s, 777);
  CHECK(body.size() == s->length());
  CHECK(s->carried_blocks() == 8);

  std::string disk(kSize, '\xee');
  size_t at = 0;
  int frames = 0;
  for (;;) {
    REQUIRE(at + 12 <= body.size());
    uint64_t off = 0;
    uint32_t len = 0;
    for (int i = 7; i >= 0; --i) off = (off << 8) | static_cast<unsigned char>(body[at + i]);
    for (int i = 3; i >= 0; --i) len = (len << 8) | static_cast<unsigned char>(body[at + 8 + i]);
    at += 12;
    if (off == 0 && len == 0) break;
    ++frames;
    CHECK(off % 512 == 0);
    CHECK(len % 512 == 0);
    REQUIRE(off + len <= kSize);
    REQUIRE(at + len <= body.size());
    disk.replace(off, len, body, at, len);
    at += len;
  }
  CHECK(at == body.size());
  CHECK(frames == 4);  // 0-3, 5, 20, 66-67
  for (uint64_t b = 0; b < nblocks; ++b) {
    const uint64_t off = b * kBlockSize, n = std::min<uint64_t>(kBlockSize, kSize - off);
    INFO("block " << b);
    if (carry[b]) {
      CHECK(disk.compare(off, n, want, off, n) == 0);
    } else {
      CHECK(disk.compare(off, n, std::string(n, '\xee')) == 0);
    }
  }
}
