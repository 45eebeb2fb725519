// SPDX-License-Identifier: Apache-2.0
#include "image/image_import.h"

#include "util/file.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

namespace cbt::image {

using repo::kBlockSize;

namespace {
constexpr uint64_t kChunk = 64 * kBlockSize;  // 4 MiB per read
}

Status WriteDifferences(int fd, const std::string& path, uint64_t size, const ComposedImage* parent,
                        repo::DiskFileWriter* w) {
  std::vector<char> cur(kChunk), old(parent ? kChunk : 0);
  for (uint64_t off = 0; off < size; off += kChunk) {
    const uint64_t n = std::min(kChunk, size - off);
    // Without a parent a hole is zeros and needs no entry; with one it may
    // hide parent data that must become ZERO, so it is read like the rest.
    if (parent == nullptr) {
      off_t data = ::lseek(fd, static_cast<off_t>(off), SEEK_DATA);
      if (data < 0 && errno == ENXIO) break;
      if (data >= 0 && static_cast<uint64_t>(data) >= off + n) continue;
    }
    const uint64_t padded = (n + kBlockSize - 1) / kBlockSize * kBlockSize;
    std::memset(cur.data() + n, 0, padded - n);
    CBT_RETURN_IF_ERROR(PreadAll(fd, cur.data(), n, off, path));
    if (parent != nullptr) {
      std::memset(old.data() + n, 0, padded - n);
      CBT_ASSIGN_OR_RETURN(size_t got, parent->Read(old.data(), n, off));
      if (got != n) return Status::Corruption("parent image is shorter than the disk");
    }
    for (uint64_t b = 0; b < padded / kBlockSize; ++b) {
      const char* blk = cur.data() + b * kBlockSize;
      const uint64_t block = off / kBlockSize + b;
      const bool zero = repo::IsAllZero(blk, kBlockSize);
      if (parent == nullptr) {
        if (!zero) CBT_RETURN_IF_ERROR(w->AddData(block, blk));
      } else if (std::memcmp(blk, old.data() + b * kBlockSize, kBlockSize) != 0) {
        CBT_RETURN_IF_ERROR(zero ? w->AddZero(block) : w->AddData(block, blk));
      }
    }
  }
  return Status::Ok();
}

Status WriteListedBlocks(int fd, const std::string& path, uint64_t size,
                         const std::vector<uint64_t>& blocks, repo::DiskFileWriter* w) {
  std::vector<char> buf(kBlockSize);
  const uint64_t nblocks = repo::BlockCount(size);
  for (uint64_t block : blocks) {
    if (block >= nblocks) {
      return Status::InvalidArgument("changed block " + std::to_string(block) +
                                     " lies beyond the end of " + path);
    }
    const uint64_t off = block * kBlockSize;
    const uint64_t n = std::min<uint64_t>(kBlockSize, size - off);
    std::memset(buf.data() + n, 0, kBlockSize - n);
    CBT_RETURN_IF_ERROR(PreadAll(fd, buf.data(), n, off, path));
    CBT_RETURN_IF_ERROR(repo::IsAllZero(buf.data(), kBlockSize) ? w->AddZero(block)
                                                                : w->AddData(block, buf.data()));
  }
  return Status::Ok();
}

Result<std::vector<uint64_t>> ParseBlockList(const std::string& text, const std::string& what) {
  std::vector<uint64_t> blocks;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    uint64_t first = 0, last = 0;
    const char* b = line.data();
    const char* e = line.data() + line.size();
    auto r1 = std::from_chars(b, e, first);
    bool ok = r1.ec == std::errc();
    last = first;
    if (ok && r1.ptr != e) {
      ok = *r1.ptr == '-';
      if (ok) {
        auto r2 = std::from_chars(r1.ptr + 1, e, last);
        ok = r2.ec == std::errc() && r2.ptr == e && last >= first;
      }
    }
    if (!ok || last - first > (uint64_t{1} << 32)) {
      return Status::InvalidArgument(what + " line " + std::to_string(line_no) +
                                     ": expected a block number or FIRST-LAST");
    }
    for (uint64_t x = first; x <= last; ++x) blocks.push_back(x);
  }
  std::sort(blocks.begin(), blocks.end());
  blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
  return blocks;
}

}  // namespace cbt::image
