// SPDX-License-Identifier: Apache-2.0
//
// The repository: a directory of VMs, each a directory of committed points
// (see layout.h and docs/FORMAT.md).  This header holds the three things
// every command needs: opening and listing (Repository), excluding other
// writers of a VM (VmLock), and adding a point atomically (PointWriter).
//
// Readers take no lock: committed points are immutable, and a point appears
// by a single rename, so a reader sees it whole or not at all.
//
// Thread-safety: Repository is immutable after Open and safe to share.
// VmLock and PointWriter belong to one thread.
#ifndef CBT_REPO_REPOSITORY_H_
#define CBT_REPO_REPOSITORY_H_

#include "objstore/lease.h"

#include "repo/block_store.h"
#include "repo/disk_file.h"
#include "repo/manifest.h"
#include "repo/remote.h"
#include "util/file.h"
#include "util/status.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cbt::repo {

// One data file of a disk's chain.
struct ChainFile {
  std::string point;   // the point whose directory holds the file
  std::string file;    // its name in that directory
  std::string origin;  // the point that wrote it (equals `point` unless a layer)
};

// A committed point and its record of one disk.
struct PointDisk {
  std::string point;
  DiskRecord disk;
};

// What a search through the points does with a manifest it cannot read.
enum class UnreadableManifest {
  kFail,  // the search fails with the manifest's error
  kSkip,  // the point is passed over
};

class Repository {
 public:
  // Opens the repository at `path`.  With `create`, a missing directory is
  // created (0700) with a fresh config.  NotFound if missing and !create;
  // NotSupported if its format version is unknown.
  static Result<Repository> Open(const std::string& path, bool create);
  // Opens the repository at `url` (s3://BUCKET/PREFIX) on an object store
  // (repo/remote.h): settings from the environment
  // (objstore::SettingsFromEnvironment, trusting `ca_cert` if not empty),
  // the working copy brought in step.  With `create`, a store without a
  // repository gets a fresh config.  NotFound if there is none and
  // !create; NotSupported unless its format is 3.
  static Result<Repository> OpenS3(const std::string& url, bool create, const std::string& ca_cert);
  // Open or OpenS3, as `location` says.
  static Result<Repository> OpenAny(const std::string& location, bool create,
                                    const std::string& ca_cert);

  // The directory: the repository, or its working copy if on a store.
  const std::string& path() const { return path_; }
  // What the user named: path(), or the s3:// URL.
  const std::string& location() const { return location_; }
  // The object store of a repository on one, else null.
  const std::shared_ptr<const Remote>& remote() const { return remote_; }
  // The config as it was read at Open.
  const RepoConfig& config() const { return config_; }
  // The packs of the block store, for readers of version-2 disk files.
  const std::shared_ptr<const PackCache>& packs() const { return packs_; }
  // Opens a disk file of this repository (DiskFile::Open with packs()).
  Result<std::shared_ptr<const DiskFile>> OpenDiskFile(const std::string& path) const;

  // Rewrites config.json (temporary, rename, fsync of the repository
  // directory).  InvalidArgument for a version other than the store's.
  Status WriteConfig(const RepoConfig& config);

  // The repository's id: a random UUID in REPO/id that marks the server
  // objects a backup into this repository creates (docs/FORMAT.md, "id").
  // With `create`, a missing id is made; two processes making it at once
  // agree on one.  NotFound if missing and !create; Corruption if malformed.
  Result<std::string> Id(bool create) const;

  // UUIDs of the VM directories, sorted.
  Result<std::vector<std::string>> ListVms() const;
  // Committed points of `vm`, oldest first.  Temporaries are never listed.
  Result<std::vector<std::string>> ListPoints(const std::string& vm) const;
  Result<Manifest> ReadManifest(const std::string& vm, const std::string& point) const;
  std::string PointPath(const std::string& vm, const std::string& point) const;

  // The files that compose disk `vdi` at `point`, base first and the
  // point's own file last: each point's file and layers, following
  // parent_point links.  Corruption if a link is missing or inconsistent
  // (another virtual size, a parent without the disk).
  Result<std::vector<ChainFile>> DiskChain(const std::string& vm, const std::string& point,
                                           const std::string& vdi) const;

  // The newest committed point of `vm` older than `before` (of all points
  // if `before` is empty) whose manifest holds disk `vdi`, with that
  // record; nullopt if no such point exists.  This is where an incremental
  // write of `vdi` finds its parent.  A manifest that cannot be read is
  // handled as `unreadable` says; failing to list the points is an error
  // either way.
  Result<std::optional<PointDisk>> NewestPointWithDisk(const std::string& vm,
                                                       const std::string& vdi,
                                                       const std::string& before,
                                                       UnreadableManifest unreadable) const;

 private:
  Repository(std::string path, RepoConfig config, std::shared_ptr<const Remote> remote = nullptr)
      : path_(std::move(path)),
        location_(path_),
        config_(config),
        remote_(std::move(remote)),
        packs_(std::make_shared<const PackCache>(path_, remote_)) {}
  std::string path_;
  std::string location_;
  RepoConfig config_;
  std::shared_ptr<const Remote> remote_;
  std::shared_ptr<const PackCache> packs_;
};

