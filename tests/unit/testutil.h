// SPDX-License-Identifier: Apache-2.0
//
// Helpers for unit tests: a private temporary directory (or repository) per
// test and deterministic block contents.
#ifndef CBT_TESTS_UNIT_TESTUTIL_H_
#define CBT_TESTS_UNIT_TESTUTIL_H_

#include "image/composed_image.h"
#include "repo/disk_file.h"
#include "repo/repository.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cbt::testing {

// A fresh directory removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The VM and disk that repository tests store their points under.
inline const std::string kVm = "11111111-2222-4333-8444-555555555555";
inline const std::string kVdi = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";

// A repository created as `name` in a fresh temporary directory.  Throws
// std::runtime_error if it cannot be created (the test then fails).
struct TempRepository {
  explicit TempRepository(const std::string& name = "r");
  TempDir dir;
  std::unique_ptr<repo::Repository> repo;
};

// 64 KiB whose content depends on `seed` (never all zero).
std::vector<char> Block(uint32_t seed);

// Writes a disk file of `kind` and virtual size `size` at `path`, with
// `fill` adding its blocks, and opens it.  Throws std::runtime_error if a
// step fails (the test then fails).
std::shared_ptr<const repo::DiskFile> WriteDiskFile(
    const std::string& path, repo::FileKind kind, uint64_t size,
    const std::function<void(repo::DiskFileWriter&)>& fill);

// A chain of disk files in a temporary directory, base first, and the
// image composed of them.
struct TempChain {
  TempDir dir;
  std::vector<std::string> paths;
  std::vector<std::shared_ptr<const repo::DiskFile>> files;
  std::shared_ptr<const image::ComposedImage> img;

  // Writes the next file of the chain, `name` in `dir`, as WriteDiskFile.
  void Add(const std::string& name, repo::FileKind kind, uint64_t size,
           const std::function<void(repo::DiskFileWriter&)>& fill);
  // Composes `img` of the files added, as disk "vdi" of VM "vm" at points
  // "p0", "p1", ... (one a file).  Throws std::runtime_error if that fails.
  void Compose();
};

// Sets the environment variable `name` to `value` for the object's
// lifetime, then restores what was there (or its absence).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value);
  ~ScopedEnv();
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  bool had_;
  std::string old_;
};

}  // namespace cbt::testing

#endif  // CBT_TESTS_UNIT_TESTUTIL_H_
