// SPDX-License-Identifier: Apache-2.0
#include "image/volumes.h"

#include "image/lvm.h"
#include "image/partitions.h"

#include <boost/crc.hpp>
#include <catch2/catch.hpp>

#include <cstring>
#include <map>

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
  void Put64(size_t off, uint64_t v) {
    Put32(off, static_cast<uint32_t>(v));
    Put32(off + 4, static_cast<uint32_t>(v >> 32));
  }
  uint32_t Crc(size_t off, size_t len) const {
    boost::crc_32_type crc;
    crc.process_bytes(bytes.data() + off, len);
    return crc.checksum();
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

namespace {

// A GPT header at `lba` whose 128 entries of 128 bytes are at `entries_lba`.
void GptHeader(MemDisk* d, uint64_t lba, uint64_t other_lba, uint64_t entries_lba) {
  const size_t h = lba * 512;
  std::memcpy(d->bytes.data() + h, "EFI PART", 8);
  d->Put32(h + 8, 0x10000);
  d->Put32(h + 12, 92);
  d->Put64(h + 24, lba);
  d->Put64(h + 32, other_lba);
  d->Put64(h + 40, 34);
  d->Put64(h + 48, d->bytes.size() / 512 - 34);
  d->Put64(h + 72, entries_lba);
  d->Put32(h + 80, 128);
  d->Put32(h + 84, 128);
  d->Put32(h + 88, d->Crc(entries_lba * 512, 128 * 128));
  d->Put32(h + 16, d->Crc(h, 92));
}

// A GPT entry: a type GUID, sectors [first, last], a name of UTF-16 units.
void GptEntry(MemDisk* d, uint64_t entries_lba, int i, uint64_t first, uint64_t last,
              const std::vector<uint16_t>& name) {
  const size_t e = entries_lba * 512 + 128 * static_cast<size_t>(i);
  for (int k = 0; k < 16; ++k) d->bytes[e + k] = static_cast<unsigned char>(0x10 + k);
  d->Put64(e + 32, first);
  d->Put64(e + 40, last);
  for (size_t k = 0; k < name.size(); ++k) {
    d->bytes[e + 56 + 2 * k] = static_cast<unsigned char>(name[k]);
    d->bytes[e + 57 + 2 * k] = static_cast<unsigned char>(name[k] >> 8);
  }
}

}  // namespace

TEST_CASE("Partitions: GPT names in UTF-16, and the backup GPT when the primary is damaged",
          "[volumes]") {
  MemDisk d(4 << 20);
  const uint64_t last = d.bytes.size() / 512 - 1;
  d.MbrEntry(0, 0, 0xee, 1, static_cast<uint32_t>(last));
  for (uint64_t entries : {uint64_t{2}, last - 32}) {
    GptEntry(&d, entries, 0, 2048, 4095, {'r', 'o', 'o', 't'});
    // "é", U+1F600 as a surrogate pair, "!".
    GptEntry(&d, entries, 1, 4096, 6143, {0xe9, 0xd83d, 0xde00, '!'});
    // An unpaired high surrogate, then an unpaired low one at the very end.
    std::vector<uint16_t> odd(36, 'a');
    odd[1] = 0xd800;
    odd[35] = 0xdc00;
    GptEntry(&d, entries, 3, 6144, 6151, odd);
  }
  GptHeader(&d, 1, last, 2);
  GptHeader(&d, last, 1, last - 32);
  auto t = ReadPartitionTable(d.reader(), d.bytes.size());
  CHECK(t.scheme == "gpt");
  CHECK(t.notes.empty());
  REQUIRE(t.partitions.size() == 3);
  CHECK(t.partitions[0].label == "root");
  CHECK(t.partitions[0].type == "13121110-1514-1716-1819-1a1b1c1d1e1f");
  CHECK(t.partitions[0].offset == 2048 * 512);
  CHECK(t.partitions[0].length == 2048 * 512);
  CHECK(t.partitions[1].label == "\xc3\xa9\xf0\x9f\x98\x80!");
  CHECK(t.partitions[2].number == 4);
  CHECK(t.partitions[2].label ==
        "a\xed\xa0\x80" + std::string(33, 'a') + "\xed\xb0\x80");  // kept, 3 bytes each
  d.bytes[512 + 20] ^= 1;                                          // primary header checksum
  auto u = ReadPartitionTable(d.reader(), d.bytes.size());
  REQUIRE(u.partitions.size() == 3);
  CHECK(u.partitions[1].label == t.partitions[1].label);
  REQUIRE(u.notes.size() == 1);
  CHECK(u.notes[0].find("used the backup GPT") != std::string::npos);
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

TEST_CASE("Names: partition and LV files, guest names made safe", "[volumes]") {
  CHECK(DiskFileName("d") == "d.raw");
  CHECK(PartitionFileName("d", 1, "") == "d.part1.raw");
  CHECK(PartitionFileName("d", 2, "data vol") == "d.part2-data_vol.raw");
  CHECK(PartitionFileName("d", 3, "../x") == "d.part3-_x.raw");
  CHECK(PartitionFileName("d", 4, "..") == "d.part4.raw");
  CHECK(PartitionFileName("d", 5, std::string(100, 'n')) ==
        "d.part5-" + std::string(64, 'n') + ".raw");
  CHECK(LvFileName("vg", "abcdefgh", false, "root") == "lvm/vg/root.raw");
  CHECK(LvFileName("vg", "abcdefgh", true, "root") == "lvm/vg-abcdef/root.raw");
  CHECK(LvFileName("v/g", "", true, ".lv") == "lvm/v_g-/lv.raw");
}

TEST_CASE("Names: the files of a point to probe for filesystems", "[volumes]") {
  std::map<std::string, std::vector<std::string>> dirs = {
      {"",
       {"A.raw", "A.part1-root.raw", "A.part5.raw", "B.raw", "VM_metadata", "point.txt", "lvm"}},
      {"lvm", {"vg", "gone"}},
      {"lvm/vg", {"root.raw", "swap.raw"}},
  };
  ListPointDir list = [&](const std::string& rel) -> Result<std::vector<std::string>> {
    auto it = dirs.find(rel);
    if (it == dirs.end()) return Status::NotFound(rel);
    return it->second;
  };
  auto files = FilesToProbe(list);
  REQUIRE(files.ok());
  std::vector<std::string> paths, stems;
  for (const auto& f : *files) {
    paths.push_back(f.path);
    stems.push_back(f.stem);
  }
  CHECK(paths == std::vector<std::string>{"A.part1-root.raw", "A.part5.raw", "B.raw",
                                          "lvm/vg/root.raw", "lvm/vg/swap.raw"});
  CHECK(stems ==
        std::vector<std::string>{"A.part1-root", "A.part5", "B", "lvm-vg-root", "lvm-vg-swap"});
  dirs.erase("lvm");
  files = FilesToProbe(list);
  REQUIRE(files.ok());
  CHECK(files->size() == 3);
  dirs.clear();
  CHECK_FALSE(FilesToProbe(list).ok());
}
