// SPDX-License-Identifier: Apache-2.0
//
// A disk data file (.cbd) from a damaged repository: Open must refuse it
// with an error or accept it, and every block of an accepted file must read
// (or fail its checksum) without touching memory outside its buffer.
//
// Random bytes almost never pass the header and index checksums, which
// would keep the fuzzer at the first check.  So when the first reserved
// header byte (offset 88) is odd, the target first rewrites both checksums
// (docs/FORMAT.md, section 7.1) to match the mutated bytes, and the index
// and entry checks are explored too.
#include "repo/disk_file.h"
#include "util/endian.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* raw, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(raw), size);
  if (bytes.size() >= 4096 && (bytes[88] & 1)) {
    const uint64_t entries = cbt::LoadLe64(bytes.data() + 48),
                   index = cbt::LoadLe64(bytes.data() + 64);
    if (index <= bytes.size() && entries <= (bytes.size() - index) / 32) {
      cbt::StoreLe64(bytes.data() + 72, cbt::repo::Checksum(bytes.data() + index, entries * 32));
    }
    cbt::StoreLe64(bytes.data() + 80, cbt::repo::Checksum(bytes.data(), 80));
  }
  const uint8_t* data = reinterpret_cast<const uint8_t*>(bytes.data());
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
