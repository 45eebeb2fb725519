// SPDX-License-Identifier: Apache-2.0
#include "image/verify.h"

#include "repo/disk_file.h"
#include "repo/gc.h"
#include "repo/layout.h"
#include "util/file.h"

#include <algorithm>
#include <map>
#include <memory>
#include <set>

namespace cbt::image {

namespace {

// References against the packs' tables (see VerifyReport).
template <typename AddFn>
void CheckStore(const repo::Repository& repo, VerifyReport* report, AddFn&& add) {
  // Files that cannot be read were reported by the per-point checks.
  std::vector<std::string> unreadable;
  auto live = repo::CollectReferences(repo, &unreadable);
  if (!live.ok()) {
    add({"", "", "", -1, "references: " + live.status().message()});
    return;
  }
  auto packs = repo::ListPacks(repo);
  if (!packs.ok()) {
    add({"", "", "", -1, "packs: " + packs.status().message()});
    return;
  }
  report->store_checked = true;
  std::map<uint64_t, const repo::PackInfo*> by_id;
  for (const auto& p : *packs) by_id[p.id] = &p;
  for (const auto& [where, b] : *live) {
    auto it = by_id.find(where.first);
    std::string why;
    if (it == by_id.end()) {
      why = "pack " + repo::PackIdHex(where.first) + " is missing";
    } else if (!it->second->finished) {
      why = it->second->error;
    } else {
      const auto& table = it->second->table;
      auto rec =
          std::lower_bound(table.begin(), table.end(), where.second,
                           [](const repo::PackRecord& r, uint64_t off) { return r.offset < off; });
      if (rec == table.end() || rec->offset != where.second) {
        why = "pack " + repo::PackIdHex(where.first) + " has no block at offset " +
              std::to_string(where.second);
      } else if (rec->stored_size != b.stored_size || rec->checksum != b.checksum) {
        why = "pack " + repo::PackIdHex(where.first) + " holds another block at offset " +
              std::to_string(where.second);
      }
    }
    if (!why.empty()) {
      add({b.site.vm, b.site.point, b.site.file.substr(0, 36),
           static_cast<int64_t>(b.site.block * repo::kBlockSize),
           b.site.file + ": missing stored block: " + why});
      continue;
    }
    ++report->stored_blocks;
    report->stored_bytes += b.stored_size;
  }
  for (const auto& p : *packs) {
    for (const auto& r : p.table) {
      if (live->count({p.id, r.offset}) > 0) continue;
      auto released = repo::IsReleased(p, r);
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
