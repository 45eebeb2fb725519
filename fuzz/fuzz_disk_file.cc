// SPDX-License-Identifier: Apache-2.0
//
// A disk data file (.cbd) from a damaged repository: Open must refuse it
// with an error or accept it, and every block of an accepted file must read
// (or fail its checksum) without touching memory outside its buffer.
#include "repo/disk_file.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fd = ::memfd_create("cbd", MFD_CLOEXEC);
  if (fd < 0) std::abort();
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) std::abort();
    done += static_cast<size_t>(n);
  }
  auto file = cbt::repo::DiskFile::Open("/proc/self/fd/" + std::to_string(fd));
  if (file.ok()) {
    std::vector<char> buf(cbt::repo::kBlockSize);
    size_t checked = 0;
    for (const auto& e : (*file)->entries()) {
      if (e.kind != cbt::repo::EntryKind::kData) continue;
      (void)(*file)->ReadBlock(e, buf.data());
      if (++checked == 64) break;
    }
  }
  ::close(fd);
  return 0;
}
