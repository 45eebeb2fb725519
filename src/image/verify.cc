// SPDX-License-Identifier: Apache-2.0
#include "image/verify.h"

#include "repo/block_store.h"
#include "repo/disk_file.h"
#include "repo/gc.h"
#include "repo/layout.h"
#include "util/file.h"

#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>

namespace cbt::image {

namespace {

// The packs' tables, read once per pack: where a reference must land.
class PackTables {
 public:
  explicit PackTables(const repo::Repository& repo) : repo_(repo) {}
  // Why `e` (a DATA entry of a version-2 file) names no block of a
  // finished pack, or empty if it does.
  std::string Check(const repo::IndexEntry& e) {
    auto it = tables_.find(e.pack);
    if (it == tables_.end()) {
      Table t;
      auto pack = repo_.packs()->Get(e.pack);
      auto table =
          pack.ok() ? (*pack)->Table() : Result<std::vector<repo::PackRecord>>(pack.status());
      if (table.ok()) {
        t.records = std::move(*table);
      } else {
        t.error = table.status().IsNotFound() ? "pack " + repo::PackIdHex(e.pack) + " is missing"
                                              : table.status().message();
      }
      it = tables_.emplace(e.pack, std::move(t)).first;
    }
    const Table& t = it->second;
    if (!t.error.empty()) return t.error;
    const repo::PackRecord* rec = repo::FindRecord(t.records, e.offset);
    if (rec == nullptr) {
      return "pack " + repo::PackIdHex(e.pack) + " has no block at offset " +
             std::to_string(e.offset);
    }
    if (rec->stored_size != e.stored_size || rec->checksum != e.checksum) {
      return "pack " + repo::PackIdHex(e.pack) + " holds another block at offset " +
             std::to_string(e.offset);
    }
    return "";
  }

