// SPDX-License-Identifier: Apache-2.0
//
// cbtfs: a read-only FUSE view of a cbt-backup repository.
//
//   /<vm-uuid>/                          one directory per VM
//   /<vm-uuid>/latest -> <timestamp>     the newest point
//   /<vm-uuid>/<timestamp>/<vdi>.raw     a disk of a point, composed on read
//   /<vm-uuid>/<timestamp>/VM_metadata   the metadata blob saved at backup
//   /<vm-uuid>/<timestamp>/point.txt     a short description of the point
//   /<vm-uuid>/<timestamp>/<vdi>.part<N>[-<label>].raw
//                                        a partition of a disk (MBR or GPT)
//   /<vm-uuid>/<timestamp>/lvm/<vg>/<lv>.raw
//                                        an LVM2 linear logical volume
//
// Partitions and LVs are found by reading the composed disks
// (image/volumes.h); nothing is attached or activated on the host.
//
// Design notes.  The tree is not cached: each lookup and readdir looks at
// the repository directory itself, so a point committed while mounted shows
// up once the kernel's one-second entry timeout passes, without a remount.
// A point's disk contents never change (a delete of another point hands its
// files over, byte for byte), so file contents may stay in the kernel page
// cache (keep_cache) and images stay open in a small LRU cache.  Each
// open file holds a shared reference to its image, so eviction never pulls
// an image from under a reader.  The handlers are thin: all reading,
// composition and checksum checking is ComposedImage's.
//
// Disk images are read with O_DIRECT (ComposedImage::ReadDirect): the kernel
// already caches what cbtfs returns, so caching the repository's files as
// well would hold every byte twice, and cost a page allocation and more
// bookkeeping for each 4 KiB.  A request's blocks, from however many files
// of the chain, are read all at once; the kernel's readahead of the mounted
// file keeps several requests in flight.  Where O_DIRECT is refused or not
// known to work (DiskFile::direct_fd), images are read through the page
// cache with a read-ahead window of their own.
//
// Thread model: libfuse's multi-threaded loop calls the handlers from several
// threads; the only shared mutable state is the cache, guarded by a mutex.
#define FUSE_USE_VERSION 35

#include "image/composed_image.h"
#include "image/volumes.h"
#include "repo/layout.h"
#include "repo/repository.h"
#include "util/file.h"
#include "util/text.h"

#include <fuse.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using cbt::Result;
using cbt::Status;
using cbt::image::ComposedImage;

constexpr char kLatestName[] = "latest";
constexpr char kDescriptionName[] = "point.txt";
constexpr char kRawSuffix[] = ".raw";
// Memory the caches may keep, by what they hold: an open image costs 8
// bytes per 64 KiB block of the disk plus 32 per stored block of each file
// of its chain, so a count of images would not bound memory for very large
// disks.  An entry larger than its budget is still used, just not kept.
constexpr size_t kImageCacheBytes = 256u << 20;
constexpr size_t kViewCacheBytes = 256u << 20;
constexpr size_t kManifestCacheBytes = 16u << 20;

// A least-recently-used cache bounded by the bytes its values report.
// Not thread-safe: the Filesystem's mutex guards it.
template <typename V>
class LruCache {
 public:
  explicit LruCache(size_t budget) : budget_(budget) {}
  const V* Get(const std::string& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    items_.splice(items_.begin(), items_, it->second);
    return &it->second->value;
  }
  void Put(const std::string& key, V value, size_t bytes) {
    if (auto it = index_.find(key); it != index_.end()) {
      used_ -= it->second->bytes;
      items_.erase(it->second);
      index_.erase(it);
    }
    if (bytes > budget_) return;
    items_.push_front({key, std::move(value), bytes});
    index_[key] = items_.begin();
    used_ += bytes;
    while (used_ > budget_) {
      used_ -= items_.back().bytes;
      index_.erase(items_.back().key);
      items_.pop_back();
    }
  }

 private:
  struct Item {
    std::string key;
    V value;
    size_t bytes;
  };
  size_t budget_;
  size_t used_ = 0;
  std::list<Item> items_;
  std::map<std::string, typename std::list<Item>::iterator> index_;
};

