// SPDX-License-Identifier: Apache-2.0
//
// Design notes: commit and locking.
//
// Commit sequence (PointWriter):
//   1. every file is written into REPO/<vm>/.tmp-<ts>-<pid>/ and fsynced as
//      it is finished (DiskFileWriter::Finish, WriteNewFile);
//   2. the manifest is written last into the temporary and fsynced;
//   3. the temporary directory is fsynced, so its entries are durable;
//   4. rename(temporary, REPO/<vm>/<ts>) is the commit point;
//   5. the VM directory is fsynced, so the rename survives power loss.
// A crash before 4 leaves only a temporary, which the next lock holder
// removes; a crash after 4 leaves a complete point.  Committed files are
// never opened for writing again.
//
// Locking: the lock is an advisory flock() on REPO/<vm>/lock, held for the
// whole time a writer works; the file's content names the holder for the
// "busy" message.  The kernel drops the flock when its holder dies (kill -9,
// crash, reboot), so a stale lock cannot exist and needs no guessing from
// pids.  The holder unlinks the file before releasing; a contender that
// opened the old file therefore re-checks, after winning the flock, that its
// descriptor is still the file named "lock", and retries otherwise.
#include "repo/repository.h"

#include "repo/layout.h"
#include "repo/prune.h"
#include "util/file.h"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <optional>

namespace cbt::repo {

Result<Repository> Repository::Open(const std::string& path, bool create) {
  std::string config = JoinPath(path, kConfigFile);
  if (!IsDirectory(path)) {
    if (!create) return Status::NotFound("repository " + path + " does not exist");
    CBT_RETURN_IF_ERROR(MakeDirs(path));
  }
  if (!PathExists(config)) {
    if (!create) {
      return Status::NotFound(path + " is not a cbt-backup repository (no " +
                              std::string(kConfigFile) + ")");
    }
    CBT_RETURN_IF_ERROR(WriteFileAtomic(config, EncodeConfig()));
  }
  CBT_ASSIGN_OR_RETURN(std::string text, ReadFile(config));
  CBT_ASSIGN_OR_RETURN(RepoConfig parsed, ParseConfig(text, config));
  return Repository(path, parsed);
}

Result<Repository> Repository::OpenS3(const std::string& url, bool create,
                                      const std::string& ca_cert) {
  CBT_ASSIGN_OR_RETURN(objstore::S3Url parsed, objstore::ParseS3Url(url));
  CBT_ASSIGN_OR_RETURN(objstore::S3Settings settings, objstore::SettingsFromEnvironment(ca_cert));
  CBT_ASSIGN_OR_RETURN(auto client, objstore::S3Client::Create(settings, parsed));
  CBT_ASSIGN_OR_RETURN(std::string work, WorkingCopyDir(settings, parsed));
  uint64_t cache_mb = 512;
  if (const char* v = std::getenv("CBT_S3_CACHE_MB"); v != nullptr && std::atoll(v) > 0) {
    cache_mb = static_cast<uint64_t>(std::atoll(v));
  }
  auto remote = std::make_shared<Remote>(std::move(client), cache_mb << 20);
  auto config_text = remote->client().Get(kConfigFile);
  if (!config_text.ok() && config_text.status().IsNotFound()) {
    if (!create) {
      return Status::NotFound(url + " is not a cbt-backup repository (no " +
                              std::string(kConfigFile) + ")");
    }
    // Of two hosts creating it at once, both end up with the first's.
    config_text = remote->PutRootFileIfAbsent(kConfigFile, EncodeConfig());
  }
  if (!config_text.ok()) return config_text.status();
  CBT_ASSIGN_OR_RETURN(RepoConfig config, ParseConfig(*config_text, url + "/" + kConfigFile));
  if (config.version != kStoreRepoFormatVersion) {
    return Status::NotSupported(url + ": a repository on an object store must be of format " +
                                std::to_string(kStoreRepoFormatVersion));
  }
  remote->SetRetention(config.lock_mode, config.lock_days);
  CBT_RETURN_IF_ERROR(remote->SyncDown(work, "", false));
  CBT_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(work, kConfigFile), *config_text));
  Repository repo(work, config, remote);
  repo.location_ = parsed.ToString();
  return repo;
}

