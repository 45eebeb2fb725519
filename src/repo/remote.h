// SPDX-License-Identifier: Apache-2.0
//
// A repository on an object store (docs/FORMAT.md, "Repositories on S3").
// The objects have the names the files of a local repository have, relative
// to the repository's prefix.  Commands work on a local working copy of
// everything but the packs (configs, manifests, disk files, index files:
// a few MB per TB of disk), kept in step with the store by SyncDown; packs
// are read where they are, with ranged GETs through a chunk cache bounded
// in bytes, and packs a writer makes are written locally, uploaded at its
// commit and then dropped from the working copy.
//
// What the store sees, and in which order:
//   - a point: its packs and index file, then its disk files and VM
//     metadata, then its manifest.json, last and only if no manifest of
//     that name exists (PublishPoint).  A point is visible once its
//     manifest is; every object it needs is there before;
//   - a delete: the later points' new layers and rewritten manifests, then
//     the removed points' manifests, then their other objects (PublishVm).
//     Objects of a point without a manifest are leftovers that the next
//     holder of the VM's lock removes.
//
// Thread-safety: a Remote may be shared; every method may be called from
// any thread.  SyncDown calls of one working copy are serialised by an
// flock on WORK/.sync.lock, so several commands may share a working copy.
#ifndef CBT_REPO_REMOTE_H_
#define CBT_REPO_REMOTE_H_

#include "objstore/lease.h"
#include "objstore/s3.h"

#include "util/status.h"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace cbt::repo {

class Remote {
 public:
  // `cache_bytes`: the most the chunk cache holds.
  Remote(std::unique_ptr<objstore::S3Client> client, uint64_t cache_bytes);
  ~Remote();
  Remote(const Remote&) = delete;
  Remote& operator=(const Remote&) = delete;

  objstore::S3Client& client() const { return *client_; }

  // S3 Object Lock: data objects written from now on (packs, index files,
  // the files of points) are retained for `days` days in `mode`
  // ("GOVERNANCE" or "COMPLIANCE"); 0 days: none.  Call before sharing.
  void SetRetention(const std::string& mode, int days) {
    lock_mode_ = mode;
    lock_days_ = days;
  }
  int retention_days() const { return lock_days_; }
  // When the objects of `point` of `vm` may be removed: "" if now (not
  // retained, or retention over), else the retain-until date (ISO 8601),
  // read from its manifest object, the last of them written.
  Result<std::string> RetainedUntil(const std::string& vm, const std::string& point) const;

  // --- Reading objects through the cache ---

  // The size of the immutable object `key` (from the last listing, else a
  // HEAD).  NotFound if it does not exist.
  Result<uint64_t> SizeOf(const std::string& key) const;
  // `len` bytes at `off` of the immutable object `key` of `size` bytes.
  Status ReadAt(const std::string& key, uint64_t size, char* out, uint64_t len, uint64_t off) const;
  // Starts fetching [start, end) of `key` into the cache, without waiting.
  void Prefetch(const std::string& key, uint64_t size, uint64_t start, uint64_t end) const;

  // --- The working copy ---

  // Brings the working copy at `root` in step with the store: config.json,
  // id, index files, and the committed points (those with a manifest) of
  // every VM, or only of `vm` if not empty.  Points the store no longer has
  // are removed.  VMs whose local lock another process holds are left
  // alone, unless `vm` is the caller's own (`vm_locked_by_caller`).
  Status SyncDown(const std::string& root, const std::string& vm, bool vm_locked_by_caller) const;

  // Uploads the point written in `temp_dir` as <vm>/<point>/: every file,
  // manifest.json last and only if that point does not exist yet (Exists
  // otherwise).  `before_manifest` is checked right before the manifest is
  // written (the VM's lease).
  Status PublishPoint(const std::string& vm, const std::string& point, const std::string& temp_dir,
                      const std::function<Status()>& before_manifest) const;
  // Uploads pack `id` of the working copy at `root` (only if the store has
  // no object of that name), then removes the local copy.
  Status UploadPack(const std::string& root, uint64_t id) const;
  // Uploads index file `index_file` (a path of the working copy).
  Status PublishIndex(const std::string& index_file) const;
  // Makes the store's <vm>/ match the committed points of the working
  // copy's VM directory (after a delete): uploads new or changed files,
  // manifests last, then removes the manifests of points the working copy
  // no longer has, then their other objects, and leftovers of points
  // without a manifest.
  Status PublishVm(const std::string& root, const std::string& vm) const;