size_t ManifestBytes(const cbt::repo::Manifest& m) {
  size_t bytes = sizeof m + m.vm_name.size() + 256;
  for (const auto& d : m.disks) bytes += sizeof d + d.name.size() + d.layers.size() * 128;
  return bytes;
}

// What a path names.
struct Node {
  enum class Kind {
    kNone,
    kRoot,
    kVm,
    kLatest,
    kPoint,
    kRaw,
    kMetadata,
    kDescription,
    kVolume,     // a partition or LV file
    kVolumeDir,  // "lvm" or "lvm/<vg>"
  } kind = Kind::kNone;
  std::string vm, point, vdi;
  std::string rel;  // kVolume, kVolumeDir: path below the point directory
};

// The volumes of one point and the disk images they read from.
struct PointView {
  cbt::image::PointVolumes found;
  std::map<std::string, std::shared_ptr<const ComposedImage>> disks;
};

class Filesystem {
 public:
  explicit Filesystem(cbt::repo::Repository repo) : repo_(std::move(repo)) {}

  const cbt::repo::Repository& repo() const { return repo_; }

  Node Resolve(const char* path) const {
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

  std::shared_ptr<const cbt::image::VolumeImage> Volume(const Node& n) const {
    auto view = Volumes(n.vm, n.point);
    if (!view) return nullptr;
    for (const auto& v : view->found.volumes) {
      if (v.path == n.rel) return std::make_shared<const cbt::image::VolumeImage>(v, view->disks);
    }
    return nullptr;
  }

  std::string Newest(const std::string& vm) const {
    auto points = repo_.ListPoints(vm);
    if (!points.ok() || points->empty()) return "";
    return points->back();
  }

  // A manifest changes only when a delete rewrites it (replacing the file),
  // so a cached copy is good while the file's inode is the same; a stat per
  // lookup is what it costs to notice deletes and rewrites at once.
  std::shared_ptr<const cbt::repo::Manifest> Manifest(const std::string& vm,
                                                      const std::string& point) const {
    struct stat st;
    const std::string file = cbt::JoinPath(repo_.PointPath(vm, point), cbt::repo::kManifestFile);
    if (::stat(file.c_str(), &st) != 0) return nullptr;
    const std::string key = vm + "/" + point + "@" + std::to_string(st.st_ino);
    {
      std::lock_guard<std::mutex> g(mu_);
      if (auto hit = manifests_.Get(key)) return *hit;
    }
    auto m = repo_.ReadManifest(vm, point);
    if (!m.ok()) return nullptr;
    auto shared = std::make_shared<const cbt::repo::Manifest>(std::move(*m));
    std::lock_guard<std::mutex> g(mu_);
    manifests_.Put(key, shared, ManifestBytes(*shared));
    return shared;
  }

  // Images are keyed by their manifest's inode too, so a point whose chain a
  // delete rewrote is opened afresh.  An image opened before stays correct
  // for its readers: it holds descriptors of the same bytes.
  Result<std::shared_ptr<const ComposedImage>> Image(const Node& n) const {
    struct stat st;
    const std::string file =
        cbt::JoinPath(repo_.PointPath(n.vm, n.point), cbt::repo::kManifestFile);
    if (::stat(file.c_str(), &st) != 0) return Status::FromErrno(errno, file);
    std::string key = n.vm + "/" + n.point + "/" + n.vdi + "@" + std::to_string(st.st_ino);
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

  // The image of `n` if a cache holds it, without opening it.
  std::shared_ptr<const ComposedImage> CachedImage(const Node& n) const {
    struct stat st;
    const std::string file =
        cbt::JoinPath(repo_.PointPath(n.vm, n.point), cbt::repo::kManifestFile);
    if (::stat(file.c_str(), &st) != 0) return nullptr;
    std::lock_guard<std::mutex> g(mu_);
    auto hit = images_.Get(n.vm + "/" + n.point + "/" + n.vdi + "@" + std::to_string(st.st_ino));
    return hit ? *hit : nullptr;
  }

  // An upper bound of the data blocks of disk `vdi` at `point` from the
  // manifests of its chain alone (the blocks each file stores, at most the
  // disk's block count): what getattr reports for an image it has not
  // opened, since opening one reads every index of the chain.
  uint64_t EstimatedDataBlocks(const std::string& vm, const std::string& point,
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

  // The partitions and LVs of a point, found once per manifest version (a
  // point's disks never change) and kept for the last few points used.
  std::shared_ptr<const PointView> Volumes(const std::string& vm, const std::string& point) const {
    struct stat st;
    const std::string file = cbt::JoinPath(repo_.PointPath(vm, point), cbt::repo::kManifestFile);
    if (::stat(file.c_str(), &st) != 0) return nullptr;
    const std::string key = vm + "/" + point + "@" + std::to_string(st.st_ino);
    {
      std::lock_guard<std::mutex> g(mu_);
      if (auto hit = views_.Get(key)) return *hit;
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
        view->found.notes.push_back("disk " + d.vdi_uuid +
                                    " not scanned: " + img.status().message());
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
    views_.Put(key, view, bytes);
    return view;
  }

  std::string Description(const Node& n) const {
    auto m = Manifest(n.vm, n.point);
    if (!m) return "";
    // Names come from the server and from the guest: escaped, so that
    // printing point.txt cannot drive a terminal.
    std::string s = "VM:      " + m->vm_uuid +
                    (m->vm_name.empty() ? "" : " (" + cbt::Printable(m->vm_name) + ")") +
                    "\nPoint:   " + m->point + "\nSource:  " + m->source + "\nDisks:\n";
    for (const auto& d : m->disks) {
      s += "  " + d.vdi_uuid + ".raw  " + std::to_string(d.virtual_size) + " bytes  " +
           (d.base ? "base" : "overlay on " + d.parent_point) +
           (d.layers.empty() ? ""
                             : " (+" + std::to_string(d.layers.size()) + " taken-over file(s))") +
           (d.name.empty() ? "" : "  \"" + cbt::Printable(d.name) + "\"") + "\n";
    }
    for (const auto& d : m->skipped_disks) {
      s += "  " + d.vdi_uuid + "  not backed up: " + cbt::Printable(d.reason) +
           (d.name.empty() ? "" : "  \"" + cbt::Printable(d.name) + "\"") + "\n";
    }
    auto view = Volumes(n.vm, n.point);
    if (view && !view->found.volumes.empty()) {
      s += "Volumes:\n";
      for (const auto& v : view->found.volumes) {
        s += "  " + v.path + "  " + std::to_string(v.size()) + " bytes  " +
             cbt::Printable(v.description) + "\n";
      }
    }
    if (view && !view->found.notes.empty()) {
      s += "Notes:\n";
      for (const auto& note : view->found.notes) s += "  " + cbt::Printable(note) + "\n";
    }
    return s;
  }

 private:
  cbt::repo::Repository repo_;
  mutable std::mutex mu_;
  // Keyed by the manifest's inode too: a delete that rewrites a manifest
  // gives it a new one.
  mutable LruCache<std::shared_ptr<const cbt::repo::Manifest>> manifests_{kManifestCacheBytes};
  mutable LruCache<std::shared_ptr<const ComposedImage>> images_{kImageCacheBytes};
  mutable LruCache<std::shared_ptr<const PointView>> views_{kViewCacheBytes};
};

// What an open file handle (fi->fh) points to.
struct OpenFile {
  std::shared_ptr<const ComposedImage> image;             // .raw
  std::shared_ptr<const cbt::image::VolumeImage> volume;  // partition or LV
  bool direct = false;                                    // image read with ReadDirect
  cbt::image::SequentialPrefetcher prefetch;              // image read through the page cache
  cbt::UniqueFd fd;                                       // VM_metadata
  std::string text;                                       // point.txt
};

Filesystem* Fs() { return static_cast<Filesystem*>(fuse_get_context()->private_data); }

void LogError(const std::string& msg) {
  const std::string line = cbt::Printable(msg);
  syslog(LOG_ERR, "%s", line.c_str());
  std::fprintf(stderr, "cbtfs: %s\n", line.c_str());
}

// Runs a FUSE operation so that no exception reaches libfuse's C code (it
// would abort the daemon and leave a dead mount): out of memory becomes
// ENOMEM, anything else EIO, with a line in the log.
template <auto Op, typename... Args>
auto Guarded(Args... args) -> decltype(Op(args...)) {
  try {
    return Op(args...);
  } catch (const std::bad_alloc&) {
    LogError("out of memory");
    return -ENOMEM;
  } catch (const std::exception& e) {
    LogError(std::string("internal error: ") + e.what());
    return -EIO;
  } catch (...) {
    LogError("internal error");
    return -EIO;
  }
}

int DirAttr(const std::string& dir, struct stat* st) {
  struct stat real;
  if (::stat(dir.c_str(), &real) != 0) return -errno;
  st->st_mode = S_IFDIR | 0500;
  st->st_nlink = 2;
  st->st_mtim = real.st_mtim;
  st->st_ctim = real.st_mtim;
  st->st_atim = real.st_mtim;
  return 0;
}

int OpGetattr(const char* path, struct stat* st, struct fuse_file_info*) {
  Filesystem* fs = Fs();
  Node n = fs->Resolve(path);
  std::memset(st, 0, sizeof *st);
  st->st_uid = ::getuid();
  st->st_gid = ::getgid();
  const std::string& root = fs->repo().path();
  switch (n.kind) {
    case Node::Kind::kNone:
      return -ENOENT;
    case Node::Kind::kRoot:
      return DirAttr(root, st);
    case Node::Kind::kVm:
      return DirAttr(cbt::repo::VmDir(root, n.vm), st);
    case Node::Kind::kPoint:
      return DirAttr(cbt::repo::PointDir(root, n.vm, n.point), st);
    case Node::Kind::kLatest: {
      std::string target = fs->Newest(n.vm);
      int r = DirAttr(cbt::repo::PointDir(root, n.vm, target), st);
      if (r != 0) return r;
      st->st_mode = S_IFLNK | 0777;
      st->st_nlink = 1;
      st->st_size = static_cast<off_t>(target.size());
      return 0;
    }
    case Node::Kind::kMetadata: {
      int r = DirAttr(cbt::repo::PointDir(root, n.vm, n.point), st);
      struct stat real;
      std::string file =
          cbt::JoinPath(cbt::repo::PointDir(root, n.vm, n.point), cbt::repo::kMetadataFile);
      if (r != 0 || ::stat(file.c_str(), &real) != 0) return -ENOENT;
      st->st_mode = S_IFREG | 0400;
      st->st_nlink = 1;
      st->st_size = real.st_size;
      st->st_blocks = real.st_blocks;
      return 0;
    }
    case Node::Kind::kDescription: {
      int r = DirAttr(cbt::repo::PointDir(root, n.vm, n.point), st);
      st->st_mode = S_IFREG | 0400;
      st->st_nlink = 1;
      st->st_size = static_cast<off_t>(fs->Description(n).size());
      return r;
    }
    case Node::Kind::kVolumeDir:
      return DirAttr(cbt::repo::PointDir(root, n.vm, n.point), st);
    case Node::Kind::kVolume: {
      int r = DirAttr(cbt::repo::PointDir(root, n.vm, n.point), st);
      auto vol = fs->Volume(n);
      if (!vol) return -ENOENT;
      st->st_mode = S_IFREG | 0400;
      st->st_nlink = 1;
      st->st_size = static_cast<off_t>(vol->size());
      st->st_blocks = static_cast<blkcnt_t>(vol->size() / 512);
      st->st_blksize = cbt::repo::kBlockSize;
      return r;
    }
    case Node::Kind::kRaw: {
      // From the manifest: opening the image reads every index of its chain,
      // too much for an `ls -l` over many points of large disks.  Blocks are
      // exact once the image is open, an upper bound before.
      int r = DirAttr(cbt::repo::PointDir(root, n.vm, n.point), st);
      auto m = fs->Manifest(n.vm, n.point);
      const cbt::repo::DiskRecord* d = m ? m->FindDisk(n.vdi) : nullptr;
      if (d == nullptr) return -ENOENT;
      auto img = fs->CachedImage(n);
      const uint64_t blocks =
          img ? img->DataBlockCount() : fs->EstimatedDataBlocks(n.vm, n.point, n.vdi);
      st->st_mode = S_IFREG | 0400;
      st->st_nlink = 1;
      st->st_size = static_cast<off_t>(d->virtual_size);
      st->st_blocks = static_cast<blkcnt_t>(blocks * (cbt::repo::kBlockSize / 512));
      st->st_blksize = cbt::repo::kBlockSize;
      return r;
    }
  }
  return -ENOENT;
}

int OpReadlink(const char* path, char* buf, size_t size) {
  Node n = Fs()->Resolve(path);
  if (n.kind != Node::Kind::kLatest) return -EINVAL;
  std::string target = Fs()->Newest(n.vm);
  if (size == 0) return -EINVAL;
  std::snprintf(buf, size, "%s", target.c_str());
  return 0;
}

int OpReaddir(const char* path, void* buf, fuse_fill_dir_t filler, off_t, struct fuse_file_info*,
              enum fuse_readdir_flags) {
  Filesystem* fs = Fs();
  Node n = fs->Resolve(path);
  auto add = [&](const std::string& name) {
    filler(buf, name.c_str(), nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  };
  add(".");
  add("..");
  switch (n.kind) {
    case Node::Kind::kRoot: {
      auto vms = fs->repo().ListVms();
      if (!vms.ok()) return vms.status().ToNegErrno();
      for (const auto& v : *vms) add(v);
      return 0;
    }
    case Node::Kind::kVm: {
      auto points = fs->repo().ListPoints(n.vm);
      if (!points.ok()) return points.status().ToNegErrno();
      for (const auto& p : *points) add(p);
      if (!points->empty()) add(kLatestName);
      return 0;
    }
    case Node::Kind::kPoint: {
      auto m = fs->Manifest(n.vm, n.point);
      if (!m) return -ENOENT;
      for (const auto& d : m->disks) add(d.vdi_uuid + kRawSuffix);
      add(cbt::repo::kMetadataFile);
      add(kDescriptionName);
      std::set<std::string> names;
      if (auto view = fs->Volumes(n.vm, n.point)) {
        for (const auto& v : view->found.volumes) names.insert(v.path.substr(0, v.path.find('/')));
      }
      for (const auto& name : names) add(name);
      return 0;
    }
    case Node::Kind::kVolumeDir: {
      std::set<std::string> names;
      if (auto view = fs->Volumes(n.vm, n.point)) {
        for (const auto& v : view->found.volumes) {
          if (v.path.rfind(n.rel + "/", 0) != 0) continue;
          std::string rest = v.path.substr(n.rel.size() + 1);
          names.insert(rest.substr(0, rest.find('/')));
        }
      }
      for (const auto& name : names) add(name);
      return 0;
    }
    case Node::Kind::kNone:
      return -ENOENT;
    default:
      return -ENOTDIR;
  }
}

int OpOpen(const char* path, struct fuse_file_info* fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
  Filesystem* fs = Fs();
  Node n = fs->Resolve(path);
  auto file = std::make_unique<OpenFile>();
  switch (n.kind) {
    case Node::Kind::kRaw: {
      auto img = fs->Image(n);
      if (!img.ok()) {
        LogError(img.status().message());
        // The point exists (its manifest names the disk): a data file of
        // its chain that is missing is damage, not a missing name.
        return img.status().IsNotFound() ? -EIO : img.status().ToNegErrno();
      }
      file->image = std::move(*img);
      file->direct = file->image->CanReadDirect();
      break;
    }
    case Node::Kind::kVolume: {
      file->volume = fs->Volume(n);
      if (!file->volume) return -ENOENT;
      break;
    }
    case Node::Kind::kMetadata: {
      auto fd = cbt::OpenRead(
          cbt::JoinPath(fs->repo().PointPath(n.vm, n.point), cbt::repo::kMetadataFile));
      if (!fd.ok()) return fd.status().ToNegErrno();
      file->fd = std::move(*fd);
      break;
    }
    case Node::Kind::kDescription:
      file->text = fs->Description(n);
      break;
    case Node::Kind::kNone:
      return -ENOENT;
    default:
      return -EISDIR;
  }
  // Disk contents and metadata are immutable: cached pages stay valid across
  // opens.  The description mentions the parent point, which a delete changes.
  fi->keep_cache = n.kind != Node::Kind::kDescription;
  fi->fh = reinterpret_cast<uint64_t>(file.release());
  return 0;
}

int OpRead(const char*, char* buf, size_t size, off_t off, struct fuse_file_info* fi) {
  auto* file = reinterpret_cast<OpenFile*>(fi->fh);
  if (off < 0) return -EINVAL;
  if (file->volume) {
    auto n = file->volume->Read(buf, size, static_cast<uint64_t>(off));
    if (!n.ok()) {
      LogError(n.status().message());
      return -EIO;
    }
    return static_cast<int>(*n);
  }
  if (file->direct) {
    const auto pos = static_cast<uint64_t>(off);
    if (file->image->AllHoles(pos, size)) {
      // A request over holes only (much of a thin disk) needs no device
      // read: zeros go straight into libfuse's buffer, with no copy.
      const uint64_t n =
          pos >= file->image->size() ? 0 : std::min<uint64_t>(size, file->image->size() - pos);
      std::memset(buf, 0, n);
      return static_cast<int>(n);
    }
    // libfuse hands us a buffer O_DIRECT cannot use (not aligned); a reused
    // aligned one per thread costs one copy and no allocation.  Reading into
    // buffers of our own that libfuse then frees was tried: glibc could not
    // reuse the freed aligned blocks, and cbtfs grew past 100 MiB.
    struct Free {
      void operator()(char* p) const { std::free(p); }
    };
    thread_local std::unique_ptr<char, Free> bounce;
    thread_local size_t bounce_size = 0;
    if (bounce_size < size) {
      const size_t want = (size + ComposedImage::kDirectAlign - 1) / ComposedImage::kDirectAlign *
                          ComposedImage::kDirectAlign;
      bounce.reset(static_cast<char*>(std::aligned_alloc(ComposedImage::kDirectAlign, want)));
      bounce_size = bounce ? want : 0;
      if (!bounce) return -ENOMEM;
    }
    auto n = file->image->ReadDirect(bounce.get(), size, pos);
    if (!n.ok()) {
      LogError(n.status().message());
      return -EIO;
    }
    std::memcpy(buf, bounce.get(), *n);
    return static_cast<int>(*n);
  }
  if (file->image) {
    file->prefetch.OnRead(*file->image, static_cast<uint64_t>(off), size);
    auto n = file->image->Read(buf, size, static_cast<uint64_t>(off));
    if (!n.ok()) {
      LogError(n.status().message());
      return -EIO;
    }
    return static_cast<int>(*n);
  }
  if (file->fd.valid()) {
    ssize_t n = ::pread(file->fd.get(), buf, size, off);
    return n < 0 ? -errno : static_cast<int>(n);
  }
  if (static_cast<size_t>(off) >= file->text.size()) return 0;
  size_t n = std::min(size, file->text.size() - static_cast<size_t>(off));
  std::memcpy(buf, file->text.data() + off, n);
  return static_cast<int>(n);
}

off_t OpLseek(const char*, off_t off, int whence, struct fuse_file_info* fi) {
  auto* file = reinterpret_cast<OpenFile*>(fi->fh);
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return -EINVAL;
  uint64_t size = 0;
  if (file->volume) {
    size = file->volume->size();
  } else if (file->image) {
    size = file->image->size();
  } else if (file->fd.valid()) {
    struct stat st;
    if (::fstat(file->fd.get(), &st) != 0) return -errno;
    size = static_cast<uint64_t>(st.st_size);
  } else {
    size = file->text.size();
  }
  if (off < 0 || static_cast<uint64_t>(off) >= size) return -ENXIO;
  const auto pos = static_cast<uint64_t>(off);
  if (!file->image) return whence == SEEK_DATA ? off : static_cast<off_t>(size);
  uint64_t r = whence == SEEK_DATA ? file->image->NextData(pos) : file->image->NextHole(pos);
  if (whence == SEEK_DATA && r >= size) return -ENXIO;
  return static_cast<off_t>(r);
}

int OpRelease(const char*, struct fuse_file_info* fi) {
  delete reinterpret_cast<OpenFile*>(fi->fh);
  return 0;
}

int OpOpendir(const char* path, struct fuse_file_info*) {
  Node n = Fs()->Resolve(path);
  if (n.kind == Node::Kind::kNone) return -ENOENT;
  if (n.kind != Node::Kind::kRoot && n.kind != Node::Kind::kVm && n.kind != Node::Kind::kPoint &&
      n.kind != Node::Kind::kVolumeDir)
    return -ENOTDIR;
  return 0;
}

int OpStatfs(const char*, struct statvfs* st) {
  if (::statvfs(Fs()->repo().path().c_str(), st) != 0) return -errno;
  st->f_bavail = 0;
  st->f_bfree = 0;
  st->f_favail = 0;
  st->f_ffree = 0;
  return 0;
}

// Mount point and kernel readahead wanted for this mount (0: kernel default).
std::string g_mountpoint;
unsigned g_readahead_kb = 4096;

// The kernel sends FUSE reads of at most its readahead window (128 KiB by
// default), one round trip each.  Sequential readers (restore, cp, dd) go
// much faster with a larger window, which only the mount's bdi setting can
// give.  4 MiB measured best: the kernel then has several 1 MiB requests
// out at once, so both cores work on a sequential read; 1 MiB gave half the
// throughput of a cold base, 16 MiB no more than 4.  This must run once the
// mount answers requests, so it runs on its
// own thread after init; it needs root, and failing is harmless.
void RaiseReadahead() {
  if (g_readahead_kb == 0) return;
  std::thread([] {
    struct stat st;
    if (::stat(g_mountpoint.c_str(), &st) != 0) return;
    std::string path = "/sys/class/bdi/" + std::to_string(major(st.st_dev)) + ":" +
                       std::to_string(minor(st.st_dev)) + "/read_ahead_kb";
    FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) return;
    std::fprintf(f, "%u\n", g_readahead_kb);
    std::fclose(f);
  }).detach();
}

void* OpInit(struct fuse_conn_info* conn, struct fuse_config* cfg) {
  // New points must appear within a second; committed ones never change.
  cfg->entry_timeout = 1.0;
  cfg->attr_timeout = 1.0;
  cfg->negative_timeout = 0.0;
  cfg->kernel_cache = 1;
  conn->max_readahead = std::max<unsigned>(conn->max_readahead, g_readahead_kb * 1024);
  RaiseReadahead();
  return fuse_get_context()->private_data;
}

int Usage(FILE* out) {
  std::fprintf(out,
               "usage: cbtfs mount REPO MOUNTPOINT [-f] [-d] [-o OPTIONS]\n"
               "       cbtfs umount MOUNTPOINT\n"
               "\n"
               "Shows every point of the cbt-backup repository REPO as read-only raw disk\n"
               "files under MOUNTPOINT/<vm-uuid>/<timestamp>/<vdi-uuid>.raw.\n"
               "  -f          stay in the foreground\n"
               "  -d          debug output (implies -f)\n"
               "  -o OPTIONS  FUSE mount options, e.g. allow_other\n"
               "  --readahead-kb N  kernel readahead for this mount (default 4096; 0 keeps\n"
               "                    the kernel's default; setting it needs root)\n");
  return out == stdout ? 0 : 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage(stderr);
  std::string verb = argv[1];
  if (verb == "--help" || verb == "-h") return Usage(stdout);
  if (verb == "--version") {
    std::printf("cbtfs %s (libfuse %d)\n", CBT_VERSION, fuse_version());
    return 0;
  }
  if (verb == "umount" || verb == "unmount") {
    if (argc != 3) return Usage(stderr);
    execlp("fusermount3", "fusermount3", "-u", argv[2], static_cast<char*>(nullptr));
    std::fprintf(stderr, "cbtfs: cannot run fusermount3: %s\n", std::strerror(errno));
    return 1;
  }
  if (verb != "mount") {
    std::fprintf(stderr, "cbtfs: unknown command '%s'\n", verb.c_str());
    return Usage(stderr);
  }
  std::vector<std::string> positional, fuse_opts;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-o") {
      if (i + 1 >= argc) return Usage(stderr);
      fuse_opts.push_back("-o");
      fuse_opts.push_back(argv[++i]);
    } else if (a.rfind("-o", 0) == 0 && a.size() > 2) {
      fuse_opts.push_back(a);
    } else if (a == "--readahead-kb") {
      if (i + 1 >= argc) return Usage(stderr);
      g_readahead_kb = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
    } else if (a == "-f" || a == "-d" || a == "-s") {
      fuse_opts.push_back(a);
    } else if (a == "--help" || a == "-h") {
      return Usage(stdout);
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "cbtfs: unknown option '%s'\n", a.c_str());
      return 2;
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2) return Usage(stderr);
  char real[PATH_MAX];
  // The daemon changes to "/", so the repository path must be absolute.
  if (::realpath(positional[0].c_str(), real) == nullptr) {
    std::fprintf(stderr, "cbtfs: repository %s: %s\n", positional[0].c_str(), std::strerror(errno));
    return 1;
  }
  auto repo = cbt::repo::Repository::Open(real, /*create=*/false);
  if (!repo.ok()) {
    std::fprintf(stderr, "cbtfs: %s\n", repo.status().message().c_str());
    return 1;
  }
  if (!cbt::IsDirectory(positional[1])) {
    std::fprintf(stderr, "cbtfs: mount point %s is not a directory\n", positional[1].c_str());
    return 1;
  }
  char mnt_real[PATH_MAX];
  if (::realpath(positional[1].c_str(), mnt_real) == nullptr) {
    std::fprintf(stderr, "cbtfs: mount point %s: %s\n", positional[1].c_str(),
                 std::strerror(errno));
    return 1;
  }
  g_mountpoint = mnt_real;
  // A deep chain keeps one descriptor per file of each open image.
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  openlog("cbtfs", LOG_PID, LOG_DAEMON);

  static Filesystem fs(std::move(*repo));
  static struct fuse_operations ops = {};
  ops.getattr = Guarded<OpGetattr, const char*, struct stat*, struct fuse_file_info*>;
  ops.readlink = Guarded<OpReadlink, const char*, char*, size_t>;
  ops.open = Guarded<OpOpen, const char*, struct fuse_file_info*>;
  ops.read = Guarded<OpRead, const char*, char*, size_t, off_t, struct fuse_file_info*>;
  ops.statfs = Guarded<OpStatfs, const char*, struct statvfs*>;
  ops.release = Guarded<OpRelease, const char*, struct fuse_file_info*>;
  ops.opendir = Guarded<OpOpendir, const char*, struct fuse_file_info*>;
  ops.readdir = Guarded<OpReaddir, const char*, void*, fuse_fill_dir_t, off_t,
                        struct fuse_file_info*, enum fuse_readdir_flags>;
  ops.lseek = Guarded<OpLseek, const char*, off_t, int, struct fuse_file_info*>;
  ops.init = OpInit;

  std::vector<std::string> args = {"cbtfs", positional[1], "-o",
                                   "ro,default_permissions,fsname=cbtfs,subtype=cbtfs"};
  args.insert(args.end(), fuse_opts.begin(), fuse_opts.end());
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  return fuse_main(static_cast<int>(cargs.size() - 1), cargs.data(), &ops, &fs);
}