Result<Repository> Repository::OpenAny(const std::string& location, bool create,
                                       const std::string& ca_cert) {
  if (objstore::IsS3Url(location)) return OpenS3(location, create, ca_cert);
  return Open(location, create);
}

Result<std::shared_ptr<const DiskFile>> Repository::OpenDiskFile(const std::string& path) const {
  return DiskFile::Open(path, packs_);
}

Status Repository::WriteConfig(const RepoConfig& config) {
  if (config.version != kStoreRepoFormatVersion) {
    return Status::InvalidArgument("only a format-3 config is ever written");
  }
  if (remote_)
    CBT_RETURN_IF_ERROR(remote_->client().Put(kConfigFile, EncodeConfig(config)).status());
  CBT_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(path_, kConfigFile), EncodeConfig(config)));
  CBT_RETURN_IF_ERROR(FsyncDir(path_));
  config_ = config;
  return Status::Ok();
}

namespace {

Result<UniqueFd> LockStore(const Repository& repo, int op) {
  const std::string path = JoinPath(repo.path(), kStoreLockFile);
  for (int attempt = 0; attempt < 10; ++attempt) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, kFileMode);
    if (fd < 0) {
      if (errno == ELOOP) {
        return Status::Corruption(path + " is a symbolic link; a lock is never taken through one");
      }
      return Status::FromErrno(errno, path);
    }
    UniqueFd owner(fd);
    while (::flock(fd, op) != 0) {
      if (errno == EINTR) continue;
      if (errno == EWOULDBLOCK) {
        return Status::Busy("other commands are using the repository " + repo.path());
      }
      return Status::FromErrno(errno, path);
    }
    // Held on the file still named store.lock?  One removed or replaced
    // meanwhile (by hand) would let a second holder in beside us.
    struct stat mine, named;
    if (::fstat(fd, &mine) != 0) return Status::FromErrno(errno, path);
    if (::stat(path.c_str(), &named) == 0 && mine.st_ino == named.st_ino &&
        mine.st_dev == named.st_dev) {
      return owner;
    }
  }
  return Status::Busy("could not take the lock " + path + " (it keeps changing)");
}

}  // namespace

Result<StoreLock> StoreLock::Shared(const Repository& repo) {
  CBT_ASSIGN_OR_RETURN(UniqueFd fd, LockStore(repo, LOCK_SH));
  return StoreLock(std::move(fd));
}

Result<StoreLock> StoreLock::Exclusive(const Repository& repo) {
  CBT_ASSIGN_OR_RETURN(UniqueFd fd, LockStore(repo, LOCK_EX | LOCK_NB));
  return StoreLock(std::move(fd));
}

Result<std::string> Repository::Id(bool create) const {
  const std::string file = JoinPath(path_, kIdFile);
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto text = ReadFile(file);
    if (text.ok()) {
      std::string id = *text;
      while (!id.empty() && (id.back() == '\n' || id.back() == '\r')) id.pop_back();
      if (!IsUuid(id)) return Status::Corruption(file + ": not a repository id (a UUID)");
      return id;
    }
    if (!text.status().IsNotFound() || !create) return text.status();
    if (remote_) {
      // One id for every host writing to the store: the first one made.
      CBT_ASSIGN_OR_RETURN(std::string fresh, NewUuid());
      CBT_ASSIGN_OR_RETURN(std::string stored, remote_->PutRootFileIfAbsent(kIdFile, fresh + "\n"));
      CBT_RETURN_IF_ERROR(WriteFileAtomic(file, stored));
      continue;
    }
    // Written to a temporary, then linked: link() never replaces, so of two
    // processes creating it at once, the second reads the first's.
    CBT_ASSIGN_OR_RETURN(std::string fresh, NewUuid());
    const std::string tmp = file + ".tmp." + fresh;  // unique even between threads
    CBT_RETURN_IF_ERROR(WriteNewFile(tmp, fresh + "\n"));
    const int rc = ::link(tmp.c_str(), file.c_str());
    const int err = errno;
    ::unlink(tmp.c_str());
    if (rc != 0 && err != EEXIST) return Status::FromErrno(err, file);
    CBT_RETURN_IF_ERROR(FsyncDir(path_));
  }
  return Status::Corruption(file + ": cannot be read back");
}

