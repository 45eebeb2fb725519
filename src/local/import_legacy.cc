// SPDX-License-Identifier: Apache-2.0
#include "local/import_legacy.h"

#include "image/composed_image.h"
#include "image/image_import.h"
#include "repo/layout.h"
#include "util/file.h"

#include <unistd.h>

#include <set>

namespace cbt::local {

namespace {

using image::ComposedImage;

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  while (!s.empty() && s.front() == ' ') s.erase(0, 1);
  return s;
}

struct LegacyDisk {
  std::string original;
  std::string data_path;
};

Result<std::vector<LegacyDisk>> ReadLegacyDisks(const std::string& point_dir) {
  std::string vdis = JoinPath(point_dir, "vdis");
  std::vector<LegacyDisk> disks;
  if (!IsDirectory(vdis)) return disks;
  CBT_ASSIGN_OR_RETURN(auto names, ListDir(vdis));
  std::set<std::string> seen;
  for (const auto& snap : names) {
    std::string dir = JoinPath(vdis, snap);
    if (!IsDirectory(dir)) continue;
    auto orig = ReadFile(JoinPath(dir, "original_uuid"));
    if (!orig.ok()) return orig.status().WithContext("legacy disk " + dir);
    std::string uuid = Trim(*orig);
    if (!repo::IsUuid(uuid)) {
      return Status::Corruption(dir + "/original_uuid does not hold a VDI UUID");
    }
    if (!seen.insert(uuid).second) {
      return Status::Corruption(point_dir + " holds two disks of VDI " + uuid);
    }
    disks.push_back({uuid, JoinPath(dir, "data")});
  }
  return disks;
}

Status ImportVm(const repo::Repository& repo, const std::string& source_vm_dir,
                const std::string& vm, const ImportOptions& options,
                std::vector<ImportedPoint>* out) {
  auto log = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  CBT_ASSIGN_OR_RETURN(auto names, ListDir(source_vm_dir));
  CBT_ASSIGN_OR_RETURN(repo::VmLock lock, repo::VmLock::Acquire(repo, vm, "import-legacy"));
  auto existing = repo.ListPoints(vm);
  if (!existing.ok()) return existing.status();
  std::set<std::string> have(existing->begin(), existing->end());

  for (const auto& ts : names) {
    std::string pdir = JoinPath(source_vm_dir, ts);
    if (!repo::IsTimestamp(ts) || !IsDirectory(pdir)) continue;
    ImportedPoint rec{vm, ts, false, "", {}};
    if (have.count(ts)) {
      rec.skipped = true;
      rec.note = "already in the repository";
      out->push_back(std::move(rec));
      continue;
    }
    auto metadata = ReadFile(JoinPath(pdir, repo::kMetadataFile));
    if (!metadata.ok()) {
      rec.skipped = true;
      rec.note = "incomplete legacy point (no VM_metadata)";
      log("skipping " + vm + "/" + ts + ": " + rec.note);
      out->push_back(std::move(rec));
      continue;
    }
    CBT_ASSIGN_OR_RETURN(auto disks, ReadLegacyDisks(pdir));
    CBT_ASSIGN_OR_RETURN(auto writer, repo::PointWriter::Begin(repo, lock, vm, ts));
    CBT_RETURN_IF_ERROR(writer->WriteMetadata(*metadata));

    repo::Manifest m = repo::NewManifest(vm, "", ts, "import-legacy");
    for (const auto& d : disks) {
      CBT_ASSIGN_OR_RETURN(UniqueFd fd, OpenRead(d.data_path));
      CBT_ASSIGN_OR_RETURN(uint64_t size, FileSize(fd.get(), d.data_path));

      // The parent is the newest earlier point holding this VDI at this size.
      std::shared_ptr<const ComposedImage> parent;
      std::string parent_point;
      std::string reason = "first point of this disk";
      CBT_ASSIGN_OR_RETURN(
          auto prev, repo.NewestPointWithDisk(vm, d.original, ts, repo::UnreadableManifest::kFail));
      if (prev && prev->disk.virtual_size != size) {
        reason = "virtual size changed since point " + prev->point;
      } else if (prev) {
        CBT_ASSIGN_OR_RETURN(parent, ComposedImage::Open(repo, vm, prev->point, d.original));
        parent_point = prev->point;
      }
      auto kind = parent ? repo::FileKind::kOverlay : repo::FileKind::kBase;
      CBT_ASSIGN_OR_RETURN(auto w, writer->CreateDisk(d.original, kind, size));
      CBT_RETURN_IF_ERROR(
          image::WriteDifferences(fd.get(), d.data_path, size, parent.get(), w.get()));
      CBT_RETURN_IF_ERROR(w->Finish());

      repo::DiskRecord r = repo::NewDiskRecord(d.original, *w, parent_point, reason);
      r.snapshot_vdi_uuid = d.data_path.substr(0, d.data_path.size() - 5);
      r.snapshot_vdi_uuid = r.snapshot_vdi_uuid.substr(r.snapshot_vdi_uuid.find_last_of('/') + 1);
      rec.disks.push_back({r.vdi_uuid, r.base, size, r.data_blocks, r.zero_blocks, r.stored_bytes});
      m.disks.push_back(std::move(r));
    }
    CBT_RETURN_IF_ERROR(writer->Commit(m));
    have.insert(ts);
    log("imported " + vm + "/" + ts + " (" + std::to_string(m.disks.size()) + " disks)");
    out->push_back(std::move(rec));
  }
  return Status::Ok();
}

}  // namespace

Status ImportLegacy(const repo::Repository& repo, const std::string& source,
                    const ImportOptions& options, std::vector<ImportedPoint>* out) {
  if (!IsDirectory(source)) return Status::NotFound("legacy repository " + source + " not found");
  CBT_ASSIGN_OR_RETURN(auto names, ListDir(source));
  bool found = false;
  for (const auto& vm : names) {
    if (!repo::IsUuid(vm) || !IsDirectory(JoinPath(source, vm))) continue;
    if (!options.only_vm.empty() && vm != options.only_vm) continue;
    found = true;
    CBT_RETURN_IF_ERROR(ImportVm(repo, JoinPath(source, vm), vm, options, out));
  }
  if (!found) {
    return Status::NotFound(options.only_vm.empty()
                                ? source + " holds no VM directories (<vm-uuid>/<timestamp>/)"
                                : "VM " + options.only_vm + " not found in " + source);
  }
  return Status::Ok();
}

}  // namespace cbt::local
