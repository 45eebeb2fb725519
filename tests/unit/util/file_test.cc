// SPDX-License-Identifier: Apache-2.0
#include "util/file.h"

#include "testutil.h"

#include <catch2/catch.hpp>

#include <string>

namespace cbt {
namespace {

using testing::TempDir;

TEST_CASE("SyncFilesystemsOf syncs the filesystems of existing directories") {
  TempDir dir;
  REQUIRE(MakeDir(dir.Sub("a")).ok());
  // Two directories of one filesystem, and the same one twice.
  CHECK(SyncFilesystemsOf({dir.path(), dir.Sub("a"), dir.path()}).ok());
  CHECK(SyncFilesystemsOf({}).ok());
}

TEST_CASE("SyncFilesystemsOf names a directory it cannot open") {
  TempDir dir;
  REQUIRE(WriteFileAtomic(dir.Sub("file"), "x").ok());
  const Status missing = SyncFilesystemsOf({dir.path(), dir.Sub("gone")});
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.message().find(dir.Sub("gone")) != std::string::npos);
  // A file is no directory: nothing may pass for the directory of a pack.
  CHECK_FALSE(SyncFilesystemsOf({dir.Sub("file")}).ok());
}

}  // namespace
}  // namespace cbt
