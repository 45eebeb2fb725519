// SPDX-License-Identifier: Apache-2.0
#include "repo/prune.h"

#include "testutil.h"

#include "image/composed_image.h"
#include "image/verify.h"
#include "repo/gc.h"
#include "repo/layout.h"
#include "util/file.h"

#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <map>
#include <random>

using namespace cbt;
using namespace cbt::repo;
using namespace cbt::testing;

namespace {

const std::string kVdiA = cbt::testing::kVdi;
const std::string kVdiB = "bbbbbbbb-bbbb-4ccc-8ddd-eeeeeeeeeeee";
constexpr uint64_t kBlocks = 24;

std::string Point(int i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "202601%02dT000000Z", i + 1);
  return buf;
}

std::vector<std::string> Names(std::initializer_list<const char*> l) {
  return std::vector<std::string>(l.begin(), l.end());
}

// A repository with `n` points of disk A (a base, then overlays that each
// change a few blocks, some to zero) and, from point 2 on, of disk B.
// Returns every point's composed bytes per disk.
struct Fixture : TempRepository {
  std::map<std::string, std::string> expected;  // "<point>/<vdi>" -> bytes

  explicit Fixture(int n, uint32_t seed = 1) : TempRepository("repo") {
    auto lock = VmLock::Acquire(*repo, kVm, "test");
    REQUIRE(lock.ok());
    std::mt19937 rng(seed);
    for (int i = 0; i < n; ++i) {
      auto w = PointWriter::Begin(*repo, *lock, kVm, Point(i));
      REQUIRE(w.ok());
      Manifest m;
      m.vm_uuid = kVm;
      m.point = Point(i);
      for (const auto& vdi : {kVdiA, kVdiB}) {
        const int first = vdi == kVdiA ? 0 : 2;
        if (i < first) continue;
        const bool base = i == first;
        auto f = (*w)->CreateDisk(vdi, base ? FileKind::kBase : FileKind::kOverlay,
                                  kBlocks * kBlockSize);
        REQUIRE(f.ok());
        for (uint64_t b = 0; b < kBlocks; ++b) {
          const uint32_t roll = rng() % 8;
          if (base) {
            if (roll != 0) REQUIRE((*f)->AddData(b, Block(rng()).data()).ok());
          } else if (roll == 0) {
            REQUIRE((*f)->AddData(b, Block(rng()).data()).ok());
          } else if (roll == 1 && rng() % 3 == 0) {
            REQUIRE((*f)->AddZero(b).ok());
          }
        }
        REQUIRE((*f)->Finish().ok());
        DiskRecord d;
        d.vdi_uuid = vdi;
        d.virtual_size = kBlocks * kBlockSize;
        d.file = DiskFileName(vdi);
        d.base = base;
        d.parent_point = base ? "" : Point(i - 1);
        d.snapshot_vdi_uuid = "cccccccc-0000-4000-8000-0000000000" + std::to_string(10 + i);
        m.disks.push_back(d);
      }
      REQUIRE((*w)->WriteMetadata("metadata").ok());
      REQUIRE((*w)->Commit(m).ok());
    }
    for (int i = 0; i < n; ++i) {
      for (const auto& vdi : {kVdiA, kVdiB}) {
        auto bytes = Read(Point(i), vdi);
        if (bytes) expected[Point(i) + "/" + vdi] = *bytes;
      }
    }
  }

  std::optional<std::string> Read(const std::string& point, const std::string& vdi) const {
    auto img = image::ComposedImage::Open(*repo, kVm, point, vdi);
    if (!img.ok()) return std::nullopt;
    std::string out((*img)->size(), '\0');
    auto n = (*img)->Read(out.data(), out.size(), 0);
    REQUIRE(n.ok());
    return out;
  }

  // Every remaining point reads back what it read before; verify is clean.
  void CheckRemaining() const {
    auto points = repo->ListPoints(kVm);
    REQUIRE(points.ok());
    for (const auto& p : *points) {
      for (const auto& vdi : {kVdiA, kVdiB}) {
        auto it = expected.find(p + "/" + vdi);
        if (it == expected.end()) continue;
        auto bytes = Read(p, vdi);
        REQUIRE(bytes.has_value());
        CHECK(*bytes == it->second);
      }
    }
    image::VerifyReport report;
    REQUIRE(image::VerifyRepository(*repo, kVm, "", &report, nullptr).ok());
    for (const auto& pr : report.problems) FAIL_CHECK(pr.point + ": " + pr.message);
  }

  std::vector<std::string> Points() const {
    auto points = repo->ListPoints(kVm);
    REQUIRE(points.ok());
    return *points;
  }
};

}  // namespace

