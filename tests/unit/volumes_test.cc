// SPDX-License-Identifier: Apache-2.0
#include "image/volumes.h"

#include <catch2/catch.hpp>

#include <cstring>

using namespace cbt;
using namespace cbt::image;

namespace {

// A disk in memory; reads outside it fail the test.
struct MemDisk {
  std::vector<unsigned char> bytes;
  explicit MemDisk(size_t size) : bytes(size, 0) {}
  ReadAt reader() const {
    return [this](uint64_t off, void* buf, size_t len) -> Status {
      REQUIRE(off + len <= bytes.size());
      std::memcpy(buf, bytes.data() + off, len);
      return Status::Ok();
    };
  }
  void Put32(size_t off, uint32_t v) {
    for (int i = 0; i < 4; ++i) bytes[off + i] = static_cast<unsigned char>(v >> (8 * i));
  }
  void MbrEntry(size_t at, int i, unsigned type, uint32_t start, uint32_t count) {
    const size_t e = at + 446 + 16 * i;
    bytes[e + 4] = static_cast<unsigned char>(type);
    Put32(e + 8, start);
    Put32(e + 12, count);
    bytes[at + 510] = 0x55;
    bytes[at + 511] = 0xaa;
  }
};

}  // namespace

TEST_CASE("Partitions: MBR primaries and a chain of logical partitions", "[volumes]") {
  MemDisk d(64 << 20);
  d.MbrEntry(0, 0, 0x83, 2048, 4096);
  d.MbrEntry(0, 1, 0x05, 8192, 40960);
  // EBR 1 at 8192: logical at +2048, next EBR at extended start + 20480.
  d.MbrEntry(8192 * 512, 0, 0x83, 2048, 8192);
  d.MbrEntry(8192 * 512, 1, 0x05, 20480, 10240);
  d.MbrEntry((8192 + 20480) * 512, 0, 0x07, 2048, 4096);
  auto t = ReadPartitionTable(d.reader(), d.bytes.size());
  CHECK(t.scheme == "dos");
  CHECK(t.notes.empty());
  REQUIRE(t.partitions.size() == 3);
  CHECK(t.partitions[0].number == 1);
  CHECK(t.partitions[0].offset == 2048 * 512);
  CHECK(t.partitions[1].number == 5);
  CHECK(t.partitions[1].offset == (8192 + 2048) * 512ull);
  CHECK(t.partitions[2].number == 6);
  CHECK(t.partitions[2].type == "0x07");
  CHECK(t.partitions[2].offset == (8192 + 20480 + 2048) * 512ull);
}

TEST_CASE("Partitions: an EBR loop and entries past the end are notes, not hangs", "[volumes]") {
  MemDisk d(16 << 20);
  d.MbrEntry(0, 0, 0x05, 2048, 8192);
  d.MbrEntry(2048 * 512, 0, 0x83, 64, 64);
  d.MbrEntry(2048 * 512, 1, 0x05, 0, 8192);  // points back at itself
  auto t = ReadPartitionTable(d.reader(), d.bytes.size());
  CHECK(t.partitions.size() == 1);
  CHECK_FALSE(t.notes.empty());
  MemDisk e(16 << 20);
  e.MbrEntry(0, 0, 0x83, 2048, 1u << 30);
  auto u = ReadPartitionTable(e.reader(), e.bytes.size());
  CHECK(u.partitions.empty());
  CHECK_FALSE(u.notes.empty());
}

TEST_CASE("Partitions: a disk without a table has none", "[volumes]") {
  MemDisk d(1 << 20);
  auto t = ReadPartitionTable(d.reader(), d.bytes.size());
  CHECK(t.scheme.empty());
  CHECK(t.partitions.empty());
}

TEST_CASE("LVM metadata: linear LVs with several segments", "[volumes]") {
  const std::string text = R"(vg0 {
id = "abc"
seqno = 7
format = "lvm2" # a comment
status = ["RESIZEABLE", "READ", "WRITE"]
extent_size = 8192
physical_volumes {
pv0 {
id = "AAAAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGGGG"
device = "/dev/sda2"
pe_start = 2048
pe_count = 100
}
}
logical_volumes {
root {
id = "x"
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 2
segment2 {
start_extent = 4
extent_count = 3
type = "striped"
stripe_count = 1
stripes = [
"pv0", 10
]
}
segment1 {
start_extent = 0
extent_count = 4
type = "striped"
stripe_count = 1
stripes = [
"pv0", 0
]
}
}
pool {
status = ["READ", "WRITE"]
segment1 {
start_extent = 0
extent_count = 1
type = "thin-pool"
}
}
}
}
contents = "Text Format Volume Group"
version = 1
)";
  auto vg = ParseLvmMetadata(text);
  REQUIRE(vg.ok());
  CHECK(vg->name == "vg0");
  CHECK(vg->seqno == 7);
  CHECK(vg->extent_size == 8192);
  REQUIRE(vg->pvs.count("pv0"));
  CHECK(vg->pvs.at("pv0").id == "AAAAAABBBBCCCCDDDDEEEEFFFFGGGGGG");
  CHECK(vg->pvs.at("pv0").pe_start == 2048);
  REQUIRE(vg->lvs.size() == 2);
  CHECK(vg->lvs[0].visible);
  REQUIRE(vg->lvs[0].segments.size() == 2);
  CHECK(vg->lvs[0].segments[0].start_extent == 0);  // sorted
  CHECK(vg->lvs[0].segments[1].pv_start_extent == 10);
  CHECK_FALSE(vg->lvs[1].visible);
}

TEST_CASE("LVM metadata: malformed text is corruption with a line number", "[volumes]") {
  for (const char* bad : {"vg0 {", "vg0 { extent_size = }", "vg0 { x = \"open }", "}",
                          "vg0 { extent_size = 0 seqno = 1 }", "vg { seqno = -1 }"}) {
    CAPTURE(bad);
    auto vg = ParseLvmMetadata(bad);
    CHECK_FALSE(vg.ok());
  }
  // Found by fuzz_lvm_metadata: a number past int64 made stoll throw.
  auto big = ParseLvmMetadata("vg0 {\nseqno = 99999999999999999999\nextent_size = 8\n}");
  REQUIRE_FALSE(big.ok());
  CHECK(big.status().message().find("line 2") != std::string::npos);
  auto vg = ParseLvmMetadata("vg0 {\nseqno = 1\nextent_size = \"x\"\n}");
  REQUIRE_FALSE(vg.ok());
  CHECK(vg.status().message().find("extent_size") != std::string::npos);
}

TEST_CASE("LVM label: a pv_header offset that overflows is a note, not a read out of bounds",
          "[volumes]") {
  // Found by fuzz_partitions: offset 0xffffffe0 passed "off + 40 > 512" in
  // 32-bit arithmetic.
  MemDisk d(1 << 20);
  std::memcpy(d.bytes.data() + 512, "LABELONE", 8);
  std::memcpy(d.bytes.data() + 512 + 24, "LVM2 001", 8);
  d.Put32(512 + 20, 0xffffffe0u);
  std::vector<std::string> notes;
  auto pv = ReadLvmPv(d.reader(), "d", 0, d.bytes.size(), &notes);
  CHECK_FALSE(pv.has_value());
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].find("label damaged") != std::string::npos);
}
