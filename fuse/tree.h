// SPDX-License-Identifier: Apache-2.0
//
// The tree cbtfs shows and what stands behind it: what a path names
// (Filesystem::Resolve), and the manifests, composed images and volume views
// of the repository that the names are read from, each kept in a cache
// bounded by the memory its entries hold.
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
// cache (keep_cache, ops.cc) and images stay open in a small LRU cache.  Each
// open file holds a shared reference to its image, so eviction never pulls
// an image from under a reader.
//
// Thread-safety: libfuse's multi-threaded loop calls a Filesystem from
// several threads at once; its only mutable state is the caches, guarded by
// one mutex.  LruCache itself is not thread-safe.
// Errors: what does not exist or cannot be read resolves to Node::Kind::kNone,
// a null pointer or ""; only Image says why, as the Status of the open.
#ifndef CBT_FUSE_TREE_H_
#define CBT_FUSE_TREE_H_

#include "image/composed_image.h"
#include "image/volumes.h"
#include "repo/repository.h"
#include "util/status.h"

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

namespace cbt::cbtfs {

inline constexpr char kLatestName[] = "latest";
inline constexpr char kDescriptionName[] = "point.txt";
inline constexpr char kRawSuffix[] = ".raw";

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
  std::map<std::string, std::shared_ptr<const cbt::image::ComposedImage>> disks;
};

class Filesystem {
 public:
  explicit Filesystem(cbt::repo::Repository repo);

  const cbt::repo::Repository& repo() const { return repo_; }

  // What `path` (as libfuse hands it, from the mount's root) names.
  Node Resolve(const char* path) const;

  // The partition or LV that `n` (kVolume) names, or null.
  std::shared_ptr<const cbt::image::VolumeImage> Volume(const Node& n) const;

  // The newest point of `vm`, or "" if it has none.
  std::string Newest(const std::string& vm) const;

  // A manifest changes only when a delete rewrites it (replacing the file),
  // so a cached copy is good while the file's inode is the same; a stat per
  // lookup is what it costs to notice deletes and rewrites at once.
  std::shared_ptr<const cbt::repo::Manifest> Manifest(const std::string& vm,
                                                      const std::string& point) const;

  // Images are keyed by their manifest's inode too, so a point whose chain a
  // delete rewrote is opened afresh.  An image opened before stays correct
  // for its readers: it holds descriptors of the same bytes.
  Result<std::shared_ptr<const cbt::image::ComposedImage>> Image(const Node& n) const;

  // The image of `n` if a cache holds it, without opening it.
  std::shared_ptr<const cbt::image::ComposedImage> CachedImage(const Node& n) const;

  // An estimate of the data blocks of disk `vdi` at `point` from the
  // manifests of its chain alone: the blocks each point's own file stores
  // (files taken over from deleted points are not counted), at most the
  // disk's block count.  What getattr reports for an image it has not
  // opened, since opening one reads every index of the chain.
  uint64_t EstimatedDataBlocks(const std::string& vm, const std::string& point,
                               const std::string& vdi) const;

  // The partitions and LVs of a point, found once per manifest version (a
  // point's disks never change) and kept for the last few points used.
  std::shared_ptr<const PointView> Volumes(const std::string& vm, const std::string& point) const;

 private:
  cbt::repo::Repository repo_;
  mutable std::mutex mu_;
  // Keyed by the manifest's inode too: a delete that rewrites a manifest
  // gives it a new one.
  mutable LruCache<std::shared_ptr<const cbt::repo::Manifest>> manifests_;
  mutable LruCache<std::shared_ptr<const cbt::image::ComposedImage>> images_;
  mutable LruCache<std::shared_ptr<const PointView>> views_;
};

}  // namespace cbt::cbtfs

#endif  // CBT_FUSE_TREE_H_
