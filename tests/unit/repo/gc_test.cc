// SPDX-License-Identifier: Apache-2.0
//
// Version-2 disk files, references between points and VMs, and garbage
// collection: a block is stored once however many disks refer to it, is
// released only when no point reads it, and a collection stopped after
// any step leaves a store the next one finishes.
#include "repo/gc.h"

#include "testutil.h"

#include "image/composed_image.h"
#include "image/verify.h"
#include "repo/layout.h"
#include "repo/prune.h"
#include "util/endian.h"
#include "util/file.h"

#include <catch2/catch.hpp>

#include <set>

using namespace cbt;
using namespace cbt::repo;
using cbt::testing::Block;
using cbt::testing::kVdi;
using cbt::testing::TempRepository;

namespace {

const std::string kVmB = "22222222-3333-4444-8555-666666666666";
constexpr uint64_t kBlocks = 8;

// A point of `vm` whose disk holds blocks Block(seeds[i]) (0: a hole).
void WritePoint(const Repository& repo, const std::string& vm, const std::string& point,
                const std::vector<uint32_t>& seeds, const std::string& parent = "") {
  auto lock = VmLock::Acquire(repo, vm, "test");
  REQUIRE(lock.ok());
  auto w = PointWriter::Begin(repo, *lock, vm, point);
  REQUIRE(w.ok());
  const bool base = parent.empty();
  auto d =
      (*w)->CreateDisk(kVdi, base ? FileKind::kBase : FileKind::kOverlay, kBlocks * kBlockSize);
  REQUIRE(d.ok());
  for (uint64_t b = 0; b < seeds.size(); ++b) {
    if (seeds[b] != 0) REQUIRE((*d)->AddData(b, Block(seeds[b]).data()).ok());
  }
  REQUIRE((*d)->Finish().ok());
  REQUIRE((*w)->WriteMetadata("metadata").ok());
  Manifest m = NewManifest(vm, "", point, "test");
  m.disks.push_back(NewDiskRecord(kVdi, **d, parent, base ? "test" : ""));
  Status st = (*w)->Commit(m);
  INFO(st.message());
  REQUIRE(st.ok());
}

// The disk of `point` reads as the blocks of `seeds` (0: zeros).
void ReadsAs(const Repository& repo, const std::string& vm, const std::string& point,
             const std::vector<uint32_t>& seeds) {
  auto img = image::ComposedImage::Open(repo, vm, point, kVdi);
  INFO(vm + " " + point);
  REQUIRE(img.ok());
  std::vector<char> got(kBlockSize);
  for (uint64_t b = 0; b < kBlocks; ++b) {
    auto n = (*img)->Read(got.data(), kBlockSize, b * kBlockSize);
    REQUIRE(n.ok());
    const std::vector<char> want =
        b < seeds.size() && seeds[b] != 0 ? Block(seeds[b]) : std::vector<char>(kBlockSize, 0);
    CHECK(got == want);
  }
}

std::vector<std::string> IndexFiles(const Repository& repo) {
  auto names = ListDir(JoinPath(repo.path(), kIndexDir));
  return names.ok() ? *names : std::vector<std::string>{};
}

void VerifyClean(const Repository& repo, uint64_t* unreferenced = nullptr) {
  image::VerifyReport report;
  REQUIRE(image::VerifyRepository(repo, "", "", &report, nullptr).ok());
  for (const auto& p : report.problems) INFO(p.message);
  CHECK(report.problems.empty());
  CHECK(report.store_checked);
  if (unreferenced != nullptr) *unreferenced = report.unreferenced_blocks;
}

}  // namespace

TEST_CASE_METHOD(TempRepository, "Store: a block is stored once across disks, points and VMs",
                 "[repo]") {
  WritePoint(*repo, testing::kVm, "20260101T000000Z", {1, 2, 3, 1, 0, 4});
  WritePoint(*repo, kVmB, "20260101T000000Z", {1, 2, 3, 5});
  WritePoint(*repo, testing::kVm, "20260102T000000Z", {0, 0, 6}, "20260101T000000Z");
  ReadsAs(*repo, testing::kVm, "20260101T000000Z", {1, 2, 3, 1, 0, 4});
  ReadsAs(*repo, testing::kVm, "20260102T000000Z", {1, 2, 6, 1, 0, 4});
  ReadsAs(*repo, kVmB, "20260101T000000Z", {1, 2, 3, 5});

  auto live = CollectReferences(*repo);
  REQUIRE(live.ok());
  CHECK(live->size() == 6);  // blocks 1..6, each once
  auto file = repo->OpenDiskFile(
      JoinPath(repo->PointPath(testing::kVm, "20260101T000000Z"), DiskFileName(kVdi)));
  REQUIRE(file.ok());
  CHECK((*file)->packed());
  const auto& e = (*file)->entries();
  REQUIRE(e.size() == 5);
  CHECK(e[0].pack == e[3].pack);
  CHECK(e[0].offset == e[3].offset);  // the repeated block within the disk
  // What each point added: the second VM stored only its new block.
  auto mb = repo->ReadManifest(kVmB, "20260101T000000Z");
  auto ma = repo->ReadManifest(testing::kVm, "20260101T000000Z");
  REQUIRE((mb.ok() && ma.ok()));
  CHECK(mb->disks[0].stored_bytes < ma->disks[0].stored_bytes);
  VerifyClean(*repo);
}

