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

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

uint64_t Le64(const std::string& b, size_t off) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[off + i]);
  return v;
}

void PutLe64(std::string& b, size_t off, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[off + i] = static_cast<char>(v >> (8 * i));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* raw, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(raw), size);
  if (bytes.size() >= 4096 && (bytes[88] & 1)) {
    const uint64_t entries = Le64(bytes, 48), index = Le64(bytes, 64);
    if (index <= bytes.size() && entries <= (bytes.size() - index) / 32) {
      PutLe64(bytes, 72, cbt::repo::Checksum(bytes.data() + index, entries * 32));
    }
    PutLe64(bytes, 80, cbt::repo::Checksum(bytes.data(), 80));
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