Result<std::vector<std::string>> Repository::ListVms() const {
  CBT_ASSIGN_OR_RETURN(auto names, ListDir(path_));
  std::vector<std::string> vms;
  for (auto& n : names) {
    if (IsUuid(n) && IsRealDirectory(JoinPath(path_, n))) vms.push_back(std::move(n));
  }
  return vms;
}

Result<std::vector<std::string>> Repository::ListPoints(const std::string& vm) const {
  if (!IsUuid(vm)) return Status::InvalidArgument("'" + vm + "' is not a VM UUID");
  auto names = ListDir(VmDir(path_, vm));
  if (!names.ok()) {
    if (names.status().IsNotFound()) {
      return Status::NotFound("no backups of VM " + vm + " in " + path_);
    }
    return names.status();
  }
  std::vector<std::string> points;
  for (auto& n : *names) {
    if (IsTimestamp(n) && IsRealDirectory(PointDir(path_, vm, n))) points.push_back(std::move(n));
  }
  return points;  // ListDir sorts, and timestamps sort chronologically
}

std::string Repository::PointPath(const std::string& vm, const std::string& point) const {
  return PointDir(path_, vm, point);
}

Result<Manifest> Repository::ReadManifest(const std::string& vm, const std::string& point) const {
  if (!IsUuid(vm)) return Status::InvalidArgument("'" + vm + "' is not a VM UUID");
  if (!IsTimestamp(point)) {
    return Status::InvalidArgument("'" + point + "' is not a point (expected YYYYMMDDTHHMMSSZ)");
  }
  // A linked VM or point directory could lead anywhere on this host.
  for (const std::string& dir : {VmDir(path_, vm), PointPath(vm, point)}) {
    if (PathExists(dir) && !IsRealDirectory(dir)) {
      return Status::Corruption(dir + " is a symbolic link or not a directory");
    }
  }
  std::string file = JoinPath(PointPath(vm, point), kManifestFile);
  auto text = ReadFile(file);
  if (!text.ok()) {
    if (text.status().IsNotFound()) {
      return Status::NotFound("VM " + vm + " has no point " + point);
    }
    return text.status();
  }
  CBT_ASSIGN_OR_RETURN(Manifest m, DecodeManifest(*text, file));
  if (m.vm_uuid != vm || m.point != point) {
    return Status::Corruption(file + ": manifest names another VM or point");
  }
  return m;
}

Result<std::vector<ChainFile>> Repository::DiskChain(const std::string& vm,
                                                     const std::string& point,
                                                     const std::string& vdi) const {
  std::vector<ChainFile> chain;
  std::string current = point;
  std::string child = point;
  uint64_t size = 0;
  while (true) {
    auto read = ReadManifest(vm, current);
    if (!read.ok()) {
      if (chain.empty() || !read.status().IsNotFound()) return read.status();
      return Status::Corruption(JoinPath(PointPath(vm, child), kManifestFile) + ": disk " + vdi +
                                " needs parent point " + current + ", which is missing");
    }
    const Manifest& m = *read;
    const DiskRecord* d = m.FindDisk(vdi);
    if (d == nullptr) {
      if (chain.empty()) return Status::NotFound("point " + point + " has no disk " + vdi);
      return Status::Corruption("VM " + vm + " point " + child + " disk " + vdi +
                                ": parent point " + current + " does not hold the disk");
    }
    if (!chain.empty() && d->virtual_size != size) {
      return Status::Corruption("VM " + vm + " disk " + vdi + ": point " + current +
                                " has another virtual size than its child");
    }
    size = d->virtual_size;
    chain.push_back({current, d->file, current});
    for (const auto& l : d->layers) chain.push_back({current, l.file, l.origin});
    if (d->base) break;
    child = current;
    current = d->parent_point;
  }
  std::reverse(chain.begin(), chain.end());
  return chain;
}

Result<std::optional<PointDisk>> Repository::NewestPointWithDisk(
    const std::string& vm, const std::string& vdi, const std::string& before,
    UnreadableManifest unreadable) const {
  CBT_ASSIGN_OR_RETURN(auto points, ListPoints(vm));
  for (auto it = points.rbegin(); it != points.rend(); ++it) {
    if (!before.empty() && *it >= before) continue;
    auto m = ReadManifest(vm, *it);
    if (!m.ok()) {
      if (unreadable == UnreadableManifest::kSkip) continue;
      return m.status();
    }
    if (const DiskRecord* d = m->FindDisk(vdi)) return std::optional<PointDisk>({*it, *d});
  }
  return std::optional<PointDisk>();
}