  // --- Store-wide exclusion of garbage collection (docs/FORMAT.md 19.3) ---

  // Registers a writer (a VM lock holder) with a lease object under
  // locks/writers/, waiting while a collection holds locks/gc.
  Result<std::unique_ptr<objstore::Lease>> RegisterWriter(const std::string& holder_json) const;
  // Takes locks/gc for a collection.  Null, with `*busy` saying who, if
  // another collection holds it or any writer is registered.
  Result<std::unique_ptr<objstore::Lease>> LockForCollection(const std::string& holder_json,
                                                             std::string* busy) const;

  // Uploads a small file of the repository root (config.json, id) unless
  // the store has one; then downloads the store's (which may be another
  // host's).  Returns the store's content.
  Result<std::string> PutRootFileIfAbsent(const std::string& name,
                                          const std::string& content) const;

 private:
  struct Chunk {
    bool ready = false;
    Status status;
    std::string data;
    std::list<std::pair<std::string, uint64_t>>::iterator lru;
    bool in_lru = false;
  };
  using ChunkKey = std::pair<std::string, uint64_t>;
  struct ChunkKeyHash {
    size_t operator()(const ChunkKey& k) const {
      return std::hash<std::string>()(k.first) ^
             (std::hash<uint64_t>()(k.second) * 0x9e3779b97f4a7c15ULL);
    }
  };

  std::shared_ptr<Chunk> GetChunk(const std::string& key, uint64_t size, uint64_t index) const;
  void Fetch(const std::string& key, uint64_t size, uint64_t index,
             const std::shared_ptr<Chunk>& chunk) const;
  void Worker() const;
  void EvictLocked() const;

  // The options of a PUT of a data object: retained if Object Lock is on.
  objstore::PutOptions DataPut() const;

  std::unique_ptr<objstore::S3Client> client_;
  uint64_t cache_bytes_;
  std::string lock_mode_;
  int lock_days_ = 0;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;       // a chunk became ready
  mutable std::condition_variable work_cv_;  // the queue has work, or stop
  mutable std::unordered_map<ChunkKey, std::shared_ptr<Chunk>, ChunkKeyHash> chunks_;
  mutable std::list<ChunkKey> lru_;  // front: most recently used
  mutable uint64_t cached_bytes_ = 0;
  mutable std::deque<std::tuple<std::string, uint64_t, uint64_t, std::shared_ptr<Chunk>>> queue_;
  mutable std::vector<std::thread> workers_;
  mutable bool stop_ = false;
  mutable std::unordered_map<std::string, uint64_t> sizes_;  // from listings
};

// Uploads the finished staging packs of one writer in the background, a
// few at a time, while the writer goes on, and removes each local copy once
// the store has it.  Destroying it stops what has not started and waits for
// what has.
class PackUploader {
 public:
  PackUploader(const Remote* remote, std::string root);
  ~PackUploader();
  PackUploader(const PackUploader&) = delete;
  PackUploader& operator=(const PackUploader&) = delete;
  // Queues pack `id` of the working copy at `root`.
  void Enqueue(uint64_t id);
  // Waits until every pack queued so far is uploaded; the first failure.
  Status Wait();

 private:
  void Work();
  const Remote* remote_;
  std::string root_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<uint64_t> queue_;
  int busy_ = 0;
  bool stop_ = false;
  Status failed_;
  std::vector<std::thread> threads_;
};

// The chunk size of the read cache: one ranged GET each.
inline constexpr uint64_t kRemoteChunkSize = 1 << 20;

// The working copy of `url` for this user: $CBT_CACHE_DIR, else
// $XDG_CACHE_HOME/cbt-backup, else ~/.cache/cbt-backup, then a directory
// named after a hash of the endpoint, bucket and prefix.  Created 0700.
Result<std::string> WorkingCopyDir(const objstore::S3Settings& settings,
                                   const objstore::S3Url& url);

// The object key of pack `id` ("packs/<2 hex>/<16 hex>.pack").
std::string PackKey(uint64_t id);

}  // namespace cbt::repo

#endif  // CBT_REPO_REMOTE_H_
