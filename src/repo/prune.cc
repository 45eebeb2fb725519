// SPDX-License-Identifier: Apache-2.0
//
// Design notes: deleting points.
//
// Deleting point P of a VM, for each of P's disks:
//   1. every later point C whose disk continues at P (parent_point == P)
//      gets hard links, in its own directory, to P's own file of the disk and
//      to P's layers, named <vdi>.<origin>.cbd;
//   2. C's manifest is rewritten (write-temporary-and-rename) so the disk
//      lists those files as layers below its own and continues where P's
//      disk continued.  C now reads exactly what it read before, through the
//      same bytes, without P;
//   3. P's directory is renamed to .del-<P> (P disappears at once for every
//      reader), then removed;
// and when all points of the journal are gone:
//   4. in each point that took layers over, a layer's DATA blocks that a
//      newer file of the same point covers can no longer be read by any
//      point: they are punched out (FALLOC_FL_PUNCH_HOLE), if the file has no
//      other link.  Nothing is copied.
//
// Crash safety.  Before step 1 the list of points is written to
// REPO/<vm>/journal.json; it is removed after step 4.  Every step is
// idempotent (a link that exists is kept, a manifest already rewritten no
// longer names P, a renamed directory is found by its .del- name), so the
// next lock holder simply runs the journal again.  Every state between two
// steps is a valid repository in which each remaining point reads back the
// same bytes, so readers that take no lock (cbtfs, verify) are never shown
// wrong data: a reader that opened P or a chain through P before step 3
// keeps its descriptors; only P's own blocks punched in step 4 can then fail
// their checksum (an I/O error, never wrong bytes).
#include "repo/prune.h"

#include "repo/layout.h"
#include "util/file.h"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <map>
#include <set>

#ifndef FALLOC_FL_PUNCH_HOLE
#include <linux/falloc.h>
#endif

namespace cbt::repo {

namespace {

// The bucket a point falls in for a rule: a prefix of its UTC name, or for
// weeks the day number of the week's Thursday (which names an ISO week
// uniquely: 1970-01-01 was a Thursday).
std::string Bucket(const std::string& point, int prefix) {
  if (prefix > 0) return point.substr(0, static_cast<size_t>(prefix));
  auto t = ParseTimestamp(point);
  const int64_t day = (t ? static_cast<int64_t>(*t) : 0) / 86400;
  const int64_t monday_based = ((day + 3) % 7 + 7) % 7;
  return std::to_string(day - monday_based + 3);
}

}  // namespace

std::vector<KeepDecision> ApplyKeepPolicy(std::vector<std::string> points,
                                          const KeepPolicy& policy) {
  std::sort(points.rbegin(), points.rend());
  points.erase(std::unique(points.begin(), points.end()), points.end());
  struct Rule {
    const char* name;
    int count;
    int prefix;  // of "YYYYMMDDTHHMMSSZ"; 0 for ISO weeks
    std::string last_bucket;
  };
  std::vector<Rule> rules = {{"last", policy.last, 16, ""},      {"hourly", policy.hourly, 11, ""},
                             {"daily", policy.daily, 8, ""},     {"weekly", policy.weekly, 0, ""},
                             {"monthly", policy.monthly, 6, ""}, {"yearly", policy.yearly, 4, ""}};
  std::vector<KeepDecision> out;
  for (size_t i = 0; i < points.size(); ++i) {
    KeepDecision d{points[i], {}};
    if (i == 0) d.reasons.push_back("newest");
    for (auto& r : rules) {
      if (r.count <= 0) continue;
      std::string bucket = Bucket(points[i], r.prefix);
      if (bucket == r.last_bucket) continue;
      r.last_bucket = bucket;
      --r.count;
      d.reasons.push_back(r.name);
    }
    out.push_back(std::move(d));
  }
  return out;
}

namespace {

struct Run {
  const Repository& repo;
  const std::string& vm;
  const DeleteOptions& options;
  DeleteStats* stats;
  std::string vm_dir;