namespace {

std::string HostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::string DescribeHolder(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) return "another process";
  auto str = [&j](const char* k) {
    return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string("?");
  };
  std::string pid = j.contains("pid") && j["pid"].is_number_integer()
                        ? std::to_string(j["pid"].get<long>())
                        : "?";
  return "pid " + pid + " on " + str("host") + " (" + str("command") + ", since " + str("started") +
         ")";
}

}  // namespace

Result<VmLock> VmLock::Acquire(const Repository& repo, const std::string& vm,
                               const std::string& command) {
  if (!IsUuid(vm)) return Status::InvalidArgument("'" + vm + "' is not a VM UUID");
  const std::string vm_dir = VmDir(repo.path(), vm);
  if (PathExists(vm_dir) && !IsRealDirectory(vm_dir)) {
    return Status::Corruption(vm_dir +
                              " is not a directory (a symbolic link?); refusing to write "
                              "through it");
  }
  if (!IsDirectory(vm_dir)) {
    CBT_RETURN_IF_ERROR(MakeDir(vm_dir));
    // The new VM directory must survive a crash with the points put in it.
    CBT_RETURN_IF_ERROR(FsyncDir(repo.path()));
  }
  // The store lock first, always in this order: a collection waits for
  // every VM lock holder, and a holder never waits for a collection while
  // holding a VM lock.
  CBT_ASSIGN_OR_RETURN(StoreLock store, StoreLock::Shared(repo));
  const std::string lock_path = JoinPath(vm_dir, kLockFile);
  int sync_waits = 0;
  for (int attempt = 0; attempt < 10; ++attempt) {
    int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, kFileMode);
    if (fd < 0) {
      if (errno == ELOOP) {
        return Status::Corruption(lock_path +
                                  " is a symbolic link; a lock is never taken "
                                  "through one");
      }
      return Status::FromErrno(errno, lock_path);
    }
    UniqueFd owner(fd);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK) return Status::FromErrno(errno, lock_path);
      auto text = ReadFile(lock_path);
      if (repo.remote() && text.ok() && text->empty() && attempt < 9) {
        // The working copy's sync holds it for a moment (repo/remote.h).
        ::usleep(200 * 1000);
        attempt = std::max(attempt - 1, 0);
        if (++sync_waits < 300) continue;
      }
      return Status::Busy("VM " + vm + " is locked by " + DescribeHolder(text.ok() ? *text : "") +
                          "; wait for it to finish");
    }
    // The previous holder may have unlinked the file we opened before it
    // released: then our flock is on a dead file, and we start over.
    struct stat mine, named;
    if (::fstat(fd, &mine) != 0) return Status::FromErrno(errno, lock_path);
    if (::stat(lock_path.c_str(), &named) != 0 || mine.st_ino != named.st_ino ||
        mine.st_dev != named.st_dev) {
      continue;
    }
    nlohmann::json info = {{"host", HostName()},
                           {"pid", static_cast<long>(::getpid())},
                           {"command", command},
                           {"started", FormatTimestamp(std::time(nullptr))}};
    const std::string text = info.dump() + "\n";
    if (::ftruncate(fd, 0) != 0) return Status::FromErrno(errno, lock_path);
    CBT_RETURN_IF_ERROR(PwriteAll(fd, text.data(), text.size(), 0, lock_path));
    VmLock lock(std::move(store), lock_path, std::move(owner));
    if (repo.remote()) {
      // The store's lock, then the VM's points as the store has them now:
      // another host may have written or deleted some since the open.
      CBT_ASSIGN_OR_RETURN(lock.writer_, repo.remote()->RegisterWriter(info.dump()));
      CBT_ASSIGN_OR_RETURN(lock.lease_,
                           objstore::Lease::Acquire(&repo.remote()->client(), vm + "/" + kLockFile,
                                                    info.dump(), objstore::DefaultLeaseSeconds()));
      CBT_RETURN_IF_ERROR(repo.remote()->SyncDown(repo.path(), vm, true));
    }
    // We hold the lock: any temporary here was left by a writer that died,
    // and a journal by a delete that died (finished here, before anything
    // else reads or writes the VM's points).
    CBT_ASSIGN_OR_RETURN(auto names, ListDir(vm_dir));
    const bool journal = PathExists(JoinPath(vm_dir, kJournalFile));
    for (const auto& n : names) {
      if (ParseTempPointName(n) || (!journal && ParseDeletingDirName(n))) {
        CBT_RETURN_IF_ERROR(RemoveTree(JoinPath(vm_dir, n)));
      } else if (n.rfind(std::string(kJournalFile) + ".tmp.", 0) == 0) {
        // A journal being written when its writer died: that delete never
        // started.
        ::unlink(JoinPath(vm_dir, n).c_str());
      }
    }
    CBT_RETURN_IF_ERROR(FinishInterruptedDelete(repo, vm));
    if (repo.remote()) {
      // Finishes a delete another host left half-published, and removes
      // objects of points that never got their manifest.
      CBT_RETURN_IF_ERROR(repo.remote()->PublishVm(repo.path(), vm));
    }
    return lock;
  }
  return Status::Busy("could not take the lock " + lock_path + " (it keeps changing)");
}

