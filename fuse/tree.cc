// SPDX-License-Identifier: Apache-2.0
//
// Filesystem (tree.h): path resolution straight from the repository
// directory, and the byte-bounded caches of manifests, images and volume
// views, with what each entry is charged.
#include "tree.h"

#include "repo/disk_file.h"
#include "repo/layout.h"
#include "util/file.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <vector>

namespace cbt::cbtfs {

namespace {

using cbt::image::ComposedImage;

// Memory the caches may keep, by what they hold: an open image costs 8
// bytes per 64 KiB block of the disk plus 32 per stored block of each file
// of its chain, so a count of images would not bound memory for very large
// disks.  An entry larger than its budget is still used, just not kept.
constexpr size_t kImageCacheBytes = 256u << 20;
constexpr size_t kViewCacheBytes = 256u << 20;
constexpr size_t kManifestCacheBytes = 16u << 20;

size_t ManifestBytes(const cbt::repo::Manifest& m) {
  size_t bytes = sizeof m + m.vm_name.size() + 256;
  for (const auto& d : m.disks) bytes += sizeof d + d.name.size() + d.layers.size() * 128;
  return bytes;
}

// The cache key of a point (or of one disk of it, if `vdi` is not empty):
// its names and the inode of its manifest, which a rewrite changes.
Result<std::string> CacheKey(const cbt::repo::Repository& repo, const std::string& vm,
                             const std::string& point, const std::string& vdi = "") {
  struct stat st;
  const std::string file = cbt::JoinPath(repo.PointPath(vm, point), cbt::repo::kManifestFile);
  if (::stat(file.c_str(), &st) != 0) return Status::FromErrno(errno, file);
  std::string key = vm + "/" + point;
  if (!vdi.empty()) key += "/" + vdi;
  return key + "@" + std::to_string(st.st_ino);
}

}  // namespace

Filesystem::Filesystem(cbt::repo::Repository repo)
    : repo_(std::move(repo)),
      manifests_(kManifestCacheBytes),
      images_(kImageCacheBytes),
      views_(kViewCacheBytes) {}

Node Filesystem::Resolve(const char* path) const {
  std::vector<std::string> parts;
  std::string cur;
  for (const char* p = path;; ++p) {
    if (*p == '/' || *p == '\0') {
      if (!cur.empty()) parts.push_back(std::move(cur));
      cur.clear();
      if (*p == '\0') break;
    } else {
      cur += *p;
    }
  }
  Node n;
  if (parts.empty()) {
    n.kind = Node::Kind::kRoot;
    return n;
  }
  if (!cbt::repo::IsUuid(parts[0]) ||
      !cbt::IsRealDirectory(cbt::repo::VmDir(repo_.path(), parts[0]))) {
    return n;
  }
  n.vm = parts[0];
  if (parts.size() == 1) {
    n.kind = Node::Kind::kVm;
    return n;
  }
  if (parts.size() == 2 && parts[1] == kLatestName) {
    n.kind = Newest(n.vm).empty() ? Node::Kind::kNone : Node::Kind::kLatest;
    return n;
  }
  if (!cbt::repo::IsTimestamp(parts[1])) return n;
  n.point = parts[1];
  auto manifest = Manifest(n.vm, n.point);
  if (!manifest) return Node{};
  if (parts.size() == 2) {
    n.kind = Node::Kind::kPoint;
    return n;
  }
  const std::string& name = parts[2];
  if (parts.size() > 3) {
    // Only volume paths ("lvm/<vg>/<lv>.raw") are deeper.
  } else if (name == cbt::repo::kMetadataFile) {
    n.kind = Node::Kind::kMetadata;
  } else if (name == kDescriptionName) {
    n.kind = Node::Kind::kDescription;
  } else if (name.size() > 4 && name.ends_with(kRawSuffix)) {
    n.vdi = name.substr(0, name.size() - 4);
    if (manifest->FindDisk(n.vdi) != nullptr) n.kind = Node::Kind::kRaw;
  }
  if (n.kind == Node::Kind::kNone) {
    // A partition or LV, or a directory on the way to an LV.
    for (size_t i = 2; i < parts.size(); ++i) n.rel += (i > 2 ? "/" : "") + parts[i];
    auto view = Volumes(n.vm, n.point);
    if (view) {
      for (const auto& v : view->found.volumes) {
        if (v.path == n.rel) n.kind = Node::Kind::kVolume;
        if (v.path.rfind(n.rel + "/", 0) == 0 && n.kind == Node::Kind::kNone) {
          n.kind = Node::Kind::kVolumeDir;
        }
      }
    }
  }
  if (n.kind == Node::Kind::kNone) return Node{};
  return n;
}

std::shared_ptr<const cbt::image::VolumeImage> Filesystem::Volume(const Node& n) const {
  auto view = Volumes(n.vm, n.point);
  if (!view) return nullptr;
  for (const auto& v : view->found.volumes) {
    if (v.path == n.rel) return std::make_shared<const cbt::image::VolumeImage>(v, view->disks);
  }
  return nullptr;
}

std::string Filesystem::Newest(const std::string& vm) const {
  auto points = repo_.ListPoints(vm);
  if (!points.ok() || points->empty()) return "";
  return points->back();
}

std::shared_ptr<const cbt::repo::Manifest> Filesystem::Manifest(const std::string& vm,
                                                                const std::string& point) const {
  auto key = CacheKey(repo_, vm, point);
  if (!key.ok()) return nullptr;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (auto hit = manifests_.Get(*key)) return *hit;
  }
  auto m = repo_.ReadManifest(vm, point);
  if (!m.ok()) return nullptr;
  auto shared = std::make_shared<const cbt::repo::Manifest>(std::move(*m));
  std::lock_guard<std::mutex> g(mu_);
  manifests_.Put(*key, shared, ManifestBytes(*shared));
  return shared;
}