  // False if a test hook asks to stop here.
  bool Step(const std::string& name) const {
    return !options.after_step || options.after_step(name);
  }
};

Status Stopped() { return Status::Aborted("delete stopped by request"); }

// Makes `dst` a hard link of `src`, keeping one that already is.
Status LinkSame(const std::string& src, const std::string& dst) {
  struct stat s, d;
  if (::stat(src.c_str(), &s) != 0) return Status::FromErrno(errno, src);
  if (::stat(dst.c_str(), &d) == 0) {
    if (d.st_ino == s.st_ino && d.st_dev == s.st_dev) return Status::Ok();
    // Left by an attempt that died before its manifest named it.
    if (::unlink(dst.c_str()) != 0) return Status::FromErrno(errno, dst);
  }
  if (::link(src.c_str(), dst.c_str()) != 0) return Status::FromErrno(errno, dst);
  return Status::Ok();
}

// Steps 1-3 for one point; a no-op for a point already removed.
Status DeleteOne(Run& run, const std::string& p) {
  const std::string pdir = PointDir(run.repo.path(), run.vm, p);
  const std::string ddir = JoinPath(run.vm_dir, DeletingDirName(p));
  if (IsRealDirectory(pdir)) {
    CBT_ASSIGN_OR_RETURN(Manifest mp, run.repo.ReadManifest(run.vm, p));
    CBT_ASSIGN_OR_RETURN(auto points, run.repo.ListPoints(run.vm));
    for (const auto& q : points) {
      if (q <= p) continue;
      // A later point that cannot be read might depend on P: stop rather
      // than break it.
      CBT_ASSIGN_OR_RETURN(Manifest mq, run.repo.ReadManifest(run.vm, q));
      const std::string qdir = PointDir(run.repo.path(), run.vm, q);
      bool changed = false;
      for (auto& dq : mq.disks) {
        if (dq.base || dq.parent_point != p) continue;
        const DiskRecord* dp = mp.FindDisk(dq.vdi_uuid);
        if (dp == nullptr) {
          return Status::Corruption(JoinPath(qdir, kManifestFile) + ": disk " + dq.vdi_uuid +
                                    " continues at point " + p + ", which does not hold it");
        }
        // P's own file becomes a layer named after P; P's layers keep
        // their names.
        std::vector<Layer> taken = {{LayerFileName(dq.vdi_uuid, p), p}};
        taken.insert(taken.end(), dp->layers.begin(), dp->layers.end());
        const std::vector<std::string> sources = dp->Files();
        for (size_t i = 0; i < taken.size(); ++i) {
          CBT_RETURN_IF_ERROR(LinkSame(JoinPath(pdir, sources[i]), JoinPath(qdir, taken[i].file)));
          ++run.stats->layers_moved;
        }
        dq.layers.insert(dq.layers.end(), taken.begin(), taken.end());
        dq.base = dp->base;
        dq.parent_point = dp->parent_point;
        changed = true;
      }
      if (!changed) continue;
      CBT_RETURN_IF_ERROR(FsyncDir(qdir));
      if (!run.Step("link " + q)) return Stopped();
      const std::string text = EncodeManifest(mq);
      CBT_RETURN_IF_ERROR(DecodeManifest(text, "rewritten manifest").status());
      CBT_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(qdir, kManifestFile), text));
      if (!run.Step("manifest " + q)) return Stopped();
    }
    if (::rename(pdir.c_str(), ddir.c_str()) != 0) return Status::FromErrno(errno, pdir);
    CBT_RETURN_IF_ERROR(FsyncDir(run.vm_dir));
    if (!run.Step("hide " + p)) return Stopped();
  }
  if (IsRealDirectory(ddir)) {
    CBT_RETURN_IF_ERROR(RemoveTree(ddir));
    CBT_RETURN_IF_ERROR(FsyncDir(run.vm_dir));
    if (!run.Step("remove " + p)) return Stopped();
  }
  return Status::Ok();
}

uint64_t AllocatedBytes(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
}