TEST_CASE("Keep policy: keep-last keeps the newest N", "[prune]") {
  std::vector<std::string> points;
  for (int i = 0; i < 10; ++i) points.push_back(Point(i));
  auto d = ApplyKeepPolicy(points, KeepPolicy{.last = 3});
  REQUIRE(d.size() == 10);
  CHECK(d[0].point == Point(9));
  int kept = 0;
  for (const auto& x : d) kept += x.keep();
  CHECK(kept == 3);
  CHECK(d[2].keep());
  CHECK_FALSE(d[3].keep());
}

TEST_CASE("Keep policy: time rules keep the newest point of each bucket", "[prune]") {
  auto points =
      Names({"20260101T010000Z", "20260101T020000Z", "20260102T010000Z", "20260102T230000Z",
             "20260103T120000Z", "20260215T000000Z", "20261231T000000Z", "20270102T000000Z"});
  auto daily = ApplyKeepPolicy(points, KeepPolicy{.daily = 4});
  std::vector<std::string> kept;
  for (const auto& x : daily) {
    if (x.keep()) kept.push_back(x.point);
  }
  CHECK(kept ==
        Names({"20270102T000000Z", "20261231T000000Z", "20260215T000000Z", "20260103T120000Z"}));
  // 2026-12-31 (Thursday) and 2027-01-02 share ISO week 2026-W53.
  auto weekly = ApplyKeepPolicy(points, KeepPolicy{.weekly = 2});
  kept.clear();
  for (const auto& x : weekly) {
    if (x.keep()) kept.push_back(x.point);
  }
  CHECK(kept == Names({"20270102T000000Z", "20260215T000000Z"}));
  auto monthly = ApplyKeepPolicy(points, KeepPolicy{.monthly = 12});
  kept.clear();
  for (const auto& x : monthly) {
    if (x.keep()) kept.push_back(x.point);
  }
  CHECK(kept ==
        Names({"20270102T000000Z", "20261231T000000Z", "20260215T000000Z", "20260103T120000Z"}));
}

TEST_CASE("Keep policy: rules add up and the newest is always kept", "[prune]") {
  auto points =
      Names({"20250601T000000Z", "20260101T000000Z", "20260102T000000Z", "20260103T000000Z"});
  auto d = ApplyKeepPolicy(points, KeepPolicy{.last = 1, .yearly = 2});
  std::map<std::string, std::vector<std::string>> why;
  for (const auto& x : d) why[x.point] = x.reasons;
  CHECK(why["20260103T000000Z"] == Names({"newest", "last", "yearly"}));
  CHECK(why["20250601T000000Z"] == Names({"yearly"}));
  CHECK(why["20260101T000000Z"].empty());
  auto only_hourly = ApplyKeepPolicy(points, KeepPolicy{.hourly = 0, .yearly = 0});
  CHECK(only_hourly[0].keep());
  CHECK_FALSE(only_hourly[1].keep());
}

TEST_CASE("Delete: base, middle and newest points go; the rest read back the same", "[prune]") {
  for (uint32_t seed = 1; seed <= 3; ++seed) {
    Fixture fx(6, seed);
    auto lock = VmLock::Acquire(*fx.repo, kVm, "test");
    REQUIRE(lock.ok());
    auto st = DeletePoints(*fx.repo, *lock, kVm, {Point(0)});
    REQUIRE(st.ok());
    CHECK(st->deleted == Names({"20260101T000000Z"}));
    CHECK(st->layers_moved == 1);
    CHECK(st->released_snapshots.size() == 1);
    fx.CheckRemaining();
    // Point 2 is the base of disk B and an overlay of disk A.
    st = DeletePoints(*fx.repo, *lock, kVm, {Point(2), Point(3)});
    REQUIRE(st.ok());
    fx.CheckRemaining();
    st = DeletePoints(*fx.repo, *lock, kVm, {Point(5)});
    REQUIRE(st.ok());
    fx.CheckRemaining();
    CHECK(fx.Points() == Names({"20260102T000000Z", "20260105T000000Z"}));
    auto m = fx.repo->ReadManifest(kVm, Point(4));
    REQUIRE(m.ok());
    const DiskRecord* a = m->FindDisk(kVdiA);
    REQUIRE(a != nullptr);
    CHECK(!a->base);
    CHECK(a->parent_point == Point(1));
    REQUIRE(a->layers.size() == 2);
    CHECK(a->layers[0].origin == Point(3));
    CHECK(a->layers[1].origin == Point(2));
    const DiskRecord* b = m->FindDisk(kVdiB);
    REQUIRE(b != nullptr);
    CHECK(b->base);
    // Deleting the last base folds all layers into the newest point.
    st = DeletePoints(*fx.repo, *lock, kVm, {Point(1)});
    REQUIRE(st.ok());
    fx.CheckRemaining();
    m = fx.repo->ReadManifest(kVm, Point(4));
    REQUIRE(m.ok());
    CHECK(m->FindDisk(kVdiA)->base);
    CHECK(m->FindDisk(kVdiA)->layers.size() == 4);
  }
}

