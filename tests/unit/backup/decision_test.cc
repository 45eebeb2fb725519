// SPDX-License-Identifier: Apache-2.0
//
// The full-or-incremental rule of a backup, one case per reason a disk is
// read in full, in the order the reasons take precedence, then the
// incremental case with its extents.  The server's answers are given as
// plain data, as backup.cc gathers them.
#include "backup/decision.h"

#include "xapi/cbt_bitmap.h"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace cbt;
using namespace cbt::backup;

namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kBlock = 64 * 1024;
const std::string kParent = "20260101T000000Z";

// Everything in place for an incremental of a 1 MiB disk (16 blocks, a
// 2-byte bitmap), the server's answers included: blocks 0 and 9 changed.
DecisionInput Incremental() {
  DecisionInput in;
  in.parent = ParentPoint{kParent, "4b3e9a0c-1f2d-4c5b-8e7a-6d5c4b3a2f10", kMiB};
  in.cbt_capable = true;
  in.snapshot_cbt_enabled = true;
  in.virtual_size = kMiB;
  ServerLookup l;
  l.previous_found = true;
  l.previous_cbt_enabled = true;
  l.changed_blocks_base64 = "gEA=";  // 80 40
  in.lookup = l;
  return in;
}

// A full decision with `reason`, reading the whole disk.
void CheckFull(const DecisionInput& in, const std::string& reason) {
  const Decision d = Decide(in);
  CHECK_FALSE(d.incremental);
  CHECK(d.reason == reason);
  REQUIRE(d.extents.size() == 1);
  CHECK(d.extents[0].offset == 0);
  CHECK(d.extents[0].length == in.virtual_size);
}

}  // namespace

TEST_CASE("Decision: first backup of a disk is full", "[decision]") {
  DecisionInput in = Incremental();
  in.parent.reset();
  CHECK_FALSE(NeedsServerLookup(in));
  CheckFull(in, "first backup of this disk");
}

TEST_CASE("Decision: --full wins over every other reason", "[decision]") {
  DecisionInput in = Incremental();
  in.full_requested = true;
  CHECK_FALSE(NeedsServerLookup(in));
  CheckFull(in, "--full was given");
  in.parent.reset();
  CheckFull(in, "--full was given");
}

TEST_CASE("Decision: an SR without CBT means full", "[decision]") {
  DecisionInput in = Incremental();
  in.cbt_capable = false;
  CHECK_FALSE(NeedsServerLookup(in));
  CheckFull(in, "the disk's SR does not support CBT");
}

TEST_CASE("Decision: CBT off before this run means full", "[decision]") {
  DecisionInput in = Incremental();
  in.cbt_was_off = true;
  CHECK_FALSE(NeedsServerLookup(in));
  CheckFull(in, "CBT was off on this disk (disabled or lost on the server); it is on again");
}

TEST_CASE("Decision: a new snapshot without CBT means full", "[decision]") {
  DecisionInput in = Incremental();
  in.snapshot_cbt_enabled = false;
  CHECK_FALSE(NeedsServerLookup(in));
  CheckFull(in, "CBT is not enabled on the new snapshot (it was disabled or lost on the server)");
}

TEST_CASE("Decision: a resized disk means full", "[decision]") {
  DecisionInput in = Incremental();
  in.virtual_size = 2 * kMiB;
  CHECK_FALSE(NeedsServerLookup(in));
  CheckFull(in, "the disk was resized since point " + kParent);
}

TEST_CASE("Decision: a parent with no snapshot recorded means full", "[decision]") {
  DecisionInput in = Incremental();
  in.parent->snapshot_vdi_uuid.clear();
  CHECK_FALSE(NeedsServerLookup(in));
  CheckFull(in, "point " + kParent + " was not taken from this server");
}

TEST_CASE("Decision: the parent's snapshot gone from the server means full", "[decision]") {
  DecisionInput in = Incremental();
  CHECK(NeedsServerLookup(in));
  in.lookup->previous_found = false;
  CheckFull(in, "the server no longer has the snapshot of point " + kParent);
  // Not asked at all counts the same.
  in.lookup.reset();
  CheckFull(in, "the server no longer has the snapshot of point " + kParent);
}

TEST_CASE("Decision: the parent's snapshot without a CBT log means full", "[decision]") {
  DecisionInput in = Incremental();
  in.lookup->previous_cbt_enabled = false;
  CheckFull(in, "the snapshot of point " + kParent + " has no CBT log any more");
  // An unknown answer leaves it to list_changed_blocks.
  in.lookup->previous_cbt_enabled.reset();
  CHECK(Decide(in).incremental);
}

