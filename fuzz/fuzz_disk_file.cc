// SPDX-License-Identifier: Apache-2.0
//
// A disk data file (.cbd, version 1 or 2) from a damaged repository: Open
// must refuse it with an error or accept it, ParseEntries must agree, and
// every block of an accepted file must read (or fail its checksum, or, for
// a version-2 file opened without packs, fail) without touching memory
// outside its buffer.
//
// Random bytes almost never pass the header and index checksums, which
// would keep the fuzzer at the first check.  So when the first reserved
// header byte (offset 88) is odd, the target first rewrites both checksums
// (docs/FORMAT.md, section 7.1) to match the mutated bytes, and the index
// and entry checks are explored too.
#include "repo/disk_file.h"
#include "util/endian.h"

#include <fcntl.h>
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
    // Version 2 (references into packs) has 48-byte entries.
    const uint64_t entry_size = cbt::LoadLe32(bytes.data() + 8) == 2 ? 48 : 32;
    if (index <= bytes.size() && entries <= (bytes.size() - index) / entry_size) {
      cbt::StoreLe64(bytes.data() + 72,
                     cbt::repo::Checksum(bytes.data() + index, entries * entry_size));
    }
    cbt::StoreLe64(bytes.data() + 80, cbt::repo::Checksum(bytes.data(), 80));
  }
  // A real file: Open refuses symbolic links, /proc/self/fd/N included.
  static const struct Scratch {
    Scratch() {
      const char* dir = std::getenv("TMPDIR");
      path = std::string(dir != nullptr ? dir : "/tmp") + "/fuzz-cbd.XXXXXX";
      int fd = ::mkstemp(path.data());
      if (fd < 0) std::abort();
      ::close(fd);
    }
    ~Scratch() { ::unlink(path.c_str()); }
    std::string path;
  } scratch;
  const std::string& path = scratch.path;
  int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0) std::abort();
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, bytes.data() + done, size - done);
    if (n <= 0) std::abort();
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  // The in-memory parser must agree with Open on what is valid.
  const bool parsed = cbt::repo::DiskFile::ParseEntries(bytes, "fuzz").ok();
  auto file = cbt::repo::DiskFile::Open(path);
  if (parsed != file.ok()) std::abort();
  if (file.ok()) {
    std::vector<char> buf(cbt::repo::kBlockSize);
    size_t checked = 0;
    for (const auto& e : (*file)->entries()) {
      if (e.kind != cbt::repo::EntryKind::kData) continue;
      (void)(*file)->ReadBlock(e, buf.data());
      if (++checked == 64) break;
    }
  }
  return 0;
}
