// SPDX-License-Identifier: Apache-2.0
#include "repo/repository.h"

#include "testutil.h"

#include "repo/layout.h"
#include "util/file.h"

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace cbt;
using namespace cbt::repo;
using namespace cbt::testing;

namespace {

Manifest OneDisk(const std::string& point, bool base, const std::string& parent) {
  Manifest m;
  m.vm_uuid = kVm;
  m.point = point;
  DiskRecord d;
  d.vdi_uuid = kVdi;
  d.virtual_size = 4 * kBlockSize;
  d.file = DiskFileName(kVdi);
  d.base = base;
  d.parent_point = parent;
  m.disks.push_back(d);
  return m;
}

void WritePoint(const Repository& repo, const VmLock& lock, const std::string& point, bool base,
                const std::string& parent) {
  auto w = PointWriter::Begin(repo, lock, kVm, point);
  REQUIRE(w.ok());
  auto d = (*w)->CreateDisk(kVdi, base ? FileKind::kBase : FileKind::kOverlay, 4 * kBlockSize);
  REQUIRE(d.ok());
  REQUIRE((*d)->AddData(base ? 0 : 1, Block(base ? 0 : 1).data()).ok());
  REQUIRE((*d)->Finish().ok());
  REQUIRE((*w)->WriteMetadata("metadata").ok());
  REQUIRE((*w)->Commit(OneDisk(point, base, parent)).ok());
}

}  // namespace