TEST_CASE("Decision: list_changed_blocks refused means full", "[decision]") {
  DecisionInput in = Incremental();
  SECTION("the CBT chain was cut (SR_BACKEND_FAILURE_460)") {
    in.lookup->changed_blocks_status = Status::Remote(
        "SR_BACKEND_FAILURE_460: unrelated", {"SR_BACKEND_FAILURE_460", "", "unrelated VDIs"});
    CheckFull(in, "the server cannot list the blocks changed since point " + kParent +
                      " (the CBT chain is broken: unrelated VDIs)");
  }
  SECTION("SR_BACKEND_FAILURE_460 without its text: the message") {
    in.lookup->changed_blocks_status =
        Status::Remote("SR_BACKEND_FAILURE_460", {"SR_BACKEND_FAILURE_460"});
    CheckFull(in, "the server cannot list the blocks changed since point " + kParent +
                      " (SR_BACKEND_FAILURE_460)");
  }
  SECTION("another error: its message") {
    in.lookup->changed_blocks_status =
        Status::Remote("VDI_IN_USE: OpaqueRef:1, list_changed_blocks", {"VDI_IN_USE"});
    CheckFull(in, "the server cannot list the blocks changed since point " + kParent +
                      " (VDI_IN_USE: OpaqueRef:1, list_changed_blocks)");
  }
}

TEST_CASE("Decision: a malformed bitmap means full", "[decision]") {
  DecisionInput in = Incremental();
  for (const char* text : {"gEA", "g*A=", "g=A=", "gE==A", "\tgEA="}) {
    in.lookup->changed_blocks_base64 = text;
    CheckFull(in, "changed-block bitmap is not valid base64");
  }
}

TEST_CASE("Decision: a bitmap of the wrong length means full", "[decision]") {
  DecisionInput in = Incremental();
  in.lookup->changed_blocks_base64 = "gA==";  // 1 byte for 16 blocks
  CheckFull(in, "the server's changed-block bitmap has 1 bytes where 2 were expected");
  in.lookup->changed_blocks_base64 = "gEAA";  // 3 bytes
  CheckFull(in, "the server's changed-block bitmap has 3 bytes where 2 were expected");
}

TEST_CASE("Decision: an unbroken chain is incremental with the changed extents", "[decision]") {
  DecisionInput in = Incremental();
  CHECK(NeedsServerLookup(in));
  SECTION("blocks 0 and 9") {
    const Decision d = Decide(in);
    CHECK(d.incremental);
    CHECK(d.reason.empty());
    REQUIRE(d.extents.size() == 2);
    CHECK(d.extents[0].offset == 0);
    CHECK(d.extents[0].length == kBlock);
    CHECK(d.extents[1].offset == 9 * kBlock);
    CHECK(d.extents[1].length == kBlock);
  }
  SECTION("consecutive blocks merge, the short last block is clipped") {
    in.virtual_size = 10 * kBlock - 512;
    in.parent->virtual_size = in.virtual_size;
    in.lookup->changed_blocks_base64 = "\n/8A=\r\n";  // ff c0: all 10 blocks, line breaks ignored
    const Decision d = Decide(in);
    CHECK(d.incremental);
    REQUIRE(d.extents.size() == 1);
    CHECK(d.extents[0].offset == 0);
    CHECK(d.extents[0].length == 10 * kBlock - 512);
  }
  SECTION("nothing changed: nothing to read") {
    in.lookup->changed_blocks_base64 = "AAA=";
    const Decision d = Decide(in);
    CHECK(d.incremental);
    CHECK(d.extents.empty());
  }
}

TEST_CASE("CBT bitmap: blocks and extents read MSB first", "[decision]") {
  auto bits = xapi::DecodeCbtBitmap("gEA=");
  REQUIRE(bits.ok());
  CHECK(bits->size() == xapi::CbtBitmapBytes(kMiB));
  const std::vector<bool> blocks = xapi::BlocksFromBitmap(*bits, kMiB);
  REQUIRE(blocks.size() == 16);
  for (size_t b = 0; b < blocks.size(); ++b) CHECK(blocks[b] == (b == 0 || b == 9));
  // Bits beyond a short bitmap read as clear.
  CHECK(xapi::BlocksFromBitmap(std::string("\x80", 1), kMiB).size() == 16);
  CHECK(xapi::ExtentsFromBitmap(std::string("\x80", 1), kMiB).size() == 1);
}