Result<std::shared_ptr<const ComposedImage>> Filesystem::Image(const Node& n) const {
  CBT_ASSIGN_OR_RETURN(const std::string key, CacheKey(repo_, n.vm, n.point, n.vdi));
  {
    std::lock_guard<std::mutex> g(mu_);
    if (auto hit = images_.Get(key)) return *hit;
  }
  CBT_ASSIGN_OR_RETURN(std::shared_ptr<const ComposedImage> img,
                       ComposedImage::Open(repo_, n.vm, n.point, n.vdi));
  std::lock_guard<std::mutex> g(mu_);
  images_.Put(key, img, img->MemoryBytes());
  return img;
}

std::shared_ptr<const ComposedImage> Filesystem::CachedImage(const Node& n) const {
  auto key = CacheKey(repo_, n.vm, n.point, n.vdi);
  if (!key.ok()) return nullptr;
  std::lock_guard<std::mutex> g(mu_);
  auto hit = images_.Get(*key);
  return hit ? *hit : nullptr;
}

uint64_t Filesystem::EstimatedDataBlocks(const std::string& vm, const std::string& point,
                                         const std::string& vdi) const {
  uint64_t blocks = 0, limit = 0;
  std::string p = point;
  for (int guard = 0; guard < 100000 && !p.empty(); ++guard) {
    auto m = Manifest(vm, p);
    const cbt::repo::DiskRecord* d = m ? m->FindDisk(vdi) : nullptr;
    if (d == nullptr) break;
    limit = cbt::repo::BlockCount(d->virtual_size);
    blocks += d->data_blocks;
    if (d->base) break;
    p = d->parent_point;
  }
  return std::min(blocks, limit);
}

std::shared_ptr<const PointView> Filesystem::Volumes(const std::string& vm,
                                                     const std::string& point) const {
  auto key = CacheKey(repo_, vm, point);
  if (!key.ok()) return nullptr;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (auto hit = views_.Get(*key)) return *hit;
  }
  auto m = Manifest(vm, point);
  if (!m) return nullptr;
  auto view = std::make_shared<PointView>();
  for (const auto& d : m->disks) {
    Node dn;
    dn.vm = vm;
    dn.point = point;
    dn.vdi = d.vdi_uuid;
    auto img = Image(dn);
    if (!img.ok()) {
      view->found.notes.push_back("disk " + d.vdi_uuid + " not scanned: " + img.status().message());
      continue;
    }
    view->disks[d.vdi_uuid] = *img;
  }
  auto found = cbt::image::FindVolumes(view->disks);
  view->found.volumes = std::move(found.volumes);
  view->found.notes.insert(view->found.notes.end(), found.notes.begin(), found.notes.end());
  // A view keeps its disks' images open: it is charged for them.
  size_t bytes = sizeof *view;
  for (const auto& [vdi, img] : view->disks) bytes += img->MemoryBytes();
  for (const auto& v : view->found.volumes) bytes += v.path.size() + v.description.size() + 256;
  std::lock_guard<std::mutex> g(mu_);
  views_.Put(*key, view, bytes);
  return view;
}

}  // namespace cbt::cbtfs
