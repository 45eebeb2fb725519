// SPDX-License-Identifier: Apache-2.0
#include "util/file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace cbt {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.Release();
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

Result<UniqueFd> OpenRead(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ELOOP) {
      return Status::Corruption(path +
                                " is a symbolic link; repository files are never read "
                                "through one");
    }
    return Status::FromErrno(errno, path);
  }
  return UniqueFd(fd);
}

Result<UniqueFd> OpenUserFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, path);
  return UniqueFd(fd);
}

Result<UniqueFd> CreateExclusive(const std::string& path, mode_t mode) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return Status::FromErrno(errno, path);
  return UniqueFd(fd);
}

Status PreadAll(int fd, void* buf, size_t len, uint64_t off, const std::string& what) {
  auto* p = static_cast<char*>(buf);
  while (len > 0) {
    ssize_t n = ::pread(fd, p, len, static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, what);
    }
    if (n == 0) return Status::Corruption(what + ": file is truncated");
    p += n;
    len -= static_cast<size_t>(n);
    off += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Status PwriteAll(int fd, const void* buf, size_t len, uint64_t off, const std::string& what) {
  const auto* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, what);
    }
    p += n;
    len -= static_cast<size_t>(n);
    off += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Status Fsync(int fd, const std::string& what) {
  if (::fsync(fd) != 0) return Status::FromErrno(errno, what);
  return Status::Ok();
}

Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, dir);
  UniqueFd owner(fd);
  return Fsync(fd, dir);
}

Status SyncFilesystemsOf(const std::vector<std::string>& dirs) {
  std::vector<dev_t> synced;
  for (const auto& dir : dirs) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, dir);
    UniqueFd owner(fd);
    struct stat st;
    if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, dir);
    if (std::find(synced.begin(), synced.end(), st.st_dev) != synced.end()) continue;
    if (::syncfs(fd) != 0) return Status::FromErrno(errno, dir + ": syncfs");
    synced.push_back(st.st_dev);
  }
  return Status::Ok();
}

Result<uint64_t> FileSize(int fd, const std::string& what) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, what);
  return static_cast<uint64_t>(st.st_size);
}

namespace {

Result<std::string> ReadAll(UniqueFd fd, const std::string& path) {
  CBT_ASSIGN_OR_RETURN(uint64_t size, FileSize(fd.get(), path));
  std::string data(size, '\0');
  CBT_RETURN_IF_ERROR(PreadAll(fd.get(), data.data(), size, 0, path));
  return data;
}

}  // namespace

Result<std::string> ReadFile(const std::string& path) {
  CBT_ASSIGN_OR_RETURN(UniqueFd fd, OpenRead(path));
  return ReadAll(std::move(fd), path);
}

Result<std::string> ReadUserFile(const std::string& path) {
  CBT_ASSIGN_OR_RETURN(UniqueFd fd, OpenUserFile(path));
  return ReadAll(std::move(fd), path);
}

Status WriteNewFile(const std::string& path, const std::string& data, mode_t mode) {
  CBT_ASSIGN_OR_RETURN(UniqueFd fd, CreateExclusive(path, mode));
  // A mode wider than the default is meant for another user to read: the
  // umask (077 under many service managers) must not narrow it.
  if (mode != kFileMode && ::fchmod(fd.get(), mode) != 0) return Status::FromErrno(errno, path);
  CBT_RETURN_IF_ERROR(PwriteAll(fd.get(), data.data(), data.size(), 0, path));
  return Fsync(fd.get(), path);
}

Status WriteFileAtomic(const std::string& path, const std::string& data, mode_t mode) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  ::unlink(tmp.c_str());
  Status s = WriteNewFile(tmp, data, mode);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = Status::FromErrno(errno, path);
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  auto slash = path.find_last_of('/');
  return FsyncDir(slash == std::string::npos ? "." : path.substr(0, slash));
}

Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), kDirMode) != 0) {
    if (errno == EEXIST && IsDirectory(path)) return Status::Ok();
    return Status::FromErrno(errno, path);
  }
  return Status::Ok();
}

Status MakeDirs(const std::string& path) {
  if (path.empty() || IsDirectory(path)) return Status::Ok();
  auto slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0) {
    CBT_RETURN_IF_ERROR(MakeDirs(path.substr(0, slash)));
  }
  return MakeDir(path);
}

std::string TempRoot() {
  const char* env = std::getenv("TMPDIR");
  return env != nullptr && env[0] != '\0' ? env : "/tmp";
}

Status RemoveTree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::FromErrno(errno, path);
  }
  if (S_ISDIR(st.st_mode)) {
    CBT_ASSIGN_OR_RETURN(auto names, ListDir(path));
    for (const auto& name : names) CBT_RETURN_IF_ERROR(RemoveTree(JoinPath(path, name)));
    if (::rmdir(path.c_str()) != 0 && errno != ENOENT) return Status::FromErrno(errno, path);
  } else if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::FromErrno(errno, path);
  }
  return Status::Ok();
}

Result<std::vector<std::string>> ListDir(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return Status::FromErrno(errno, path);
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool IsRealDirectory(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

std::string JoinPath(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (a.back() == '/') return a + b;
  return a + "/" + b;
}

}  // namespace cbt