Status VmLock::Check() const {
  if (writer_) CBT_RETURN_IF_ERROR(writer_->Check());
  if (lease_) return lease_->Check();
  return Status::Ok();
}

VmLock::~VmLock() {
  lease_.reset();  // the store's lock before the local one
  writer_.reset();
  if (!path_.empty()) {
    // Unlink while still holding the flock, so no one can take a lock on a
    // file that is about to disappear without noticing (see Acquire).
    ::unlink(path_.c_str());
  }
}

Result<std::unique_ptr<PointWriter>> PointWriter::Begin(const Repository& repo, const VmLock& lock,
                                                        const std::string& vm,
                                                        const std::string& point) {
  if (!IsTimestamp(point)) return Status::InvalidArgument("'" + point + "' is not a timestamp");
  std::string vm_dir = VmDir(repo.path(), vm);
  std::string final_dir = PointDir(repo.path(), vm, point);
  if (PathExists(final_dir)) return Status::Exists("VM " + vm + " already has point " + point);
  // Converted on the first write (docs/FORMAT.md, "config.json"): read
  // again from disk, since another writer may have converted it already.
  CBT_ASSIGN_OR_RETURN(std::string text, ReadFile(JoinPath(repo.path(), kConfigFile)));
  CBT_ASSIGN_OR_RETURN(RepoConfig config, ParseConfig(text, JoinPath(repo.path(), kConfigFile)));
  if (config.version != kStoreRepoFormatVersion) {
    config = RepoConfig();
    CBT_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(repo.path(), kConfigFile), EncodeConfig(config)));
    CBT_RETURN_IF_ERROR(FsyncDir(repo.path()));
  }
  StoreOptions options;
  options.compress = config.compress;
  options.level = config.level;
  options.key = config.key;
  options.packs = repo.packs();
  std::unique_ptr<PackUploader> uploader;
  if (repo.remote()) {
    // Each pack goes to the store as soon as it is finished, while the
    // writer fills the next.
    uploader = std::make_unique<PackUploader>(repo.remote().get(), repo.path());
    options.on_pack_finished = [u = uploader.get()](uint64_t id) { u->Enqueue(id); };
  }
  CBT_ASSIGN_OR_RETURN(auto store, BlockStore::Open(repo.path(), options));
  std::string temp = JoinPath(vm_dir, TempPointName(point, ::getpid()));
  CBT_RETURN_IF_ERROR(RemoveTree(temp));
  CBT_RETURN_IF_ERROR(MakeDir(temp));
  auto writer =
      std::unique_ptr<PointWriter>(new PointWriter(vm_dir, temp, final_dir, std::move(store)));
  writer->repo_ = &repo;
  writer->lock_ = &lock;
  writer->uploader_ = std::move(uploader);
  return writer;
}

