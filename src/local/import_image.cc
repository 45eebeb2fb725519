// SPDX-License-Identifier: Apache-2.0
#include "local/import_image.h"

#include "image/composed_image.h"
#include "image/image_import.h"
#include "repo/layout.h"
#include "util/file.h"

namespace cbt::local {

Result<ImageImportResult> ImportImage(const repo::Repository& repo, const ImageImportRequest& req) {
  if (!repo::IsUuid(req.vm)) return Status::InvalidArgument("'" + req.vm + "' is not a VM UUID");
  if (!repo::IsUuid(req.vdi)) {
    return Status::InvalidArgument("'" + req.vdi + "' is not a VDI UUID");
  }
  if (!repo::IsTimestamp(req.point)) {
    return Status::InvalidArgument("'" + req.point + "' is not a point name (YYYYMMDDTHHMMSSZ)");
  }
  CBT_ASSIGN_OR_RETURN(UniqueFd fd, OpenUserFile(req.image_path));
  CBT_ASSIGN_OR_RETURN(uint64_t size, FileSize(fd.get(), req.image_path));
  if (size == 0) return Status::InvalidArgument(req.image_path + " is empty");
  std::string metadata;
  if (!req.metadata_path.empty()) {
    CBT_ASSIGN_OR_RETURN(metadata, ReadUserFile(req.metadata_path));
  }

  CBT_ASSIGN_OR_RETURN(repo::VmLock lock, repo::VmLock::Acquire(repo, req.vm, "import-image"));
  CBT_ASSIGN_OR_RETURN(auto points, repo.ListPoints(req.vm));
  if (req.changed_blocks && !points.empty() && points.back() >= req.point) {
    return Status::InvalidArgument("with a changed-block list the new point must be newer than " +
                                   points.back());
  }

  ImageImportResult result;
  std::shared_ptr<const image::ComposedImage> parent;
  result.reason = req.full ? "--full" : "first point of this disk";
  if (!req.full) {
    CBT_ASSIGN_OR_RETURN(auto prev, repo.NewestPointWithDisk(req.vm, req.vdi, req.point,
                                                             repo::UnreadableManifest::kFail));
    if (prev && prev->disk.virtual_size != size) {
      result.reason = "virtual size changed since point " + prev->point;
    } else if (prev) {
      CBT_ASSIGN_OR_RETURN(parent, image::ComposedImage::Open(repo, req.vm, prev->point, req.vdi));
      result.parent_point = prev->point;
    }
  }
  result.base = parent == nullptr;
  if (!result.base) result.reason.clear();

  CBT_ASSIGN_OR_RETURN(auto writer, repo::PointWriter::Begin(repo, lock, req.vm, req.point));
  CBT_RETURN_IF_ERROR(writer->WriteMetadata(metadata));
  CBT_ASSIGN_OR_RETURN(
      auto w, writer->CreateDisk(
                  req.vdi, result.base ? repo::FileKind::kBase : repo::FileKind::kOverlay, size));
  if (!result.base && req.changed_blocks) {
    CBT_RETURN_IF_ERROR(
        image::WriteListedBlocks(fd.get(), req.image_path, size, *req.changed_blocks, w.get()));
  } else {
    CBT_RETURN_IF_ERROR(
        image::WriteDifferences(fd.get(), req.image_path, size, parent.get(), w.get()));
  }
  CBT_RETURN_IF_ERROR(w->Finish());

  repo::Manifest m = repo::NewManifest(req.vm, "", req.point, "import-image");
  m.disks.push_back(repo::NewDiskRecord(req.vdi, *w, result.parent_point, result.reason));
  result.data_blocks = w->data_blocks();
  result.zero_blocks = w->zero_blocks();
  result.stored_bytes = w->added_bytes();
  CBT_RETURN_IF_ERROR(writer->Commit(m));
  return result;
}

}  // namespace cbt::local