TEST_CASE_METHOD(TempRepository, "Store: gc releases a block only when no point of any VM reads it",
                 "[repo]") {
  WritePoint(*repo, testing::kVm, "20260101T000000Z", {1, 2, 3, 4});
  WritePoint(*repo, testing::kVm, "20260102T000000Z", {7, 0, 8}, "20260101T000000Z");
  WritePoint(*repo, kVmB, "20260101T000000Z", {1, 2, 9});
  {
    auto lock = VmLock::Acquire(*repo, testing::kVm, "test");
    REQUIRE(lock.ok());
    REQUIRE(DeletePoints(*repo, *lock, testing::kVm, {"20260101T000000Z"}).ok());
  }
  auto st = CollectGarbage(*repo);
  REQUIRE(st.ok());
  CHECK_FALSE(st->skipped);
  // Blocks 1 and 3 were covered in VM A's new point: 3 is read by no one,
  // 1 still by VM B.
  CHECK(st->blocks_released == 1);
  CHECK(st->live_blocks == 6);  // 7, 2, 8, 4 (A) and 1, 9 (B)
  ReadsAs(*repo, testing::kVm, "20260102T000000Z", {7, 2, 8, 4});
  ReadsAs(*repo, kVmB, "20260101T000000Z", {1, 2, 9});
  uint64_t unreferenced = 1;
  VerifyClean(*repo, &unreferenced);
  CHECK(unreferenced == 0);
  CHECK(IndexFiles(*repo).size() == 1);

  // A second collection has nothing to do.
  st = CollectGarbage(*repo);
  REQUIRE(st.ok());
  CHECK(st->blocks_released == 0);

  // With every point gone, so is every pack.
  for (const auto& [vm, point] : std::vector<std::pair<std::string, std::string>>{
           {testing::kVm, "20260102T000000Z"}, {kVmB, "20260101T000000Z"}}) {
    auto lock = VmLock::Acquire(*repo, vm, "test");
    REQUIRE(lock.ok());
    REQUIRE(DeletePoints(*repo, *lock, vm, {point}).ok());
  }
  st = CollectGarbage(*repo);
  REQUIRE(st.ok());
  CHECK(st->live_blocks == 0);
  CHECK(st->packs_removed >= 1);
  auto packs = ListPacks(*repo);
  REQUIRE(packs.ok());
  CHECK(packs->empty());
  CHECK(IndexFiles(*repo).empty());
}

TEST_CASE_METHOD(TempRepository, "Store: gc waits for no one: a writer's lock makes it skip",
                 "[repo]") {
  WritePoint(*repo, testing::kVm, "20260101T000000Z", {1, 2});
  auto lock = VmLock::Acquire(*repo, kVmB, "test");
  REQUIRE(lock.ok());
  auto st = CollectGarbage(*repo);
  REQUIRE(st.ok());
  CHECK(st->skipped);
}

TEST_CASE_METHOD(TempRepository,
                 "Store: a collection stopped after any step is finished by the next one",
                 "[repo]") {
  for (const char* stop : {"index-written", "indexes-removed", "packs-released"}) {
    TempRepository fresh;
    const Repository& r = *fresh.repo;
    WritePoint(r, testing::kVm, "20260101T000000Z", {1, 2, 3, 4});
    WritePoint(r, testing::kVm, "20260102T000000Z", {5, 6}, "20260101T000000Z");
    WritePoint(r, kVmB, "20260101T000000Z", {1, 7});
    {
      auto lock = VmLock::Acquire(r, testing::kVm, "test");
      REQUIRE(lock.ok());
      REQUIRE(DeletePoints(r, *lock, testing::kVm, {"20260101T000000Z"}).ok());
    }
    GcOptions options;
    options.after_step = [stop](const std::string& step) { return step != stop; };
    INFO(stop);
    REQUIRE(CollectGarbage(r, options).ok());
    ReadsAs(r, testing::kVm, "20260102T000000Z", {5, 6, 3, 4});
    ReadsAs(r, kVmB, "20260101T000000Z", {1, 7});
    VerifyClean(r);
    // A writer between the two collections may reuse what the stopped one
    // left indexed; it must read back right.
    WritePoint(r, kVmB, "20260102T000000Z", {1, 2, 3}, "20260101T000000Z");
    ReadsAs(r, kVmB, "20260102T000000Z", {1, 2, 3});
    REQUIRE(CollectGarbage(r).ok());
    uint64_t unreferenced = 1;
    VerifyClean(r, &unreferenced);
    CHECK(unreferenced == 0);
    ReadsAs(r, testing::kVm, "20260102T000000Z", {5, 6, 3, 4});
    ReadsAs(r, kVmB, "20260102T000000Z", {1, 2, 3});
  }
}