// The store lock (REPO/store.lock): every VmLock holds it shared, garbage
// collection exclusively, so collection never runs while a point is being
// written or deleted.
class StoreLock {
 public:
  // Shared, waiting for a collection to end.
  static Result<StoreLock> Shared(const Repository& repo);
  // Exclusive without waiting; Busy if any command holds it.
  static Result<StoreLock> Exclusive(const Repository& repo);
  StoreLock(StoreLock&&) noexcept = default;
  StoreLock& operator=(StoreLock&&) = delete;

 private:
  explicit StoreLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// An exclusive lock on one VM directory, held by a backup, import or prune
// (with the store lock, shared, taken first):
// an flock() on REPO/<vm>/lock, whose content names the holder (host, pid,
// command, start time).  The kernel releases it when the holder dies, so a
// killed writer never leaves a lock that blocks the next command.
class VmLock {
 public:
  // Takes the lock of `vm` (creating the VM directory if needed) and writes
  // this process into the lock file (host, pid, `command`, start time).
  // Then, with the lock held, it cleans up after holders that died:
  //   - removes the temporaries of interrupted point writers (.tmp-*), the
  //     half-written journal files of deletes that never started, and,
  //     when there is no journal, the leftover .del-* directories;
  //   - finishes an interrupted delete whose journal it finds
  //     (FinishInterruptedDelete, prune.h).
  // Errors: InvalidArgument if `vm` is not a UUID; Corruption if the VM
  // directory or the lock file is a symbolic link; Busy, naming the holder,
  // if another process holds the lock.  If a cleanup step fails (a journal
  // it cannot read or replay, a temporary it cannot remove), the
  // acquisition fails with that error and the lock is released.
  static Result<VmLock> Acquire(const Repository& repo, const std::string& vm,
                                const std::string& command);
  VmLock(VmLock&& other) noexcept
      : store_(std::move(other.store_)),
        path_(std::move(other.path_)),
        fd_(std::move(other.fd_)),
        lease_(std::move(other.lease_)),
        writer_(std::move(other.writer_)) {
    other.path_.clear();
  }
  VmLock& operator=(VmLock&&) = delete;
  VmLock(const VmLock&) = delete;
  ~VmLock();

  const std::string& path() const { return path_; }
  // Ok while the lock is held; on an object store, Aborted once its lease
  // was lost.  Writers check it right before they make anything visible.
  Status Check() const;

 private:
  VmLock(std::optional<StoreLock> store, std::string path, UniqueFd fd)
      : store_(std::move(store)), path_(std::move(path)), fd_(std::move(fd)) {}
  std::optional<StoreLock> store_;  // released after the VM lock
  std::string path_;
  UniqueFd fd_;  // holds the flock; closing it releases the lock
  // On an object store: the VM's lock object there (<vm>/lock), taken
  // after the local flock and released before it.
  std::unique_ptr<objstore::Lease> lease_;
  // On an object store: this writer's registration, which keeps garbage
  // collections of any host away (the store lock's part there).
  std::unique_ptr<objstore::Lease> writer_;
};

// Writes one new point into a temporary directory and commits it with a
// rename.  Destroying an uncommitted writer removes the temporary.
//
// In a repository of format 3 (a version-1 repository is converted to it
// here, docs/FORMAT.md "config.json") the disks are version-2 files whose
// blocks go to the block store; Commit flushes the store before the
// manifest, so a committed point only ever refers to durable blocks.
class PointWriter {
 public:
  // REQUIRES: `lock` is the lock of `vm`.  Exists if the point already
  // exists (committed).
  static Result<std::unique_ptr<PointWriter>> Begin(const Repository& repo, const VmLock& lock,
                                                    const std::string& vm,
                                                    const std::string& point);
  ~PointWriter();

  const std::string& temp_dir() const { return temp_dir_; }
  // The block store of the point's disks (never null).
  BlockStore* store() const { return store_.get(); }
  // Creates the data file of disk `vdi` in the temporary directory.
  Result<std::unique_ptr<DiskFileWriter>> CreateDisk(const std::string& vdi, FileKind kind,
                                                     uint64_t virtual_size);
  // Creates data file `name` (a disk file or a layer file name of section 4
  // of docs/FORMAT.md) in the temporary directory: for copying a point
  // whose disks have layers.  InvalidArgument for another name.
  Result<std::unique_ptr<DiskFileWriter>> CreateFile(const std::string& name, FileKind kind,
                                                     uint64_t virtual_size);
  // Stores the VM metadata blob verbatim.
  Status WriteMetadata(const std::string& blob);
  // Writes the manifest and makes the point durable and visible.  On failure
  // the point is not visible and the temporary is removed.
  Status Commit(const Manifest& manifest);

 private:
  PointWriter(std::string vm_dir, std::string temp_dir, std::string final_dir,
              std::unique_ptr<BlockStore> store)
      : vm_dir_(std::move(vm_dir)),
        temp_dir_(std::move(temp_dir)),
        final_dir_(std::move(final_dir)),
        store_(std::move(store)) {}
  const Repository* repo_ = nullptr;
  const VmLock* lock_ = nullptr;
  // On an object store: uploads packs as they are finished; outlives store_.
  std::unique_ptr<PackUploader> uploader_;
  std::string vm_dir_;
  std::string temp_dir_;
  std::string final_dir_;
  std::unique_ptr<BlockStore> store_;
  bool committed_ = false;
};

}  // namespace cbt::repo

#endif  // CBT_REPO_REPOSITORY_H_