PointWriter::~PointWriter() {
  if (committed_) return;
  (void)RemoveTree(temp_dir_);
  uploader_.reset();  // stops uploading packs no point will refer to
  if (repo_ != nullptr && repo_->remote()) {
    // Never published: the store may hold some of the packs (garbage for
    // a collection), the working copy keeps none of it.
    for (const auto& index : store_->written_indexes()) ::unlink(index.c_str());
    for (uint64_t id : store_->created_packs()) ::unlink(PackPath(repo_->path(), id).c_str());
  }
}

Result<std::unique_ptr<DiskFileWriter>> PointWriter::CreateDisk(const std::string& vdi,
                                                                FileKind kind,
                                                                uint64_t virtual_size) {
  return DiskFileWriter::Create(JoinPath(temp_dir_, DiskFileName(vdi)), kind, virtual_size,
                                store_.get());
}

Result<std::unique_ptr<DiskFileWriter>> PointWriter::CreateFile(const std::string& name,
                                                                FileKind kind,
                                                                uint64_t virtual_size) {
  // <vdi>.cbd or <vdi>.<timestamp>.cbd, and nothing that leaves the point.
  const size_t dot = name.find('.');
  const std::string vdi = name.substr(0, dot);
  const std::string rest = dot == std::string::npos ? "" : name.substr(dot);
  const bool layer = rest.size() == 1 + 16 + 4 && IsTimestamp(rest.substr(1, 16)) &&
                     rest.substr(17) == kDiskFileSuffix;
  if (!IsUuid(vdi) || (rest != kDiskFileSuffix && !layer)) {
    return Status::InvalidArgument("'" + name + "' is not a disk or layer file name");
  }
  return DiskFileWriter::Create(JoinPath(temp_dir_, name), kind, virtual_size, store_.get());
}

Status PointWriter::WriteMetadata(const std::string& blob) {
  return WriteNewFile(JoinPath(temp_dir_, kMetadataFile), blob);
}

Status PointWriter::Commit(const Manifest& manifest) {
  if (committed_) return Status::InvalidArgument("point committed twice");
  for (const auto& d : manifest.disks) {
    if (!PathExists(JoinPath(temp_dir_, d.file))) {
      return Status::InvalidArgument("manifest names a disk file that was not written: " + d.file);
    }
  }
  // The blocks the disk files refer to must be durable, and indexed,
  // before the commit makes the files visible.
  CBT_RETURN_IF_ERROR(store_->Flush());
  // Never commit a manifest that readers would refuse.
  const std::string text = EncodeManifest(manifest);
  auto check = DecodeManifest(text, "new manifest");
  if (!check.ok()) return check.status();
  if (JoinPath(vm_dir_, manifest.point) != final_dir_ ||
      final_dir_.substr(0, vm_dir_.size()) != vm_dir_ ||
      vm_dir_.substr(vm_dir_.size() - manifest.vm_uuid.size()) != manifest.vm_uuid) {
    return Status::InvalidArgument("manifest names another VM or point than the one written");
  }
  CBT_RETURN_IF_ERROR(WriteNewFile(JoinPath(temp_dir_, kManifestFile), text));
  // Entries of the temporary must be durable before the rename publishes it.
  CBT_RETURN_IF_ERROR(FsyncDir(temp_dir_));
  if (PathExists(final_dir_)) return Status::Exists(final_dir_ + " appeared meanwhile");
  if (repo_ != nullptr && repo_->remote()) {
    // On an object store the point is visible once its manifest is
    // uploaded; the working copy follows.
    const auto& remote = *repo_->remote();
    CBT_RETURN_IF_ERROR(uploader_->Wait());
    for (const auto& index : store_->written_indexes()) {
      CBT_RETURN_IF_ERROR(remote.PublishIndex(index));
    }
    const std::string vm = vm_dir_.substr(vm_dir_.rfind('/') + 1);
    CBT_RETURN_IF_ERROR(
        remote.PublishPoint(vm, manifest.point, temp_dir_, [this] { return lock_->Check(); }));
  }
  if (::rename(temp_dir_.c_str(), final_dir_.c_str()) != 0) {
    return Status::FromErrno(errno, final_dir_);
  }
  committed_ = true;
  // Without this a power loss could undo the rename of a point we reported
  // as committed.
  return FsyncDir(vm_dir_);
}

}  // namespace cbt::repo
