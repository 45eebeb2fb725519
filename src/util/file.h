// SPDX-License-Identifier: Apache-2.0
//
// Thin POSIX file helpers: errno turned into a Status in one place, short
// reads/writes and EINTR handled once, the modes of created files (0600)
// and directories (0700) decided once.
//
// A repository may come from elsewhere, so OpenRead and ReadFile never
// follow a symbolic link in the last component (Corruption naming the
// path), and IsRealDirectory does not count a link to a directory; files a
// user names on the command line are read with the *UserFile variants,
// which follow links as any tool does.
//
// Thread-safety: free functions are thread-safe; a UniqueFd is a value that
// one thread owns (pread/pwrite on the same fd from many threads is fine).
#ifndef CBT_UTIL_FILE_H_
#define CBT_UTIL_FILE_H_

#include "util/status.h"

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cbt {

inline constexpr mode_t kFileMode = 0600;
inline constexpr mode_t kDirMode = 0700;

// Owns a file descriptor and closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// Opens `path` read-only (O_CLOEXEC | O_NOFOLLOW).  NotFound if it does
// not exist, Corruption if it is a symbolic link.
Result<UniqueFd> OpenRead(const std::string& path);
// Opens a file the user named, following symbolic links.
Result<UniqueFd> OpenUserFile(const std::string& path);
// Creates `path` for writing with mode 0600; fails with Exists if present.
Result<UniqueFd> CreateExclusive(const std::string& path, mode_t mode = kFileMode);

// Reads exactly `len` bytes at `off`.  Corruption if the file ends first.
Status PreadAll(int fd, void* buf, size_t len, uint64_t off, const std::string& what);
// Writes exactly `len` bytes at `off` (retrying short writes).
Status PwriteAll(int fd, const void* buf, size_t len, uint64_t off, const std::string& what);
Status Fsync(int fd, const std::string& what);
// fsyncs a directory, making the entries created or renamed in it durable.
Status FsyncDir(const std::string& dir);
// Makes durable everything written to the filesystems that hold the
// directories `dirs`: one syncfs per filesystem, which Linux documents as
// the guarantee of an fsync of every file and directory on it, for the
// price of one device cache flush instead of one per file.  Errors: those
// of the sync (a failed journal commit or cache flush; since Linux 5.8 also
// a writeback failure recorded on the filesystem while the sync ran), or of
// opening a directory.  A writeback failure that happened before the call
// is not reported here: the writer of each file must have waited for its
// writeback (WritebackWindow::WriteOut), which reports it.
Status SyncFilesystemsOf(const std::vector<std::string>& dirs);
Result<uint64_t> FileSize(int fd, const std::string& what);

// Reads a whole (small) file; not through a symbolic link.
Result<std::string> ReadFile(const std::string& path);
// Reads a whole (small) file the user named, following symbolic links.
Result<std::string> ReadUserFile(const std::string& path);
// Writes `data` to a new file `path` (`mode`, must not exist) and fsyncs it.
Status WriteNewFile(const std::string& path, const std::string& data, mode_t mode = kFileMode);
// Writes `data` to `path` through a temporary sibling and rename, fsyncing the
// file and the directory, so a reader sees the old or the new content only.
// The file gets `mode` (a mode other than kFileMode regardless of the umask);
// only files that hold no disk data
// and are read by other users (monitoring) are given more than 0600.
Status WriteFileAtomic(const std::string& path, const std::string& data, mode_t mode = kFileMode);

// mkdir with mode 0700; OK if the directory already exists.
Status MakeDir(const std::string& path);
// mkdir -p with mode 0700 for every created component.
Status MakeDirs(const std::string& path);
// Where temporaries go: $TMPDIR when set and not empty, else /tmp.
std::string TempRoot();
// Recursively removes a directory tree (used on temporaries only).
Status RemoveTree(const std::string& path);
// Names in a directory, without "." and "..", sorted.
Result<std::vector<std::string>> ListDir(const std::string& path);
// True for a directory or a link to one.
bool IsDirectory(const std::string& path);
// True for a directory that is not a symbolic link.
bool IsRealDirectory(const std::string& path);
bool PathExists(const std::string& path);

std::string JoinPath(const std::string& a, const std::string& b);

}  // namespace cbt

#endif  // CBT_UTIL_FILE_H_
