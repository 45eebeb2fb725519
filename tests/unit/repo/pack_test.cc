// SPDX-License-Identifier: Apache-2.0
//
// Pack files: blocks appended from several threads read back exactly,
// compressed or raw; the table describes them; an unfinished, damaged or
// punched pack is Corruption naming the pack, never wrong data.
#include "repo/pack.h"

#include "testutil.h"

#include "repo/disk_file.h"
#include "util/file.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <random>
#include <thread>

using namespace cbt;
using namespace cbt::repo;

namespace {

std::string Block(uint32_t seed, bool compressible) {
  std::string s(kRawBlockSize, '\0');
  std::mt19937 rng(seed);
  for (size_t i = 0; i < s.size(); ++i) {
    s[i] = compressible ? static_cast<char>('a' + (i / 97 + seed) % 26) : static_cast<char>(rng());
  }
  return s;
}

struct Stored {
  std::string raw;
  BlockRef ref;
};

// Appends `raw` as the store would: compressed when it shrinks.
BlockRef Put(PackWriter& w, const std::string& raw) {
  std::string frame;
  const bool compressed = Compress(raw, 3, &frame);
  auto ref = w.Append(KeyOf(raw), compressed ? frame : raw, Checksum(raw.data(), raw.size()));
  REQUIRE(ref.ok());
  return *ref;
}

}  // namespace

TEST_CASE("pack: blocks from several threads read back, and the table lists them") {
  testing::TempDir dir;
  const std::string path = dir.Sub("0123456789abcdef.pack");
  auto w = PackWriter::Create(path, 0x0123456789abcdefULL);
  REQUIRE(w.ok());
  std::vector<std::vector<Stored>> per_thread(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        std::string raw = Block(t * 100 + i, i % 2 == 0);
        std::string frame;
        const bool c = Compress(raw, 3, &frame);
        auto ref = (*w)->Append(KeyOf(raw), c ? frame : raw, Checksum(raw.data(), raw.size()));
        if (ref.ok()) per_thread[t].push_back({raw, *ref});
      }
    });
  }
  for (auto& t : threads) t.join();
  REQUIRE((*w)->Finish().ok());
  auto pack = Pack::Open(path, 0x0123456789abcdefULL);
  REQUIRE(pack.ok());
  std::string out(kRawBlockSize, '\0');
  size_t compressed = 0;
  std::map<uint64_t, ContentKey> by_offset;
  for (const auto& blocks : per_thread) {
    REQUIRE(blocks.size() == 25);
    for (const auto& b : blocks) {
      REQUIRE((*pack)->ReadBlock(b.ref, out.data()).ok());
      CHECK(out == b.raw);
      compressed += b.ref.stored_size < kRawBlockSize;
      by_offset[b.ref.offset] = KeyOf(b.raw);
    }
  }
  CHECK(compressed == 52);  // the 13 compressible blocks of each thread
  auto table = (*pack)->Table();
  REQUIRE(table.ok());
  REQUIRE(table->size() == 100);
  auto it = by_offset.begin();
  for (const auto& r : *table) {
    CHECK(r.offset == it->first);
    CHECK(r.key == it->second);
    ++it;
  }
  CHECK((*w)->records().size() == 100);
}

TEST_CASE("pack: unfinished it has no table; finished, its trailer ends the file") {
  testing::TempDir dir;
  const std::string path = dir.Sub("p.pack");
  auto w = PackWriter::Create(path, 5);
  REQUIRE(w.ok());
  const std::string a = Block(1, true), b = Block(2, false);
  const BlockRef ra = Put(**w, a), rb = Put(**w, b);
  {
    auto pack = Pack::Open(path, 5);
    REQUIRE(pack.ok());
    CHECK_FALSE((*pack)->Table().ok());
  }
  REQUIRE((*w)->Finish().ok());
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK(static_cast<uint64_t>(st.st_size) ==
        kPackHeaderSize + ra.stored_size + rb.stored_size + 2 * kPackEntrySize + kPackTrailerSize);
  auto pack = Pack::Open(path, 5);
  REQUIRE(pack.ok());
  auto table = (*pack)->Table();
  REQUIRE(table.ok());
  CHECK(table->size() == 2);
  std::string out(kRawBlockSize, '\0');
  REQUIRE((*pack)->ReadBlock(rb, out.data()).ok());
  CHECK(out == b);
}

TEST_CASE("pack: blocks past the writeback window all read back") {
  // More than WritebackWindow::kWindows steps: the writer waits for, and
  // drops from the page cache, the oldest ones as it goes.
  testing::TempDir dir;
  const std::string path = dir.Sub("p.pack");
  auto w = PackWriter::Create(path, 9);
  REQUIRE(w.ok());
  std::vector<std::pair<std::string, BlockRef>> put;
  for (int i = 0; i < 200; ++i) {  // 200 raw random blocks: 12.5 MiB
    std::string blk = Block(1000 + i, false);
    const BlockRef r = Put(**w, blk);
    put.emplace_back(std::move(blk), r);
  }
  REQUIRE((*w)->Finish().ok());
  auto pack = Pack::Open(path, 9);
  REQUIRE(pack.ok());
  auto table = (*pack)->Table();
  REQUIRE(table.ok());
  CHECK(table->size() == 200);
  std::string out(kRawBlockSize, '\0');
  for (const auto& [blk, r] : put) {
    REQUIRE((*pack)->ReadBlock(r, out.data()).ok());
    REQUIRE(out == blk);
  }
}

