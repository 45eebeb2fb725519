// SPDX-License-Identifier: Apache-2.0
//
// The block store: one copy of each block across slots, flushes and
// writers; blocks read back through their references; index files are
// checked; a writer that never flushed leaves nothing the next one trusts.
#include "repo/block_store.h"

#include "testutil.h"

#include "repo/disk_file.h"
#include "util/file.h"

#include <catch2/catch.hpp>

#include <random>
#include <set>
#include <thread>

using namespace cbt;
using namespace cbt::repo;

namespace {

std::string Block(uint32_t seed, bool compressible = true) {
  std::string s(kRawBlockSize, '\0');
  std::mt19937 rng(seed);
  for (size_t i = 0; i < s.size(); ++i) {
    s[i] = compressible ? static_cast<char>('a' + (i / 61 + seed) % 26) : static_cast<char>(rng());
  }
  s.replace(0, 4, reinterpret_cast<const char*>(&seed), 4);  // distinct per seed
  return s;
}

std::string ReadBack(const std::string& repo, const BlockRef& ref) {
  auto pack = Pack::Open(PackPath(repo, ref.pack), ref.pack);
  REQUIRE(pack.ok());
  std::string out(kRawBlockSize, '\0');
  Status st = (*pack)->ReadBlock(ref, out.data());
  INFO(st.message());
  REQUIRE(st.ok());
  return out;
}

size_t Files(const std::string& dir) {
  auto names = ListDir(dir);
  return names.ok() ? names->size() : 0;
}

}  // namespace

TEST_CASE("store: one copy of each block, across slots and writers") {
  testing::TempDir dir;
  const std::string repo = dir.path();
  BlockRef first_a, first_b;
  {
    auto store = BlockStore::Open(repo, {});
    REQUIRE(store.ok());
    auto* s1 = (*store)->NewSlot();
    auto* s2 = (*store)->NewSlot();
    const std::string a = Block(1), b = Block(2, false);
    auto ra = s1->Put(a.data());
    auto rb = s2->Put(b.data());
    auto ra2 = s2->Put(a.data());  // same content, another slot
    REQUIRE((ra.ok() && rb.ok() && ra2.ok()));
    CHECK(ra->pack == ra2->pack);
    CHECK(ra->offset == ra2->offset);
    CHECK(ra->stored_size < kRawBlockSize);   // compressed
    CHECK(rb->stored_size == kRawBlockSize);  // did not shrink: raw
    REQUIRE((*store)->Flush().ok());
    CHECK(ReadBack(repo, *ra) == a);
    CHECK(ReadBack(repo, *rb) == b);
    const auto st = (*store)->stats();
    CHECK(st.blocks_stored == 2);
    CHECK(st.blocks_reused == 1);
    CHECK(st.bytes_stored == ra->stored_size + rb->stored_size);
    first_a = *ra;
    first_b = *rb;
  }
  CHECK(Files(repo + "/index") == 1);
  // A second writer (another backup, later) finds both through the index.
  auto store = BlockStore::Open(repo, {});
  REQUIRE(store.ok());
  CHECK((*store)->known_blocks() == 2);
  auto* s = (*store)->NewSlot();
  const std::string a = Block(1), c = Block(3);
  auto ra = s->Put(a.data());
  auto rc = s->Put(c.data());
  REQUIRE((ra.ok() && rc.ok()));
  CHECK(ra->pack == first_a.pack);
  CHECK(ra->offset == first_a.offset);
  CHECK(rc->pack != first_a.pack);  // a new pack for the new block
  REQUIRE((*store)->Flush().ok());
  CHECK(Files(repo + "/index") == 2);
  CHECK(ReadBack(repo, *rc) == c);
  CHECK((*store)->stats().blocks_stored == 1);
}