TEST_CASE("Delete: dead blocks of taken-over files are released", "[prune]") {
  Fixture fx(3);
  {
    auto lock = VmLock::Acquire(*fx.repo, kVm, "test");
    REQUIRE(lock.ok());
    auto st = DeletePoints(*fx.repo, *lock, kVm, {Point(0), Point(1)});
    REQUIRE(st.ok());
  }
  // The two deleted files of disk A refer to blocks that point 2 overwrote:
  // the collection (which needs the VM lock gone) releases them.
  auto gc = CollectGarbage(*fx.repo);
  REQUIRE(gc.ok());
  CHECK(gc->blocks_released > 0);
  fx.CheckRemaining();
}

TEST_CASE("Delete: an unknown point changes nothing", "[prune]") {
  Fixture fx(3);
  auto lock = VmLock::Acquire(*fx.repo, kVm, "test");
  REQUIRE(lock.ok());
  auto st = DeletePoints(*fx.repo, *lock, kVm, {Point(0), "20300101T000000Z"});
  REQUIRE_FALSE(st.ok());
  CHECK(st.status().IsNotFound());
  CHECK(fx.Points().size() == 3);
  CHECK_FALSE(PathExists(JoinPath(VmDir(fx.repo->path(), kVm), kJournalFile)));
}

TEST_CASE(
    "Delete: stopped after any step, every point still reads the same and the next "
    "lock holder finishes",
    "[prune]") {
  int steps = 0;
  {
    Fixture fx(5);
    auto lock = VmLock::Acquire(*fx.repo, kVm, "test");
    REQUIRE(lock.ok());
    DeleteOptions count;
    count.after_step = [&steps](const std::string&) {
      ++steps;
      return true;
    };
    REQUIRE(DeletePoints(*fx.repo, *lock, kVm, {Point(0), Point(2)}, count).ok());
  }
  REQUIRE(steps >= 8);
  for (int stop = 1; stop <= steps; ++stop) {
    CAPTURE(stop);
    Fixture fx(5);
    {
      auto lock = VmLock::Acquire(*fx.repo, kVm, "test");
      REQUIRE(lock.ok());
      int n = 0;
      DeleteOptions opt;
      opt.after_step = [&n, stop](const std::string&) { return ++n < stop; };
      auto st = DeletePoints(*fx.repo, *lock, kVm, {Point(0), Point(2)}, opt);
      CHECK_FALSE(st.ok());
    }
    // The interrupted state is a valid repository.
    fx.CheckRemaining();
    auto lock = VmLock::Acquire(*fx.repo, kVm, "next");
    REQUIRE(lock.ok());
    CHECK(fx.Points() == Names({"20260102T000000Z", "20260104T000000Z", "20260105T000000Z"}));
    CHECK_FALSE(PathExists(JoinPath(VmDir(fx.repo->path(), kVm), kJournalFile)));
    fx.CheckRemaining();
  }
}

TEST_CASE("Delete: a damaged journal stops the next writer and changes nothing", "[prune]") {
  Fixture fx(3);
  const std::string journal = JoinPath(VmDir(fx.repo->path(), kVm), kJournalFile);
  REQUIRE(WriteFileAtomic(journal, "{\"version\": 1, \"delete\": [\"garbage\"]}").ok());
  auto lock = VmLock::Acquire(*fx.repo, kVm, "test");
  REQUIRE_FALSE(lock.ok());
  CHECK(lock.status().message().find(journal) != std::string::npos);
  CHECK(fx.Points().size() == 3);
  fx.CheckRemaining();
}

TEST_CASE("Delete: a damaged later manifest is refused before anything changes", "[prune]") {
  Fixture fx(4);
  const std::string m3 = JoinPath(fx.repo->PointPath(kVm, Point(3)), kManifestFile);
  REQUIRE(WriteFileAtomic(m3, "{ not json").ok());
  auto lock = VmLock::Acquire(*fx.repo, kVm, "test");
  REQUIRE(lock.ok());
  auto st = DeletePoints(*fx.repo, *lock, kVm, {Point(1)});
  REQUIRE_FALSE(st.ok());
  CHECK(st.status().message().find(m3) != std::string::npos);
  CHECK(fx.Points().size() == 4);
  CHECK_FALSE(PathExists(JoinPath(VmDir(fx.repo->path(), kVm), kJournalFile)));
}