TEST_CASE_METHOD(TempRepository,
                 "Repository: a committed point is listed with its manifest and chain", "[repo]") {
  auto lock = VmLock::Acquire(*repo, kVm, "test");
  REQUIRE(lock.ok());
  WritePoint(*repo, *lock, "20260101T000000Z", true, "");
  WritePoint(*repo, *lock, "20260102T000000Z", false, "20260101T000000Z");
  auto points = repo->ListPoints(kVm);
  REQUIRE(points.ok());
  CHECK(*points == std::vector<std::string>{"20260101T000000Z", "20260102T000000Z"});
  auto chain = repo->DiskChain(kVm, "20260102T000000Z", kVdi);
  REQUIRE(chain.ok());
  CHECK(chain->size() == 2);
  struct stat st;
  REQUIRE(::stat(repo->PointPath(kVm, "20260101T000000Z").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
}

TEST_CASE_METHOD(TempRepository,
                 "Repository: an uncommitted point is invisible and cleaned up by the next lock",
                 "[repo]") {
  std::string temp;
  // A child process starts a point and dies without committing (as kill -9).
  pid_t pid = ::fork();
  if (pid == 0) {
    auto lock = VmLock::Acquire(*repo, kVm, "child");
    auto w = PointWriter::Begin(*repo, *lock, kVm, "20260101T000000Z");
    (void)(*w)->WriteMetadata("x");
    ::_exit(0);  // no destructors: the temporary and the lock stay behind
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  auto names = ListDir(VmDir(repo->path(), kVm));
  REQUIRE(names.ok());
  CHECK(std::count(names->begin(), names->end(), std::string(kLockFile)) == 1);
  auto points = repo->ListPoints(kVm);
  REQUIRE(points.ok());
  CHECK(points->empty());
  // The dead holder's lock is stale: taking it removes the temporary.
  auto lock = VmLock::Acquire(*repo, kVm, "test");
  REQUIRE(lock.ok());
  names = ListDir(VmDir(repo->path(), kVm));
  REQUIRE(names.ok());
  CHECK(*names == std::vector<std::string>{kLockFile});
}

TEST_CASE_METHOD(TempRepository, "VmLock: a live holder excludes others and is named", "[repo]") {
  auto first = VmLock::Acquire(*repo, kVm, "backup");
  REQUIRE(first.ok());
  auto second = VmLock::Acquire(*repo, kVm, "prune");
  REQUIRE_FALSE(second.ok());
  CHECK(second.status().code() == Status::Code::kBusy);
  CHECK(second.status().message().find("backup") != std::string::npos);
  CHECK(second.status().message().find(std::to_string(::getpid())) != std::string::npos);
}

TEST_CASE_METHOD(TempRepository, "VmLock: released on destruction", "[repo]") {
  {
    auto l = VmLock::Acquire(*repo, kVm, "a");
    REQUIRE(l.ok());
  }
  CHECK(VmLock::Acquire(*repo, kVm, "b").ok());
}

TEST_CASE("Repository: unknown format version is refused", "[repo]") {
  TempDir dir;
  REQUIRE(MakeDir(dir.Sub("r")).ok());
  REQUIRE(WriteNewFile(dir.Sub("r/config.json"), "{\"version\": 99}").ok());
  auto repo = Repository::Open(dir.Sub("r"), false);
  REQUIRE_FALSE(repo.ok());
  CHECK(repo.status().code() == Status::Code::kNotSupported);
}

TEST_CASE("config: content keys are BLAKE3, SHA-256 where the config predates them", "[repo]") {
  const RepoConfig fresh;
  CHECK(fresh.key == KeyAlgorithm::kBlake3);
  auto parsed = ParseConfig(EncodeConfig(fresh), "c");
  REQUIRE(parsed.ok());
  CHECK(parsed->key == KeyAlgorithm::kBlake3);
  CHECK(EncodeConfig(fresh).find("\"content_key\": \"blake3\"") != std::string::npos);
  const std::string old =
      R"({"format": "cbt-backup repository", "version": 3,
          "compression": {"algorithm": "zstd", "level": 3}})";
  auto before = ParseConfig(old, "c");
  REQUIRE(before.ok());
  CHECK(before->key == KeyAlgorithm::kSha256);
  // Rewritten (by the compression command), it says so.
  auto again = ParseConfig(EncodeConfig(*before), "c");
  REQUIRE(again.ok());
  CHECK(again->key == KeyAlgorithm::kSha256);
  const std::string other =
      R"({"version": 3, "compression": {"algorithm": "none"}, "content_key": "md5"})";
  CHECK(ParseConfig(other, "c").status().code() == Status::Code::kNotSupported);
  const std::string bad =
      R"({"version": 3, "compression": {"algorithm": "none"}, "content_key": 1})";
  CHECK(ParseConfig(bad, "c").status().code() == Status::Code::kCorruption);
}

TEST_CASE_METHOD(TempRepository, "Repository: a point cannot be committed twice", "[repo]") {
  auto lock = VmLock::Acquire(*repo, kVm, "test");
  REQUIRE(lock.ok());
  WritePoint(*repo, *lock, "20260101T000000Z", true, "");
  auto w = PointWriter::Begin(*repo, *lock, kVm, "20260101T000000Z");
  CHECK(w.status().code() == Status::Code::kExists);
}

TEST_CASE("Manifest: malformed manifests are corruption, not crashes", "[repo]") {
  CHECK(DecodeManifest("not json", "m").status().IsCorruption());
  CHECK(DecodeManifest("{\"format_version\": 1}", "m").status().IsCorruption());
  Manifest m = OneDisk("20260102T000000Z", false, "20260103T000000Z");  // parent in the future
  CHECK(DecodeManifest(EncodeManifest(m), "m").status().IsCorruption());
  Manifest ok = OneDisk("20260102T000000Z", false, "20260101T000000Z");
  auto back = DecodeManifest(EncodeManifest(ok), "m");
  REQUIRE(back.ok());
  CHECK(back->disks.at(0).parent_point == "20260101T000000Z");
}

TEST_CASE_METHOD(TempRepository, "VmLock: a holder killed with SIGKILL leaves no lock behind",
                 "[repo]") {
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    auto lock = VmLock::Acquire(*repo, kVm, "child");
    char c = lock.ok() ? 'y' : 'n';
    (void)!::write(ready[1], &c, 1);
    ::pause();
    ::_exit(0);
  }
  char c = 0;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  REQUIRE(c == 'y');
  auto busy = VmLock::Acquire(*repo, kVm, "test");
  CHECK(busy.status().code() == Status::Code::kBusy);
  CHECK(busy.status().message().find("child") != std::string::npos);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(VmLock::Acquire(*repo, kVm, "test").ok());
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST_CASE_METHOD(TempRepository, "PointWriter: a manifest readers would refuse is never committed",
                 "[repo]") {
  auto lock = VmLock::Acquire(*repo, kVm, "test");
  REQUIRE(lock.ok());
  auto w = PointWriter::Begin(*repo, *lock, kVm, "20260102T000000Z");
  REQUIRE(w.ok());
  auto d = (*w)->CreateDisk(kVdi, FileKind::kOverlay, 4 * kBlockSize);
  REQUIRE(d.ok());
  REQUIRE((*d)->Finish().ok());
  // The parent is not older than the point (a clock that went back).
  Status s = (*w)->Commit(OneDisk("20260102T000000Z", false, "20260103T000000Z"));
  CHECK_FALSE(s.ok());
  auto points = repo->ListPoints(kVm);
  REQUIRE(points.ok());
  CHECK(points->empty());
}

TEST_CASE("Manifest: numbers of the wrong kind are corruption, not undefined behaviour", "[repo]") {
  // Found by fuzz_manifest: 2626e56 where a size belongs.
  const std::string good = EncodeManifest(OneDisk("20260101T000000Z", true, ""));
  REQUIRE(DecodeManifest(good, "m").ok());
  for (const char* bad : {"2626e56", "-4", "1.5", "\"262144\"", "1e300"}) {
    CAPTURE(bad);
    std::string text = good;
    const std::string field = "\"virtual_size\": 262144";
    auto pos = text.find(field);
    REQUIRE(pos != std::string::npos);
    text.replace(pos, field.size(), std::string("\"virtual_size\": ") + bad);
    auto m = DecodeManifest(text, "m");
    REQUIRE_FALSE(m.ok());
    CHECK(m.status().IsCorruption());
  }
  std::string text = good;
  auto pos = text.find("\"format_version\": 1");
  REQUIRE(pos != std::string::npos);
  text.replace(pos, 19, "\"format_version\": 4294967297");
  auto m = DecodeManifest(text, "m");
  REQUIRE_FALSE(m.ok());
  CHECK(m.status().code() == Status::Code::kNotSupported);
}

namespace {

const std::string kOtherVdi = "bbbbbbbb-cccc-4ddd-8eee-ffffffffffff";

// Commits `point` holding a base of each disk in `vdis`, assembled by
// NewManifest and NewDiskRecord.
void WriteBases(const Repository& repo, const VmLock& lock, const std::string& point,
                const std::vector<std::string>& vdis, uint64_t size = 4 * kBlockSize) {
  auto w = PointWriter::Begin(repo, lock, kVm, point);
  REQUIRE(w.ok());
  REQUIRE((*w)->WriteMetadata("metadata").ok());
  Manifest m = NewManifest(kVm, "vm", point, "test");
  for (const auto& vdi : vdis) {
    auto d = (*w)->CreateDisk(vdi, FileKind::kBase, size);
    REQUIRE(d.ok());
    REQUIRE((*d)->AddData(0, Block(7).data()).ok());
    REQUIRE((*d)->Finish().ok());
    m.disks.push_back(NewDiskRecord(vdi, **d, "", "first"));
  }
  REQUIRE((*w)->Commit(m).ok());
}

}  // namespace

TEST_CASE_METHOD(TempRepository,
                 "Repository: the parent point of a disk is the newest earlier point holding it",
                 "[repo]") {
  auto lock = VmLock::Acquire(*repo, kVm, "test");
  REQUIRE(lock.ok());
  const auto kFail = UnreadableManifest::kFail;
  auto none = repo->NewestPointWithDisk(kVm, kVdi, "", kFail);
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());

  WriteBases(*repo, *lock, "20260101T000000Z", {kVdi}, 8 * kBlockSize);
  WriteBases(*repo, *lock, "20260102T000000Z", {kOtherVdi});
  WritePoint(*repo, *lock, "20260103T000000Z", true, "");

  auto newest = repo->NewestPointWithDisk(kVm, kVdi, "", kFail);
  REQUIRE(newest.ok());
  REQUIRE(newest->has_value());
  CHECK((*newest)->point == "20260103T000000Z");
  CHECK((*newest)->disk.vdi_uuid == kVdi);
  CHECK((*newest)->disk.virtual_size == 4 * kBlockSize);

  // Only points older than `before` count; another disk's point is passed.
  auto older = repo->NewestPointWithDisk(kVm, kVdi, "20260103T000000Z", kFail);
  REQUIRE(older.ok());
  REQUIRE(older->has_value());
  CHECK((*older)->point == "20260101T000000Z");
  CHECK((*older)->disk.virtual_size == 8 * kBlockSize);
  auto other = repo->NewestPointWithDisk(kVm, kOtherVdi, "", kFail);
  REQUIRE(other.ok());
  REQUIRE(other->has_value());
  CHECK((*other)->point == "20260102T000000Z");
  auto before_all = repo->NewestPointWithDisk(kVm, kVdi, "20260101T000000Z", kFail);
  REQUIRE(before_all.ok());
  CHECK_FALSE(before_all->has_value());

  // An unreadable manifest fails the search, or is passed over.
  REQUIRE(
      WriteFileAtomic(JoinPath(repo->PointPath(kVm, "20260103T000000Z"), kManifestFile), "not json")
          .ok());
  auto failed = repo->NewestPointWithDisk(kVm, kVdi, "", kFail);
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.status().IsCorruption());
  auto skipped = repo->NewestPointWithDisk(kVm, kVdi, "", UnreadableManifest::kSkip);
  REQUIRE(skipped.ok());
  REQUIRE(skipped->has_value());
  CHECK((*skipped)->point == "20260101T000000Z");

  CHECK(repo->NewestPointWithDisk("not-a-uuid", kVdi, "", UnreadableManifest::kSkip)
            .status()
            .code() == Status::Code::kInvalidArgument);
}