TEST_CASE("pack: damage is Corruption naming the pack") {
  testing::TempDir dir;
  const std::string path = dir.Sub("p.pack");
  auto w = PackWriter::Create(path, 7);
  REQUIRE(w.ok());
  const std::string a = Block(1, true), b = Block(2, false), c = Block(3, true);
  const BlockRef ra = Put(**w, a), rb = Put(**w, b), rc = Put(**w, c);
  CHECK_FALSE((*w)->Append(KeyOf(a), "", 0).ok());
  CHECK_FALSE((*w)->Append(KeyOf(a), std::string(kRawBlockSize + 1, 'x'), 0).ok());

  // Unfinished: blocks are there but the pack has no table.
  {
    auto pack = Pack::Open(path, 7);
    REQUIRE(pack.ok());
    auto t = (*pack)->Table();
    REQUIRE_FALSE(t.ok());
    CHECK(t.status().message().find("never finished") != std::string::npos);
  }
  REQUIRE((*w)->Finish().ok());
  CHECK(Pack::Open(path, 8).status().code() == Status::Code::kCorruption);  // another id

  {
    UniqueFd fd(::open(path.c_str(), O_RDWR));
    REQUIRE(fd.get() >= 0);
    // A flipped byte in a raw block, and a dead compressed block punched out.
    char x;
    REQUIRE(::pread(fd.get(), &x, 1, rb.offset + 100) == 1);
    x ^= 1;
    REQUIRE(::pwrite(fd.get(), &x, 1, rb.offset + 100) == 1);
    REQUIRE(::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        static_cast<off_t>(rc.offset), rc.stored_size) == 0);
  }
  auto pack = Pack::Open(path, 7);
  REQUIRE(pack.ok());
  std::string out(kRawBlockSize, '\0');
  REQUIRE((*pack)->ReadBlock(ra, out.data()).ok());
  CHECK(out == a);
  for (const BlockRef& bad : {rb, rc}) {
    Status st = (*pack)->ReadBlock(bad, out.data());
    CHECK(st.code() == Status::Code::kCorruption);
    CHECK(st.message().find(path) != std::string::npos);
  }
  // References outside the pack, or of impossible sizes.
  for (BlockRef bad : {BlockRef{7, 10, 100, 0}, BlockRef{7, (*pack)->file_size() - 10, 100, 0},
                       BlockRef{7, ra.offset, 0, 0}, BlockRef{7, ra.offset, kRawBlockSize + 1, 0},
                       BlockRef{7, ~0ULL - 5, 100, 0}}) {
    CHECK((*pack)->ReadBlock(bad, out.data()).code() == Status::Code::kCorruption);
  }
  CHECK((*pack)->Table().ok());  // the table is intact

  // A damaged header, and a file that is no pack.
  {
    UniqueFd fd(::open(path.c_str(), O_RDWR));
    REQUIRE(::pwrite(fd.get(), "X", 1, 20) == 1);
  }
  CHECK(Pack::Open(path, 7).status().code() == Status::Code::kCorruption);
  REQUIRE(WriteNewFile(dir.Sub("short.pack"), "CBTPACK").ok());
  CHECK(Pack::Open(dir.Sub("short.pack"), 7).status().code() == Status::Code::kCorruption);
}

TEST_CASE("pack: trailer and table parsers check geometry and order") {
  testing::TempDir dir;
  const std::string path = dir.Sub("p.pack");
  auto w = PackWriter::Create(path, 9);
  REQUIRE(w.ok());
  Put(**w, Block(1, true));
  Put(**w, Block(2, true));
  REQUIRE((*w)->Finish().ok());
  auto file = ReadFile(path);
  REQUIRE(file.ok());
  const std::string trailer = file->substr(file->size() - kPackTrailerSize);
  auto geometry = ParsePackTrailer(trailer, file->size(), "p");
  REQUIRE(geometry.ok());
  const auto [table_offset, count] = *geometry;
  CHECK(count == 2);
  CHECK_FALSE(ParsePackTrailer(trailer, file->size() + 64, "p").ok());
  CHECK_FALSE(ParsePackTrailer(trailer, file->size() - 1, "p").ok());
  CHECK_FALSE(ParsePackTrailer(trailer.substr(1), file->size(), "p").ok());
  std::string bent = trailer;
  bent[9] ^= 1;
  CHECK_FALSE(ParsePackTrailer(bent, file->size(), "p").ok());

  std::string table = file->substr(table_offset, count * kPackEntrySize);
  const uint64_t sum = Checksum(table.data(), table.size());
  CHECK(ParsePackTable(table, count, table_offset, sum, "p").ok());
  CHECK_FALSE(ParsePackTable(table, count, table_offset, sum ^ 1, "p").ok());
  CHECK_FALSE(ParsePackTable(table, count + 1, table_offset, sum, "p").ok());
  CHECK_FALSE(ParsePackTable(table, ~0ULL / 2, table_offset, sum, "p").ok());
  // Swap the two entries: out of order (overlapping) is refused.
  std::string swapped = table.substr(kPackEntrySize) + table.substr(0, kPackEntrySize);
  CHECK_FALSE(
      ParsePackTable(swapped, count, table_offset, Checksum(swapped.data(), swapped.size()), "p")
          .ok());
  // A record running past the block area.
  CHECK_FALSE(ParsePackTable(table, count, table_offset - 1, sum, "p").ok());
}