// Step 4 for one disk of one point.
Status PunchDeadBlocks(Run& run, const std::string& qdir, const DiskRecord& d) {
  std::vector<bool> covered(BlockCount(d.virtual_size), false);
  for (const auto& name : d.Files()) {
    const std::string path = JoinPath(qdir, name);
    CBT_ASSIGN_OR_RETURN(auto file, DiskFile::Open(path));
    std::vector<uint64_t> dead;
    for (const auto& e : file->entries()) {
      if (e.block >= covered.size()) return Status::Corruption(path + ": block out of range");
      if (e.kind == EntryKind::kData && covered[e.block]) dead.push_back(e.offset);
    }
    for (const auto& e : file->entries()) covered[e.block] = true;
    // A version-2 file holds references, not blocks: the stored blocks its
    // dead entries name are released by garbage collection (gc.h), which
    // counts only the entries a point can read.
    if (dead.empty() || file->packed()) continue;
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return Status::FromErrno(errno, path);
    UniqueFd owner(fd);
    struct stat st;
    if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, path);
    // Another point links the same file (a chain that forked): its blocks
    // may still be live there.
    if (st.st_nlink != 1) continue;
    const uint64_t before = AllocatedBytes(fd);
    std::sort(dead.begin(), dead.end());
    for (size_t j = 0; j < dead.size();) {
      size_t k = j + 1;
      while (k < dead.size() && dead[k] == dead[k - 1] + kBlockSize) ++k;
      const uint64_t len = (k - j) * uint64_t{kBlockSize};
      if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(dead[j]),
                      static_cast<off_t>(len)) != 0) {
        // A filesystem without hole punching keeps the blocks: correct, only
        // larger.
        if (errno == EOPNOTSUPP) break;
        return Status::FromErrno(errno, path);
      }
      j = k;
    }
    CBT_RETURN_IF_ERROR(Fsync(fd, path));
    run.stats->blocks_released += dead.size();
    const uint64_t after = AllocatedBytes(fd);
    if (before > after) run.stats->bytes_released += before - after;
  }
  return Status::Ok();
}

// Runs the journal for `points` (sorted): idempotent.  `recovering`: the
// journal was left by a process that died, which may also have left
// manifest temporaries in point directories.
Status RunJournal(Run& run, const std::vector<std::string>& points, bool recovering) {
  CBT_ASSIGN_OR_RETURN(auto names, ListDir(run.vm_dir));
  for (const auto& n : names) {
    if (!recovering) break;
    // Manifest temporaries of a rewrite that died (WriteFileAtomic's names).
    if (!IsTimestamp(n)) continue;
    CBT_ASSIGN_OR_RETURN(auto files, ListDir(JoinPath(run.vm_dir, n)));
    for (const auto& f : files) {
      if (f.rfind(std::string(kManifestFile) + ".tmp.", 0) == 0) {
        ::unlink(JoinPath(JoinPath(run.vm_dir, n), f).c_str());
      }
    }
  }
  for (const auto& p : points) {
    CBT_RETURN_IF_ERROR(DeleteOne(run, p));
    run.stats->deleted.push_back(p);
  }
  const std::set<std::string> gone(points.begin(), points.end());
  CBT_ASSIGN_OR_RETURN(auto remaining, run.repo.ListPoints(run.vm));
  for (const auto& q : remaining) {
    CBT_ASSIGN_OR_RETURN(Manifest mq, run.repo.ReadManifest(run.vm, q));
    for (const auto& d : mq.disks) {
      bool touched = std::any_of(d.layers.begin(), d.layers.end(),
                                 [&gone](const Layer& l) { return gone.count(l.origin) > 0; });
      if (touched) {
        CBT_RETURN_IF_ERROR(PunchDeadBlocks(run, PointDir(run.repo.path(), run.vm, q), d));
      }
    }
  }
  if (!run.Step("punch")) return Stopped();
  const std::string journal = JoinPath(run.vm_dir, kJournalFile);
  if (::unlink(journal.c_str()) != 0 && errno != ENOENT) return Status::FromErrno(errno, journal);
  return FsyncDir(run.vm_dir);
}