TEST_CASE("store: blocks are found again by the repository's own content key") {
  testing::TempDir dir;
  const std::string repo = dir.path();
  const std::string a = Block(1);
  StoreOptions sha;
  sha.key = KeyAlgorithm::kSha256;
  BlockRef first;
  {
    auto store = BlockStore::Open(repo, sha);
    REQUIRE(store.ok());
    auto r = (*store)->NewSlot()->Put(a.data());
    REQUIRE(r.ok());
    first = *r;
    REQUIRE((*store)->Flush().ok());
  }
  auto pack = Pack::Open(PackPath(repo, first.pack), first.pack);
  REQUIRE(pack.ok());
  auto table = (*pack)->Table();
  REQUIRE(table.ok());
  REQUIRE(table->size() == 1);
  CHECK((*table)[0].key == KeyOf(a, KeyAlgorithm::kSha256));
  {
    // A writer keying as the repository does reuses the block.
    auto store = BlockStore::Open(repo, sha);
    REQUIRE(store.ok());
    auto r = (*store)->NewSlot()->Put(a.data());
    REQUIRE(r.ok());
    CHECK(r->pack == first.pack);
    CHECK((*store)->stats().blocks_reused == 1);
  }
  // One keying otherwise finds nothing under its key: it stores the block
  // again, never references another.
  auto store = BlockStore::Open(repo, {});
  REQUIRE(store.ok());
  auto r = (*store)->NewSlot()->Put(a.data());
  REQUIRE(r.ok());
  CHECK(r->pack != first.pack);
  CHECK((*store)->stats().blocks_stored == 1);
  REQUIRE((*store)->Flush().ok());
  CHECK(ReadBack(repo, *r) == a);
}

TEST_CASE("store: many threads storing overlapping content") {
  testing::TempDir dir;
  StoreOptions o;
  o.pack_target = 256 * 1024;  // several packs per slot
  auto store = BlockStore::Open(dir.path(), o);
  REQUIRE(store.ok());
  std::vector<std::vector<std::pair<uint32_t, BlockRef>>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    auto* slot = (*store)->NewSlot();
    threads.emplace_back([&, t, slot] {
      for (uint32_t i = 0; i < 40; ++i) {
        const uint32_t seed = (i * 7 + static_cast<uint32_t>(t) * 5) % 60;  // overlaps
        const std::string raw = Block(seed, seed % 3 != 0);
        auto ref = slot->Put(raw.data());
        if (ref.ok()) got[t].push_back({seed, *ref});
      }
    });
  }
  for (auto& th : threads) th.join();
  REQUIRE((*store)->Flush().ok());
  std::set<uint32_t> seeds;
  for (const auto& g : got) {
    REQUIRE(g.size() == 40);
    for (const auto& [seed, ref] : g) {
      CHECK(ReadBack(dir.path(), ref) == Block(seed, seed % 3 != 0));
      seeds.insert(seed);
    }
  }
  const auto st = (*store)->stats();
  CHECK(st.blocks_stored == seeds.size());
  CHECK(st.blocks_stored + st.blocks_reused == 160);
  CHECK(Files(dir.path() + "/packs") >= 1);
  auto again = BlockStore::Open(dir.path(), o);
  REQUIRE(again.ok());
  CHECK((*again)->known_blocks() == seeds.size());
}

TEST_CASE("store: packs that fill up are finished behind the writer, all of them by Flush") {
  testing::TempDir dir;
  StoreOptions o;
  o.pack_target = kRawBlockSize;    // every raw block fills a pack
  constexpr uint32_t kBlocks = 30;  // more full packs than may wait at once
  std::vector<BlockRef> refs;
  {
    auto store = BlockStore::Open(dir.path(), o);
    REQUIRE(store.ok());
    auto* slot = (*store)->NewSlot();
    for (uint32_t i = 0; i < kBlocks; ++i) {
      auto ref = slot->Put(Block(100 + i, false).data());
      REQUIRE(ref.ok());
      refs.push_back(*ref);
    }
    REQUIRE((*store)->Flush().ok());
    CHECK((*store)->created_packs().size() == kBlocks);
  }
  for (uint32_t i = 0; i < kBlocks; ++i) {
    auto pack = Pack::Open(PackPath(dir.path(), refs[i].pack), refs[i].pack);
    REQUIRE(pack.ok());
    auto table = (*pack)->Table();
    REQUIRE(table.ok());  // finished: the trailer is there
    CHECK(table->size() == 1);
    CHECK(ReadBack(dir.path(), refs[i]) == Block(100 + i, false));
  }
}

TEST_CASE("store: a writer dropped with packs waiting to be finished leaves nothing indexed") {
  testing::TempDir dir;
  StoreOptions o;
  o.pack_target = kRawBlockSize;
  {
    auto store = BlockStore::Open(dir.path(), o);
    REQUIRE(store.ok());
    auto* slot = (*store)->NewSlot();
    for (uint32_t i = 0; i < 20; ++i) REQUIRE(slot->Put(Block(200 + i, false).data()).ok());
  }
  auto again = BlockStore::Open(dir.path(), o);
  REQUIRE(again.ok());
  CHECK((*again)->known_blocks() == 0);
}

