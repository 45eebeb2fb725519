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
// Locking: the lock file is written completely under a unique name and then
// hard-linked to REPO/<vm>/lock; link() fails with EEXIST if the lock is
// held, so two processes can never both believe they hold it, and the lock
// is never seen half-written.  A lock whose pid is dead on this host is
// stale: it is renamed away (only one contender wins that rename) and the
// acquisition is retried.
#include "repo/repository.h"

#include "repo/layout.h"
#include "util/file.h"

#include <nlohmann/json.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

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
  CBT_RETURN_IF_ERROR(CheckConfig(text, config));
  return Repository(path);
}

Result<std::vector<std::string>> Repository::ListVms() const {
  CBT_ASSIGN_OR_RETURN(auto names, ListDir(path_));
  std::vector<std::string> vms;
  for (auto& n : names) {
    if (IsUuid(n) && IsDirectory(JoinPath(path_, n))) vms.push_back(std::move(n));
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
    if (IsTimestamp(n)) points.push_back(std::move(n));
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

Result<std::vector<std::string>> Repository::DiskChain(const std::string& vm,
                                                       const std::string& point,
                                                       const std::string& vdi) const {
  std::vector<std::string> chain;
  std::string current = point;
  uint64_t size = 0;
  while (true) {
    CBT_ASSIGN_OR_RETURN(Manifest m, ReadManifest(vm, current));
    const DiskRecord* d = m.FindDisk(vdi);
    if (d == nullptr) {
      if (chain.empty()) return Status::NotFound("point " + point + " has no disk " + vdi);
      return Status::Corruption("VM " + vm + " point " + chain.back() + " disk " + vdi +
                                ": parent point " + current + " does not hold the disk");
    }
    if (!chain.empty() && d->virtual_size != size) {
      return Status::Corruption("VM " + vm + " disk " + vdi + ": point " + current +
                                " has another virtual size than its child");
    }
    size = d->virtual_size;
    chain.push_back(current);
    if (d->base) break;
    current = d->parent_point;
  }
  std::reverse(chain.begin(), chain.end());
  return chain;
}

namespace {

std::string HostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

bool ProcessAlive(long pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

std::string DescribeHolder(const nlohmann::json& j) {
  return "pid " + std::to_string(j.value("pid", 0L)) + " on " + j.value("host", "?") + " (" +
         j.value("command", "?") + ", since " + j.value("started", "?") + ")";
}

}  // namespace

Result<VmLock> VmLock::Acquire(const Repository& repo, const std::string& vm,
                               const std::string& command) {
  if (!IsUuid(vm)) return Status::InvalidArgument("'" + vm + "' is not a VM UUID");
  const std::string vm_dir = VmDir(repo.path(), vm);
  if (!IsDirectory(vm_dir)) {
    CBT_RETURN_IF_ERROR(MakeDir(vm_dir));
    // The new VM directory must survive a crash with the points put in it.
    CBT_RETURN_IF_ERROR(FsyncDir(repo.path()));
  }
  const std::string lock_path = JoinPath(vm_dir, kLockFile);
  const std::string host = HostName();
  nlohmann::json info = {{"host", host},
                         {"pid", static_cast<long>(::getpid())},
                         {"command", command},
                         {"started", FormatTimestamp(std::time(nullptr))}};
  const std::string mine = lock_path + ".new." + std::to_string(::getpid());
  ::unlink(mine.c_str());
  CBT_RETURN_IF_ERROR(WriteNewFile(mine, info.dump() + "\n"));

  Status result = Status::Ok();
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (::link(mine.c_str(), lock_path.c_str()) == 0) {
      ::unlink(mine.c_str());
      // Make the lock durable before work starts, so that recovery after a
      // crash sees who was writing.
      Status s = FsyncDir(vm_dir);
      VmLock lock(lock_path);
      if (!s.ok()) return s;
      // We hold the lock: any temporary here was left by a dead writer.
      CBT_ASSIGN_OR_RETURN(auto names, ListDir(vm_dir));
      for (const auto& n : names) {
        if (ParseTempPointName(n)) CBT_RETURN_IF_ERROR(RemoveTree(JoinPath(vm_dir, n)));
        // lock.new.<pid> / lock.stale.<pid> of writers that died mid-acquire.
        if (n.rfind(std::string(kLockFile) + ".", 0) == 0) {
          long pid = std::atol(n.c_str() + n.find_last_of('.') + 1);
          if (pid != ::getpid() && !ProcessAlive(pid)) ::unlink(JoinPath(vm_dir, n).c_str());
        }
      }
      return lock;
    }
    if (errno != EEXIST) {
      result = Status::FromErrno(errno, lock_path);
      break;
    }
    auto text = ReadFile(lock_path);
    if (!text.ok()) {
      if (text.status().IsNotFound()) continue;  // released meanwhile
      result = text.status();
      break;
    }
    auto holder = nlohmann::json::parse(*text, nullptr, false);
    bool stale = false;
    if (holder.is_discarded() || !holder.is_object()) {
      // link() publishes only complete files, so garbage here is damage.
      stale = true;
    } else if (holder.value("host", "") == host && !ProcessAlive(holder.value("pid", 0L))) {
      stale = true;
    }
    if (!stale) {
      result = Status::Busy("VM " + vm + " is locked by " + DescribeHolder(holder) +
                            "; wait for it to finish, or remove " + lock_path +
                            " if that process is gone");
      break;
    }
    // Rename, not unlink: if two processes find the same stale lock, only
    // one rename succeeds, and neither can remove a lock taken meanwhile.
    std::string stale_path = lock_path + ".stale." + std::to_string(::getpid());
    if (::rename(lock_path.c_str(), stale_path.c_str()) == 0) ::unlink(stale_path.c_str());
  }
  ::unlink(mine.c_str());
  if (result.ok()) result = Status::Busy("could not take the lock " + lock_path);
  return result;
}

VmLock::~VmLock() {
  if (!path_.empty()) ::unlink(path_.c_str());
}

Result<std::unique_ptr<PointWriter>> PointWriter::Begin(const Repository& repo, const VmLock& lock,
                                                        const std::string& vm,
                                                        const std::string& point) {
  (void)lock;
  if (!IsTimestamp(point)) return Status::InvalidArgument("'" + point + "' is not a timestamp");
  std::string vm_dir = VmDir(repo.path(), vm);
  std::string final_dir = PointDir(repo.path(), vm, point);
  if (PathExists(final_dir)) return Status::Exists("VM " + vm + " already has point " + point);
  std::string temp = JoinPath(vm_dir, TempPointName(point, ::getpid()));
  CBT_RETURN_IF_ERROR(RemoveTree(temp));
  CBT_RETURN_IF_ERROR(MakeDir(temp));
  return std::unique_ptr<PointWriter>(new PointWriter(vm_dir, temp, final_dir));
}

PointWriter::~PointWriter() {
  if (!committed_) (void)RemoveTree(temp_dir_);
}

Result<std::unique_ptr<DiskFileWriter>> PointWriter::CreateDisk(const std::string& vdi,
                                                                FileKind kind,
                                                                uint64_t virtual_size) {
  return DiskFileWriter::Create(JoinPath(temp_dir_, DiskFileName(vdi)), kind, virtual_size);
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
  CBT_RETURN_IF_ERROR(WriteNewFile(JoinPath(temp_dir_, kManifestFile), EncodeManifest(manifest)));
  // Entries of the temporary must be durable before the rename publishes it.
  CBT_RETURN_IF_ERROR(FsyncDir(temp_dir_));
  if (PathExists(final_dir_)) return Status::Exists(final_dir_ + " appeared meanwhile");
  if (::rename(temp_dir_.c_str(), final_dir_.c_str()) != 0) {
    return Status::FromErrno(errno, final_dir_);
  }
  committed_ = true;
  // Without this a power loss could undo the rename of a point we reported
  // as committed.
  return FsyncDir(vm_dir_);
}

}  // namespace cbt::repo
