// SPDX-License-Identifier: Apache-2.0
//
// Tests of repository verification (image/verify.h): a clean repository
// verifies clean, and each kind of damage is reported with the VM, point,
// disk and, for a block, the disk offset.
#include "image/verify.h"

#include "testutil.h"

#include "repo/layout.h"
#include "util/file.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

using namespace cbt;
using namespace cbt::repo;
using cbt::image::VerifyProblem;
using cbt::image::VerifyReport;
using namespace cbt::testing;

namespace {

const std::string kBase = "20260101T000000Z";
const std::string kOverlay = "20260102T000000Z";
constexpr uint64_t kSize = 4 * kBlockSize;

// A repository with two points of one disk: a base holding blocks 0 and 2
// (written in that order, so block 2's data is the file's second slot) and
// an overlay on it holding block 1 and a zero block 2.
struct Fixture : TempRepository {
  Fixture() {
    auto lock = VmLock::Acquire(*repo, kVm, "test");
    REQUIRE(lock.ok());
    Write(*lock, kBase, "", [](DiskFileWriter& w) {
      REQUIRE(w.AddData(0, Block(0).data()).ok());
      REQUIRE(w.AddData(2, Block(2).data()).ok());
    });
    Write(*lock, kOverlay, kBase, [](DiskFileWriter& w) {
      REQUIRE(w.AddData(1, Block(1).data()).ok());
      REQUIRE(w.AddZero(2).ok());
    });
  }

  void Write(const VmLock& lock, const std::string& point, const std::string& parent,
             const std::function<void(DiskFileWriter&)>& fill) {
    auto w = PointWriter::Begin(*repo, lock, kVm, point);
    REQUIRE(w.ok());
    REQUIRE((*w)->WriteMetadata("metadata").ok());
    auto d = (*w)->CreateDisk(kVdi, parent.empty() ? FileKind::kBase : FileKind::kOverlay, kSize);
    REQUIRE(d.ok());
    fill(**d);
    REQUIRE((*d)->Finish().ok());
    Manifest m = NewManifest(kVm, "", point, "test");
    m.disks.push_back(NewDiskRecord(kVdi, **d, parent, "test"));
    REQUIRE((*w)->Commit(m).ok());
  }

  std::string DiskPath(const std::string& point) const {
    return JoinPath(repo->PointPath(kVm, point), DiskFileName(kVdi));
  }

  // Runs verification and checks that every problem went to the callback.
  VerifyReport Verify(const std::string& vm = "", const std::string& point = "") const {
    VerifyReport report;
    std::vector<VerifyProblem> seen;
    Status s = image::VerifyRepository(*repo, vm, point, &report,
                                       [&seen](const VerifyProblem& p) { seen.push_back(p); });
    REQUIRE(s.ok());
    REQUIRE(seen.size() == report.problems.size());
    return report;
  }
};

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Checks that `p` is about disk kVdi of kVm at `point`, at disk offset
// `offset` (-1 where no one block is at fault).
void CheckWhere(const VerifyProblem& p, const std::string& point, int64_t offset) {
  CHECK(p.vm == kVm);
  CHECK(p.point == point);
  CHECK(p.disk == kVdi);
  CHECK(p.offset == offset);
}

}  // namespace

TEST_CASE("verify: a clean repository has no damage", "[verify]") {
  Fixture f;
  VerifyReport all = f.Verify();
  CHECK(all.problems.empty());
  CHECK(all.points == 2);
  CHECK(all.disks == 2);
  CHECK(all.blocks_checked == 3);
  CHECK(all.bytes_checked == 3 * kBlockSize);

  // One point is checked with the points it reads through.
  VerifyReport one = f.Verify(kVm, kOverlay);
  CHECK(one.problems.empty());
  CHECK(one.points == 2);
  VerifyReport base = f.Verify(kVm, kBase);
  CHECK(base.problems.empty());
  CHECK(base.points == 1);
  CHECK(base.blocks_checked == 2);

  VerifyReport report;
  Status missing = image::VerifyRepository(*f.repo, kVm, "20260103T000000Z", &report, nullptr);
  CHECK(missing.IsNotFound());
}

TEST_CASE("verify: a flipped byte in a data block names VM, point, disk and offset", "[verify]") {
  Fixture f;
  // Block 2 of the base, where the block store keeps it.
  auto base = f.repo->OpenDiskFile(f.DiskPath(kBase));
  REQUIRE(base.ok());
  REQUIRE((*base)->entries().size() == 2);
  const IndexEntry e = (*base)->entries()[1];
  REQUIRE(e.block == 2);
  int fd = ::open(PackPath(f.repo->path(), e.pack).c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  const off_t at = static_cast<off_t>(e.offset + 10);
  char c = 0;
  REQUIRE(::pread(fd, &c, 1, at) == 1);
  c = static_cast<char>(c ^ 0x01);
  REQUIRE(::pwrite(fd, &c, 1, at) == 1);
  ::close(fd);

  VerifyReport r = f.Verify();
  REQUIRE(r.problems.size() == 1);
  const VerifyProblem& p = r.problems[0];
  CheckWhere(p, kBase, static_cast<int64_t>(2 * kBlockSize));
  CHECK(Contains(p.message, "checksum mismatch"));
  CHECK(Contains(p.message, f.DiskPath(kBase)));
  // The other blocks were still read.
  CHECK(r.blocks_checked == 3);

  // Verifying the overlay alone covers the damaged base it reads through.
  VerifyReport one = f.Verify(kVm, kOverlay);
  REQUIRE(one.problems.size() == 1);
  CHECK(one.problems[0].point == kBase);
}

TEST_CASE("verify: a truncated disk file is reported for its point and disk", "[verify]") {
  Fixture f;
  REQUIRE(::truncate(f.DiskPath(kOverlay).c_str(), kHeaderSize + kBlockSize / 2) == 0);

  VerifyReport r = f.Verify();
  REQUIRE(r.problems.size() == 1);
  const VerifyProblem& p = r.problems[0];
  CheckWhere(p, kOverlay, -1);
  CHECK(Contains(p.message, "truncated"));
  // The base is intact and was checked in full.
  CHECK(r.blocks_checked == 2);
}

TEST_CASE("verify: a missing parent point is reported for the point that needs it", "[verify]") {
  Fixture f;
  REQUIRE(RemoveTree(f.repo->PointPath(kVm, kBase)).ok());

  VerifyReport r = f.Verify();
  REQUIRE(r.problems.size() == 1);
  const VerifyProblem& p = r.problems[0];
  CheckWhere(p, kOverlay, -1);
  CHECK(Contains(p.message, "parent point " + kBase));
  CHECK(Contains(p.message, "missing"));
  // The overlay's own block is still checked.
  CHECK(r.points == 1);
  CHECK(r.blocks_checked == 1);

  VerifyReport one = f.Verify(kVm, kOverlay);
  REQUIRE(one.problems.size() == 1);
  CHECK(one.problems[0].point == kOverlay);
}