TEST_CASE("store: an unflushed writer is forgotten, a damaged index file refused") {
  testing::TempDir dir;
  const std::string repo = dir.path();
  {
    auto store = BlockStore::Open(repo, {});
    REQUIRE(store.ok());
    const std::string a = Block(1);
    REQUIRE((*store)->NewSlot()->Put(a.data()).ok());
    // No Flush: the process died.  Its pack is garbage, never trusted.
  }
  auto store = BlockStore::Open(repo, {});
  REQUIRE(store.ok());
  CHECK((*store)->known_blocks() == 0);
  const std::string a = Block(1);
  REQUIRE((*store)->NewSlot()->Put(a.data()).ok());
  REQUIRE((*store)->Flush().ok());

  auto names = ListDir(repo + "/index");
  REQUIRE(names.ok());
  REQUIRE(names->size() == 1);
  const std::string idx = repo + "/index/" + (*names)[0];
  // A temporary of an interrupted index write is ignored.
  REQUIRE(WriteNewFile(idx + ".tmp.123", "partial").ok());
  CHECK(BlockStore::Open(repo, {}).ok());
  auto bytes = ReadFile(idx);
  REQUIRE(bytes.ok());
  std::string bent = *bytes;
  bent[kStoreIndexHeaderSize + 40] ^= 1;
  REQUIRE(::unlink(idx.c_str()) == 0);
  REQUIRE(WriteNewFile(idx, bent).ok());
  auto damaged = BlockStore::Open(repo, {});
  REQUIRE_FALSE(damaged.ok());
  CHECK(damaged.status().message().find(idx) != std::string::npos);
  CHECK(BlockStore::Open(repo, StoreOptions{true, 99, 1, nullptr, nullptr}).status().code() ==
        Status::Code::kInvalidArgument);
}

TEST_CASE("store: index encoding round-trips and checks order and geometry") {
  std::vector<IndexRecord> recs(3);
  for (int i = 0; i < 3; ++i) {
    recs[i].key = KeyOf(std::to_string(i));
    recs[i].ref = {static_cast<uint64_t>(i + 1), kPackHeaderSize + 100u * i, 50, 7};
  }
  const std::string bytes = EncodeIndex(recs);
  auto back = ParseIndex(bytes, "x");
  REQUIRE(back.ok());
  REQUIRE(back->size() == 3);
  CHECK(std::is_sorted(back->begin(), back->end(),
                       [](const IndexRecord& a, const IndexRecord& b) { return a.key < b.key; }));
  CHECK_FALSE(ParseIndex(bytes.substr(0, bytes.size() - 1), "x").ok());
  CHECK_FALSE(ParseIndex("", "x").ok());
  std::vector<IndexRecord> dup = {recs[0], recs[0]};
  CHECK_FALSE(ParseIndex(EncodeIndex(dup), "x").ok());  // a key twice
  std::vector<IndexRecord> bad = {recs[0]};
  bad[0].ref.stored_size = 0;
  CHECK_FALSE(ParseIndex(EncodeIndex(bad), "x").ok());
  CHECK(EncodeIndex({}).size() == kStoreIndexHeaderSize + 8);
  CHECK(ParseIndex(EncodeIndex({}), "x").ok());
}

TEST_CASE("store: an index naming other content is not trusted") {
  testing::TempDir dir;
  const std::string repo = dir.path();
  const std::string a = Block(1), b = Block(2);
  BlockRef rb;
  {
    auto store = BlockStore::Open(repo, {});
    REQUIRE(store.ok());
    auto r = (*store)->NewSlot()->Put(b.data());
    REQUIRE(r.ok());
    rb = *r;
    REQUIRE((*store)->Flush().ok());
  }
  // A planted index says that a's key is stored where b is (with b's
  // checksum, so a read of that block alone would pass).
  REQUIRE(MakeDir(repo + "/index").ok());
  REQUIRE(WriteNewFile(IndexPath(repo, 0x1234), EncodeIndex({{KeyOf(a), rb}})).ok());
  auto store = BlockStore::Open(repo, {});
  REQUIRE(store.ok());
  auto* slot = (*store)->NewSlot();
  auto ra = slot->Put(a.data());
  REQUIRE(ra.ok());
  CHECK_FALSE((ra->pack == rb.pack && ra->offset == rb.offset));
  auto rb2 = slot->Put(b.data());  // the honest entry is still reused
  REQUIRE(rb2.ok());
  CHECK((rb2->pack == rb.pack && rb2->offset == rb.offset));
  REQUIRE((*store)->Flush().ok());
  CHECK(ReadBack(repo, *ra) == a);
  CHECK((*store)->stats().blocks_stored == 1);
  CHECK((*store)->stats().blocks_reused == 1);
}
