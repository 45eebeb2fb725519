// SPDX-License-Identifier: Apache-2.0
#include "util/writeback_window.h"

#include "testutil.h"

#include "util/file.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <random>
#include <string>
#include <vector>

namespace cbt {
namespace {

using testing::TempDir;

// A new file `path`, open for reading and writing.
UniqueFd NewFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  return UniqueFd(fd);
}

TEST_CASE("WritebackWindow: a file written past many windows reads back whole") {
  TempDir dir;
  const std::string path = dir.Sub("f");
  const UniqueFd owner = NewFile(path);
  const int fd = owner.get();
  WritebackWindow window(fd, path, 4096);
  std::mt19937 rng(7);
  std::string all;
  // Pieces of random sizes, some smaller than a step and some larger,
  // over more than kWindows steps.
  const uint64_t total = (WritebackWindow::kWindows + 5) * WritebackWindow::kStep;
  while (all.size() < total) {
    std::string piece(std::uniform_int_distribution<size_t>(1, 3 * WritebackWindow::kStep / 2)(rng),
                      '\0');
    for (auto& c : piece) c = static_cast<char>(rng());
    REQUIRE(PwriteAll(fd, piece.data(), piece.size(), 4096 + all.size(), path).ok());
    all += piece;
    REQUIRE(window.Wrote(4096 + all.size()).ok());
  }
  REQUIRE(::fsync(fd) == 0);
  window.Release(4096 + all.size());
  std::string back(all.size(), '\0');
  REQUIRE(::pread(fd, back.data(), back.size(), 4096) == static_cast<ssize_t>(back.size()));
  CHECK(back == all);
}

TEST_CASE("WritebackWindow: a file that takes no writeback hints is no failure") {
  const int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  UniqueFd owner(fd);
  WritebackWindow window(fd, "/dev/null", 0);
  for (uint64_t i = 1; i <= 3 * WritebackWindow::kWindows; ++i) {
    REQUIRE(window.Wrote(i * WritebackWindow::kStep).ok());
  }
}

TEST_CASE("WritebackWindow: a failed wait for the writeback is returned") {
  // A descriptor that is not open fails every call, as a device error
  // fails the wait; the first kWindows steps are only started.
  WritebackWindow window(-1, "closed", 0);
  uint64_t i = 1;
  for (; i <= WritebackWindow::kWindows; ++i) {
    REQUIRE(window.Wrote(i * WritebackWindow::kStep).ok());
  }
  const Status st = window.Wrote(i * WritebackWindow::kStep);
  REQUIRE_FALSE(st.ok());
  CHECK(st.message().find("closed: writeback") != std::string::npos);
}

TEST_CASE("WritebackWindow: WriteOut leaves the file written to the device and out of the cache") {
  TempDir dir;
  const std::string path = dir.Sub("f");
  const UniqueFd owner = NewFile(path);
  const int fd = owner.get();
  WritebackWindow window(fd, path, 0);
  std::mt19937 rng(11);
  const size_t size = 3 * WritebackWindow::kStep + 12345;
  std::string all(size, '\0');
  for (auto& c : all) c = static_cast<char>(rng());
  // Written in one piece short of a window: nothing was handed to
  // writeback before WriteOut.
  REQUIRE(PwriteAll(fd, all.data(), all.size(), 0, path).ok());
  REQUIRE(window.Wrote(all.size()).ok());
  REQUIRE(window.WriteOut(all.size()).ok());
  // The cache may drop only clean pages: a page still resident would be
  // one WriteOut left dirty (tmpfs keeps its pages whatever happens).
  struct statfs fs;
  REQUIRE(::fstatfs(fd, &fs) == 0);
  if (fs.f_type != TMPFS_MAGIC) {
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    REQUIRE(map != MAP_FAILED);
    const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> resident((size + page - 1) / page);
    REQUIRE(::mincore(map, size, resident.data()) == 0);
    ::munmap(map, size);
    size_t dirty = 0;
    for (unsigned char r : resident) dirty += r & 1;
    CHECK(dirty == 0);
  }
  std::string back(all.size(), '\0');
  REQUIRE(::pread(fd, back.data(), back.size(), 0) == static_cast<ssize_t>(back.size()));
  CHECK(back == all);
}

TEST_CASE("WritebackWindow: a failed WriteOut is returned") {
  WritebackWindow window(-1, "closed", 0);
  const Status st = window.WriteOut(WritebackWindow::kStep);
  REQUIRE_FALSE(st.ok());
  CHECK(st.message().find("closed: writeback") != std::string::npos);
}

}  // namespace
}  // namespace cbt