TEST_CASE_METHOD(TempRepository, "Manifest: records are assembled from the finished disk file",
                 "[repo]") {
  auto lock = VmLock::Acquire(*repo, kVm, "test");
  REQUIRE(lock.ok());
  WritePoint(*repo, *lock, "20260101T000000Z", true, "");

  auto w = PointWriter::Begin(*repo, *lock, kVm, "20260102T000000Z");
  REQUIRE(w.ok());
  REQUIRE((*w)->WriteMetadata("metadata").ok());
  const uint64_t size = 4 * kBlockSize;
  auto overlay = (*w)->CreateDisk(kVdi, FileKind::kOverlay, size);
  REQUIRE(overlay.ok());
  REQUIRE((*overlay)->AddData(1, Block(1).data()).ok());
  REQUIRE((*overlay)->AddData(3, Block(3).data()).ok());
  REQUIRE((*overlay)->AddZero(2).ok());
  REQUIRE((*overlay)->Finish().ok());
  auto base = (*w)->CreateDisk(kOtherVdi, FileKind::kBase, kBlockSize - 512);
  REQUIRE(base.ok());
  REQUIRE((*base)->Finish().ok());

  Manifest m = NewManifest(kVm, "web01", "20260102T000000Z", "import-image");
  CHECK(m.vm_uuid == kVm);
  CHECK(m.vm_name == "web01");
  CHECK(m.point == "20260102T000000Z");
  CHECK(m.source == "import-image");
  CHECK(m.created_by == std::string("cbt-backup ") + CBT_VERSION);
  CHECK(m.disks.empty());

  // An overlay records its parent and no reason, whatever it is given.
  DiskRecord o = NewDiskRecord(kVdi, **overlay, "20260101T000000Z", "ignored");
  CHECK(o.vdi_uuid == kVdi);
  CHECK(o.file == DiskFileName(kVdi));
  CHECK(o.virtual_size == size);
  CHECK_FALSE(o.base);
  CHECK(o.parent_point == "20260101T000000Z");
  CHECK(o.data_blocks == 2);
  CHECK(o.zero_blocks == 1);
  // The file holds references; the two new blocks (random: stored raw)
  // went to the block store.
  CHECK(o.stored_bytes == kHeaderSize + 3 * kPackedIndexEntrySize + 2 * kBlockSize);
  CHECK(o.reason.empty());
  CHECK(o.layers.empty());
  CHECK(o.name.empty());
  CHECK(o.snapshot_vdi_uuid.empty());
  CHECK(o.userdevice.empty());

  DiskRecord b = NewDiskRecord(kOtherVdi, **base, "", "first backup of this disk");
  CHECK(b.base);
  CHECK(b.virtual_size == kBlockSize - 512);
  CHECK(b.parent_point.empty());
  CHECK(b.reason == "first backup of this disk");
  CHECK(b.data_blocks == 0);
  CHECK(b.stored_bytes == kHeaderSize);

  m.disks = {o, b};
  REQUIRE((*w)->Commit(m).ok());
  auto back = repo->ReadManifest(kVm, "20260102T000000Z");
  REQUIRE(back.ok());
  CHECK(EncodeManifest(*back) == EncodeManifest(m));
  // Each record's stored bytes: its file, and the new blocks it stored.
  const uint64_t new_blocks[] = {2 * kBlockSize, 0};
  for (size_t i = 0; i < back->disks.size(); ++i) {
    const DiskRecord& d = back->disks[i];
    struct stat st;
    REQUIRE(::stat(JoinPath(repo->PointPath(kVm, "20260102T000000Z"), d.file).c_str(), &st) == 0);
    CHECK(static_cast<uint64_t>(st.st_size) + new_blocks[i] == d.stored_bytes);
  }
  auto chain = repo->DiskChain(kVm, "20260102T000000Z", kVdi);
  REQUIRE(chain.ok());
  CHECK(chain->size() == 2);
}
