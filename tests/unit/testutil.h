// SPDX-License-Identifier: Apache-2.0
//
// Helpers for unit tests: a private temporary directory per test and
// deterministic block contents.
#ifndef CBT_TESTS_UNIT_TESTUTIL_H_
#define CBT_TESTS_UNIT_TESTUTIL_H_

#include "repo/disk_file.h"

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

// 64 KiB whose content depends on `seed` (never all zero).
std::vector<char> Block(uint32_t seed);

// Writes a disk file of `kind` and virtual size `size` at `path`, with
// `fill` adding its blocks, and opens it.  Throws std::runtime_error if a
// step fails (the test then fails).
std::shared_ptr<const repo::DiskFile> WriteDiskFile(
    const std::string& path, repo::FileKind kind, uint64_t size,
    const std::function<void(repo::DiskFileWriter&)>& fill);

}  // namespace cbt::testing

#endif  // CBT_TESTS_UNIT_TESTUTIL_H_