Result<std::vector<std::string>> ReadJournal(const std::string& path) {
  CBT_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  auto j = nlohmann::json::parse(text, nullptr, false);
  std::vector<std::string> points;
  if (j.is_object() && j.contains("delete") && j["delete"].is_array() && j.contains("version") &&
      j["version"].is_number_unsigned() && j["version"].get<uint64_t>() == 1) {
    for (const auto& p : j["delete"]) {
      if (!p.is_string() || !IsTimestamp(p.get<std::string>())) {
        points.clear();
        break;
      }
      points.push_back(p.get<std::string>());
    }
  }
  if (points.empty()) {
    return Status::Corruption(path +
                              ": the journal of an interrupted delete is damaged; repair or "
                              "remove it by hand (see docs/FORMAT.md, \"Deleting points\")");
  }
  std::sort(points.begin(), points.end());
  return points;
}

}  // namespace

Result<DeleteStats> DeletePoints(const Repository& repo, const VmLock& lock, const std::string& vm,
                                 const std::vector<std::string>& points,
                                 const DeleteOptions& options) {
  DeleteStats stats;
  std::vector<std::string> sorted = points;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  if (sorted.empty()) return stats;
  for (const auto& p : sorted) {
    CBT_ASSIGN_OR_RETURN(Manifest m, repo.ReadManifest(vm, p));
    for (const auto& d : m.disks) {
      if (!d.snapshot_vdi_uuid.empty()) stats.released_snapshots.push_back(d.snapshot_vdi_uuid);
    }
  }
  if (repo.remote()) {
    // Object Lock: nothing retained is removed, nor half of a delete done.
    for (const auto& p : sorted) {
      CBT_ASSIGN_OR_RETURN(std::string until, repo.remote()->RetainedUntil(vm, p));
      if (!until.empty()) {
        return Status::Busy("point " + p + " of VM " + vm +
                            " is retained by S3 Object Lock until " + until +
                            "; it can be deleted after that");
      }
    }
  }
  // Every later point's manifest is read during the delete; one that cannot
  // be read would stop it half way, so refuse now, before anything changes.
  CBT_ASSIGN_OR_RETURN(auto all, repo.ListPoints(vm));
  for (const auto& q : all) {
    if (q > sorted.front()) CBT_RETURN_IF_ERROR(repo.ReadManifest(vm, q).status());
  }
  Run run{repo, vm, options, &stats, VmDir(repo.path(), vm)};
  nlohmann::json j = {{"version", 1},
                      {"operation", "delete"},
                      {"delete", sorted},
                      {"started", FormatTimestamp(std::time(nullptr))}};
  CBT_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(run.vm_dir, kJournalFile), j.dump(2) + "\n"));
  if (!run.Step("journal")) return Stopped();
  CBT_RETURN_IF_ERROR(RunJournal(run, sorted, /*recovering=*/false));
  if (repo.remote()) {
    // The store follows the working copy: new layers and manifests first,
    // then the removed points (Remote::PublishVm).  A crash before this
    // leaves the store as it was, and the next sync brings the points back.
    CBT_RETURN_IF_ERROR(lock.Check());
    CBT_RETURN_IF_ERROR(repo.remote()->PublishVm(repo.path(), vm));
  }
  return stats;
}

Status FinishInterruptedDelete(const Repository& repo, const std::string& vm) {
  const std::string vm_dir = VmDir(repo.path(), vm);
  const std::string journal = JoinPath(vm_dir, kJournalFile);
  if (!PathExists(journal)) return Status::Ok();
  CBT_ASSIGN_OR_RETURN(auto points, ReadJournal(journal));
  DeleteStats stats;
  DeleteOptions options;
  Run run{repo, vm, options, &stats, vm_dir};
  Status s = RunJournal(run, points, /*recovering=*/true);
  if (!s.ok()) return s.WithContext("finishing the interrupted delete in " + journal);
  return Status::Ok();
}

}  // namespace cbt::repo