 private:
  struct Table {
    std::vector<repo::PackRecord> records;
    std::string error;
  };
  const repo::Repository& repo_;
  std::map<uint64_t, Table> tables_;
};

// Why object `key` of a repository on an object store with Object Lock is
// not protected by it, or "" if it is (retained, in any mode).
std::string NotLocked(const repo::Repository& repo, const std::string& key) {
  auto head = repo.remote()->client().Head(key);
  const std::string url = repo.location() + "/" + key;
  if (!head.ok()) return url + ": " + head.status().message();
  if (!head->has_value()) return url + " is missing";
  if ((*head)->lock_mode.empty() || (*head)->retain_until.empty()) {
    return url + " should be locked (S3 Object Lock) but is not";
  }
  return "";
}

// The store as a whole (see VerifyReport): index files, and the stored
// blocks no point reads.
template <typename AddFn>
void CheckStore(const repo::Repository& repo, VerifyReport* report, AddFn&& add) {
  auto packs = repo::ListPacks(repo);
  if (!packs.ok()) {
    add({"", "", "", -1, "packs: " + packs.status().message()});
    return;
  }
  std::map<std::pair<uint64_t, uint64_t>, const repo::PackRecord*> by_place;
  if (repo.remote() && repo.remote()->retention_days() > 0) {
    for (const auto& p : *packs) {
      const std::string why = NotLocked(repo, repo::PackKey(p.id));
      if (!why.empty()) add({"", "", "", -1, why});
    }
  }
  for (const auto& p : *packs) {
    for (const auto& r : p.table) by_place[{p.id, r.offset}] = &r;
  }
  // Every index file must parse, and name blocks the packs hold: a writer
  // trusts what it finds there.
  const std::string index_dir = JoinPath(repo.path(), repo::kIndexDir);
  // On an object store, the index files it holds (the working copy may
  // keep one of a writer that died before publishing it).
  std::optional<std::set<std::string>> published;
  if (repo.remote()) {
    auto listed = repo.remote()->client().List(std::string(repo::kIndexDir) + "/");
    if (!listed.ok()) {
      add({"", "", "", -1, "index files: " + listed.status().message()});
      return;
    }
    published.emplace();
    for (const auto& o : *listed) published->insert(o.key.substr(o.key.rfind('/') + 1));
  }
  if (PathExists(index_dir)) {
    auto names = ListDir(index_dir);
    for (const auto& n : names.ok() ? *names : std::vector<std::string>{}) {
      uint64_t id = 0;
      if (!repo::ParseStoreFileName(n, ".idx", &id)) continue;
      if (published && published->count(n) == 0) continue;
      const std::string path = JoinPath(index_dir, n);
      auto bytes = repo::ReadIndexFile(path);
      auto records = bytes.ok() ? repo::ParseIndex(*bytes, path)
                                : Result<std::vector<repo::IndexRecord>>(bytes.status());
      if (!records.ok()) {
        add({"", "", "", -1, records.status().message()});
        continue;
      }
      uint64_t wrong = 0;
      for (const auto& r : *records) {
        auto it = by_place.find({r.ref.pack, r.ref.offset});
        if (it == by_place.end() || it->second->key != r.key ||
            it->second->stored_size != r.ref.stored_size ||
            it->second->checksum != r.ref.checksum) {
          ++wrong;
        }
      }
      if (wrong > 0) {
        add({"", "", "", -1,
             path + ": " + std::to_string(wrong) + " record(s) name blocks no pack holds"});
      }
    }
  }
  std::vector<std::string> unreadable;
  auto live = repo::CollectReferences(repo, &unreadable);
  if (!live.ok()) {
    add({"", "", "", -1, "references: " + live.status().message()});
    return;
  }
  report->store_checked = true;
  for (const auto& [where, b] : *live) {
    if (by_place.count(where) == 0) continue;  // reported for its point
    ++report->stored_blocks;
    report->stored_bytes += b.stored_size;
  }
  // With a disk file that cannot be read, what is unreferenced is unknown.
  if (!unreadable.empty()) return;
  for (const auto& p : *packs) {
    UniqueFd fd;
    for (const auto& r : p.table) {
      if (live->count({p.id, r.offset}) > 0) continue;
      auto released = repo::IsReleased(p, r, &fd);
      if (released.ok() && *released) continue;
      ++report->unreferenced_blocks;
      report->unreferenced_bytes += r.stored_size;
    }
    if (!p.finished && !std::any_of(live->begin(), live->end(),
                                    [&p](const auto& kv) { return kv.first.first == p.id; })) {
      // A pack its writer never finished: all of it is garbage.
      ++report->unreferenced_blocks;
      report->unreferenced_bytes += p.allocated;
    }
  }
}

}  // namespace

Status VerifyRepository(const repo::Repository& repo, const std::string& vm,
                        const std::string& point, VerifyReport* report,
                        const std::function<void(const VerifyProblem&)>& on_problem) {
  auto add = [&](VerifyProblem p) {
    if (on_problem) on_problem(p);
    report->problems.push_back(std::move(p));
  };
  std::vector<std::string> vms;
  if (vm.empty()) {
    CBT_ASSIGN_OR_RETURN(vms, repo.ListVms());
  } else {
    vms.push_back(vm);
  }
  std::unique_ptr<char[]> buf(new char[repo::kBlockSize]);
  PackTables tables(repo);
  for (const auto& v : vms) {
    CBT_ASSIGN_OR_RETURN(auto points, repo.ListPoints(v));
    if (!point.empty()) {
      if (std::find(points.begin(), points.end(), point) == points.end()) {
        return Status::NotFound("VM " + v + " has no point " + point);
      }
      // A point reads through its chain: check the points it is built on
      // too (each file once).
      std::set<std::string> needed = {point};
      auto m = repo.ReadManifest(v, point);
      if (m.ok()) {
        for (const auto& d : m->disks) {
          auto chain = repo.DiskChain(v, point, d.vdi_uuid);
          if (chain.ok()) {
            for (const auto& cf : *chain) needed.insert(cf.point);
          }
        }
      }
      points.assign(needed.begin(), needed.end());
    }
    for (const auto& p : points) {
      ++report->points;
      auto m = repo.ReadManifest(v, p);
      if (!m.ok()) {
        add({v, p, "", -1, m.status().message()});
        continue;
      }
      if (!PathExists(JoinPath(repo.PointPath(v, p), repo::kMetadataFile))) {
        add({v, p, "", -1, "VM metadata file is missing"});
      }
      if (repo.remote() && repo.remote()->retention_days() > 0) {
        // Object Lock is on: every object of the point must be retained.
        auto names = ListDir(repo.PointPath(v, p));
        for (const auto& n : names.ok() ? *names : std::vector<std::string>{}) {
          const std::string why = NotLocked(repo, v + "/" + p + "/" + n);
          if (!why.empty()) add({v, p, "", -1, why});
        }
      }
      for (const auto& d : m->disks) {
        ++report->disks;
        auto chain = repo.DiskChain(v, p, d.vdi_uuid);
        if (!chain.ok()) add({v, p, d.vdi_uuid, -1, chain.status().message()});
        // The point's own file, then its layers: a layer's blocks that a
        // newer file of the same point covers are dead (a delete may have
        // punched them out, see docs/FORMAT.md) and are not checked.
        const std::vector<std::string> names = d.Files();
        std::vector<bool> covered(repo::BlockCount(d.virtual_size), false);
        for (size_t i = 0; i < names.size(); ++i) {
          const std::string path = JoinPath(repo.PointPath(v, p), names[i]);
          auto file = repo.OpenDiskFile(path);
          if (!file.ok()) {
            add({v, p, d.vdi_uuid, -1, file.status().message()});
            continue;
          }
          const bool lowest = i + 1 == names.size();
          const bool want_base = lowest && d.base;
          if ((*file)->virtual_size() != d.virtual_size ||
              ((*file)->kind() == repo::FileKind::kBase) != want_base) {
            add({v, p, d.vdi_uuid, -1, path + ": disk file does not match its manifest record"});
            continue;
          }
          for (const auto& e : (*file)->entries()) {
            if (e.kind != repo::EntryKind::kData || covered[e.block]) continue;
            ++report->blocks_checked;
            report->bytes_checked += repo::kBlockSize;
            if ((*file)->packed()) {
              // Where the reference lands: a block of a finished pack's
              // table, not merely bytes that happen to decode.
              const std::string why = tables.Check(e);
              if (!why.empty()) {
                add({v, p, d.vdi_uuid, static_cast<int64_t>(e.block * repo::kBlockSize),
                     path + ": missing stored block: " + why});
                continue;
              }
            }
            Status s = (*file)->ReadBlock(e, buf.get());
            if (!s.ok()) {
              add({v, p, d.vdi_uuid, static_cast<int64_t>(e.block * repo::kBlockSize),
                   !s.IsCorruption()   ? s.message()
                   : (*file)->packed() ? path + ": " + s.message()
                                       : path + ": stored block checksum mismatch"});
            }
          }
          for (const auto& e : (*file)->entries()) covered[e.block] = true;
        }
      }
    }
  }
  if (vm.empty() && point.empty()) CheckStore(repo, report, add);
  return Status::Ok();
}

}  // namespace cbt::image