TEST_CASE_METHOD(TempRepository, "Store: a format-1 repository is converted by its next write",
                 "[repo]") {
  // A format-1 repository with a point whose disk file holds its blocks.
  REQUIRE(WriteFileAtomic(JoinPath(repo->path(), kConfigFile),
                          "{\"format\": \"cbt-backup repository\", \"version\": 1}\n")
              .ok());
  auto old = Repository::Open(repo->path(), false);
  REQUIRE(old.ok());
  CHECK(old->config().version == 1);
  {
    auto lock = VmLock::Acquire(*old, testing::kVm, "test");
    REQUIRE(lock.ok());
    auto w = PointWriter::Begin(*old, *lock, testing::kVm, "20260101T000000Z");
    REQUIRE(w.ok());
    auto d = DiskFileWriter::Create(JoinPath((*w)->temp_dir(), DiskFileName(kVdi)), FileKind::kBase,
                                    kBlocks * kBlockSize);
    REQUIRE(d.ok());
    for (uint32_t b = 0; b < 4; ++b) REQUIRE((*d)->AddData(b, Block(b + 1).data()).ok());
    REQUIRE((*d)->Finish().ok());
    REQUIRE((*w)->WriteMetadata("metadata").ok());
    Manifest m = NewManifest(testing::kVm, "", "20260101T000000Z", "test");
    m.disks.push_back(NewDiskRecord(kVdi, **d, "", "test"));
    REQUIRE((*w)->Commit(m).ok());
  }
  auto now = Repository::Open(repo->path(), false);
  REQUIRE(now.ok());
  CHECK(now->config().version == kStoreRepoFormatVersion);  // Begin converted it
  WritePoint(*now, testing::kVm, "20260102T000000Z", {0, 9, 0, 0, 1}, "20260101T000000Z");
  ReadsAs(*now, testing::kVm, "20260102T000000Z", {1, 9, 3, 4, 1});
  VerifyClean(*now);
  // Deleting the version-1 base folds it into the mixed chain.
  {
    auto lock = VmLock::Acquire(*now, testing::kVm, "test");
    REQUIRE(lock.ok());
    REQUIRE(DeletePoints(*now, *lock, testing::kVm, {"20260101T000000Z"}).ok());
  }
  REQUIRE(CollectGarbage(*now).ok());
  ReadsAs(*now, testing::kVm, "20260102T000000Z", {1, 9, 3, 4, 1});
  VerifyClean(*now);
}

TEST_CASE("Store: a version-2 disk file with an impossible entry is refused", "[repo]") {
  cbt::testing::TempRepository t;
  WritePoint(*t.repo, testing::kVm, "20260101T000000Z", {1, 2});
  const std::string path =
      JoinPath(t.repo->PointPath(testing::kVm, "20260101T000000Z"), DiskFileName(kVdi));
  auto bytes = ReadFile(path);
  REQUIRE(bytes.ok());
  REQUIRE(bytes->size() == kHeaderSize + 2 * kPackedIndexEntrySize);
  uint32_t version = 0;
  REQUIRE(DiskFile::ParseEntries(*bytes, "good", &version).ok());
  CHECK(version == kPackedDiskFormatVersion);
  // Each damage, with both checksums made right again, so that only the
  // entry rule can refuse it.
  auto patched = [&](size_t at, uint64_t value, int width) {
    std::string b = *bytes;
    char* e = b.data() + kHeaderSize;
    if (width == 8)
      StoreLe64(e + at, value);
    else
      StoreLe32(e + at, static_cast<uint32_t>(value));
    StoreLe64(b.data() + 72, Checksum(e, 2 * kPackedIndexEntrySize));
    StoreLe64(b.data() + 80, Checksum(b.data(), 80));
    return b;
  };
  CHECK(DiskFile::ParseEntries(patched(12, 0, 4), "size 0").status().IsCorruption());
  CHECK(DiskFile::ParseEntries(patched(12, kBlockSize + 1, 4), "too big").status().IsCorruption());
  CHECK(DiskFile::ParseEntries(patched(24, 100, 8), "in header").status().IsCorruption());
  CHECK(DiskFile::ParseEntries(patched(40, 1, 8), "reserved").status().IsCorruption());
  CHECK(DiskFile::ParseEntries(patched(0, 9, 8), "beyond").status().IsCorruption());
  CHECK(
      DiskFile::ParseEntries(bytes->substr(0, bytes->size() - 1), "short").status().IsCorruption());
}
