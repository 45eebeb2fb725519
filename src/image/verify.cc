// SPDX-License-Identifier: Apache-2.0
#include "image/verify.h"

#include "repo/disk_file.h"
#include "repo/layout.h"
#include "util/file.h"

#include <algorithm>
#include <memory>
#include <set>

namespace cbt::image {

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
          auto file = repo::DiskFile::Open(path);
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
                   s.IsCorruption() ? path + ": stored block checksum mismatch" : s.message()});
            }
          }
          for (const auto& e : (*file)->entries()) covered[e.block] = true;
        }
      }
    }
  }
  return Status::Ok();
}

}  // namespace cbt::image
