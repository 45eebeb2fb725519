// SPDX-License-Identifier: Apache-2.0
//
// Design notes.  The block map has one 8-byte slot per 64 KiB block of the
// virtual disk (128 KiB per GiB), filled base first so later files overwrite
// earlier ones: the map of point k costs O(entries in its chain) to build and
// O(1) per block to use.  A ZERO entry clears the slot, which is how a block
// that became zero hides its parent's data.
//
// Read path: whole blocks that are contiguous in one file are fetched with a
// single pread straight into the caller's buffer and verified in place, so a
// sequential read of a base costs one syscall per request.  Partial blocks go
// through a per-thread 64 KiB scratch buffer (allocated once per thread, so
// the hot path does not allocate).
#include "image/composed_image.h"

#include "repo/layout.h"
#include "util/file.h"
#include "util/linux_aio.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>

namespace cbt::image {

namespace {

// True if the block device holding `fd`'s file reads ahead 4 MiB or more
// (sysfs read_ahead_kb of the device, or of the disk of a partition).
// False when it cannot be told: a network or multi-device filesystem.
// Cached per device: it is asked at every read-ahead step of a reader.
bool HasBigReadahead(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return false;
  static std::mutex mu;
  static std::map<dev_t, bool> cache;
  std::lock_guard<std::mutex> g(mu);
  auto it = cache.find(st.st_dev);
  if (it != cache.end()) return it->second;
  const std::string dev =
      "/sys/dev/block/" + std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
  bool big = false;
  for (const char* q : {"/queue/read_ahead_kb", "/../queue/read_ahead_kb"}) {
    std::FILE* f = std::fopen((dev + q).c_str(), "re");
    if (f == nullptr) continue;
    unsigned long kb = 0;
    if (std::fscanf(f, "%lu", &kb) == 1) big = kb >= 4096;
    std::fclose(f);
    break;
  }
  cache[st.st_dev] = big;
  return big;
}

}  // namespace

using repo::DiskFile;
using repo::EntryKind;
using repo::FileKind;
using repo::kBlockSize;

namespace {

Result<std::shared_ptr<const ComposedImage>> OpenOnce(const repo::Repository& repo,
                                                      const std::string& vm,
                                                      const std::string& point,
                                                      const std::string& vdi) {
  CBT_ASSIGN_OR_RETURN(auto files, repo.DiskChain(vm, point, vdi));
  std::vector<std::shared_ptr<const DiskFile>> chain;
  std::vector<std::string> origins;
  chain.reserve(files.size());
  for (const auto& cf : files) {
    auto file = repo.OpenDiskFile(JoinPath(repo.PointPath(vm, cf.point), cf.file));
    if (!file.ok()) {
      return file.status().WithContext("VM " + vm + " point " + cf.point + " disk " + vdi);
    }
    chain.push_back(std::move(*file));
    origins.push_back(cf.origin);
  }
  // The manifest and the file header must agree on the disk's size.
  CBT_ASSIGN_OR_RETURN(repo::Manifest m, repo.ReadManifest(vm, point));
  const repo::DiskRecord* rec = m.FindDisk(vdi);
  if (rec == nullptr || rec->virtual_size != chain.back()->virtual_size()) {
    return Status::Corruption("VM " + vm + " point " + point + " disk " + vdi +
                              ": the manifest and the disk file disagree on the size");
  }
  return ComposedImage::FromChain(std::move(chain), std::move(origins),
                                  ComposedImage::Label{vm, point, vdi});
}

}  // namespace

Result<std::shared_ptr<const ComposedImage>> ComposedImage::Open(const repo::Repository& repo,
                                                                 const std::string& vm,
                                                                 const std::string& point,
                                                                 const std::string& vdi) {
  // A delete running meanwhile moves the files of a chain from one point to
  // the next (docs/FORMAT.md, "Deleting points"): a chain read half before
  // and half after that step names a file that is gone.  Reading it again
  // sees the new state, so only a file still missing is an error.
  auto img = OpenOnce(repo, vm, point, vdi);
  for (int retry = 0; retry < 3 && !img.ok() && img.status().IsNotFound(); ++retry) {
    if (!PathExists(repo.PointPath(vm, point))) break;
    img = OpenOnce(repo, vm, point, vdi);
  }
  return img;
}

Result<std::shared_ptr<const ComposedImage>> ComposedImage::FromChain(
    std::vector<std::shared_ptr<const DiskFile>> chain, std::vector<std::string> file_points,
    Label label) {
  if (chain.empty() || chain.size() != file_points.size()) {
    return Status::InvalidArgument("empty chain");
  }
  auto img = std::shared_ptr<ComposedImage>(new ComposedImage());
  img->label_ = std::move(label);
  img->size_ = chain.front()->virtual_size();
  img->map_.assign(repo::BlockCount(img->size_), Slot{kNoFile, 0});
  for (size_t i = 0; i < chain.size(); ++i) {
    const DiskFile& f = *chain[i];
    bool kind_ok = (i == 0) == (f.kind() == FileKind::kBase);
    if (!kind_ok || f.virtual_size() != img->size_) {
      return Status::Corruption("VM " + img->label_.vm + " disk " + img->label_.vdi +
                                ": chain of point " + img->label_.point + " is inconsistent at " +
                                file_points[i]);
    }
    const auto& entries = f.entries();
    for (size_t j = 0; j < entries.size(); ++j) {
      img->map_[entries[j].block] = entries[j].kind == EntryKind::kData
                                        ? Slot{static_cast<uint32_t>(i), static_cast<uint32_t>(j)}
                                        : Slot{kNoFile, 0};
    }
  }
  img->chain_ = std::move(chain);
  img->file_points_ = std::move(file_points);
  return std::shared_ptr<const ComposedImage>(std::move(img));
}

Status ComposedImage::CorruptionAt(uint64_t block, uint32_t file, const std::string& detail) const {
  return Status::Corruption("corrupted block in VM " + label_.vm + " point " + label_.point +
                            " disk " + label_.vdi + " at offset " +
                            std::to_string(block * kBlockSize) + " (stored in point " +
                            file_points_[file] + ", " + chain_[file]->path() +
                            (detail.empty() ? "" : "; " + detail) + ")");
}

uint64_t ComposedImage::RunLength(uint64_t block, uint64_t max) const {
  const Slot first = map_[block];
  // Stored blocks of a version-2 file are read and decoded one at a time.
  if (chain_[first.file]->packed()) return 1;
  const auto& entries = chain_[first.file]->entries();
  const uint64_t first_offset = entries[first.entry].offset;
  uint64_t run = 1;
  while (run < max) {
    const Slot next = map_[block + run];
    if (next.file != first.file || entries[next.entry].offset != first_offset + run * kBlockSize)
      break;
    ++run;
  }
  return run;
}

uint64_t ComposedImage::PackedRawRun(uint64_t block, uint64_t max) const {
  const Slot first = map_[block];
  const auto& entries = chain_[first.file]->entries();
  const repo::IndexEntry& e0 = entries[first.entry];
  if (e0.stored_size != kBlockSize) return 1;
  uint64_t run = 1;
  while (run < max) {
    const Slot next = map_[block + run];
    if (next.file != first.file) break;
    const repo::IndexEntry& e = entries[next.entry];
    if (e.pack != e0.pack || e.stored_size != kBlockSize ||
        e.offset != e0.offset + run * kBlockSize)
      break;
    ++run;
  }
  return run;
}

Status ComposedImage::VerifyRun(const char* data, uint64_t block, uint64_t count) const {
  const uint32_t file = map_[block].file;
  const auto& entries = chain_[file]->entries();
  for (uint64_t i = 0; i < count; ++i) {
    if (repo::Checksum(data + i * kBlockSize, kBlockSize) !=
        entries[map_[block + i].entry].checksum) {
      return CorruptionAt(block + i, file);
    }
  }
  return Status::Ok();
}

template <typename ReadFn>
Status ComposedImage::ReadPieces(char* out, uint64_t pos, uint64_t end, ReadFn&& read) const {
  while (pos < end) {
    const uint64_t block = pos / kBlockSize;
    const uint64_t in_block = pos % kBlockSize;
    const uint64_t n = std::min<uint64_t>(kBlockSize - in_block, end - pos);
    const Slot slot = map_[block];
    uint64_t filled = n;
    if (slot.file == kNoFile) {
      std::memset(out, 0, n);
    } else {
      CBT_ASSIGN_OR_RETURN(filled, read(slot, block, in_block, n, out));
    }
    out += filled;
    pos += filled;
  }
  return Status::Ok();
}

Result<size_t> ComposedImage::Read(void* buf, size_t len, uint64_t off) const {
  if (off >= size_) return size_t{0};
  const uint64_t end = std::min<uint64_t>(off + len, size_);
  thread_local std::unique_ptr<char[]> scratch;

  auto read_piece = [&](Slot slot, uint64_t block, uint64_t in_block, uint64_t n,
                        char* out) -> Result<uint64_t> {
    const DiskFile& f = *chain_[slot.file];
    if (in_block == 0 && n == kBlockSize && f.packed()) {
      // Blocks stored raw, back to back in one pack (what did not
      // compress, written in order): one read, checked in place.
      const uint64_t run = PackedRawRun(block, end / kBlockSize - block);
      if (run > 1) {
        const repo::IndexEntry& e = f.entries()[slot.entry];
        CBT_ASSIGN_OR_RETURN(auto pack, f.PackOf(e));
        Status s = pack->ReadRange(out, run * kBlockSize, e.offset);
        if (s.IsCorruption()) return CorruptionAt(block, slot.file, s.message());
        CBT_RETURN_IF_ERROR(s);
        CBT_RETURN_IF_ERROR(VerifyRun(out, block, run));
        return run * kBlockSize;
      }
      Status s = f.ReadBlock(f.entries()[slot.entry], out);
      if (s.IsCorruption()) return CorruptionAt(block, slot.file, s.message());
      CBT_RETURN_IF_ERROR(s);
      return uint64_t{kBlockSize};
    }
    if (in_block == 0 && n == kBlockSize) {
      const uint64_t run = RunLength(block, end / kBlockSize - block);
      CBT_RETURN_IF_ERROR(
          PreadAll(f.fd(), out, run * kBlockSize, f.entries()[slot.entry].offset, f.path()));
      CBT_RETURN_IF_ERROR(VerifyRun(out, block, run));
      return run * kBlockSize;
    }
    if (!scratch) scratch.reset(new char[kBlockSize]);
    Status s = f.ReadBlock(f.entries()[slot.entry], scratch.get());
    if (s.IsCorruption()) return CorruptionAt(block, slot.file, f.packed() ? s.message() : "");
    CBT_RETURN_IF_ERROR(s);
    std::memcpy(out, scratch.get() + in_block, n);
    return n;
  };
  CBT_RETURN_IF_ERROR(ReadPieces(static_cast<char*>(buf), off, end, read_piece));
  return static_cast<size_t>(end - off);
}

bool ComposedImage::CanReadDirect() const {
  for (const auto& f : chain_) {
    if (f->direct_fd() < 0) return false;
  }
  return LinuxAio::ForThread().ok();
}

Result<size_t> ComposedImage::ReadDirect(char* buf, size_t len, uint64_t off) const {
  if (off >= size_) return size_t{0};
  const uint64_t end = std::min<uint64_t>(off + len, size_);
  auto aio = LinuxAio::ForThread();
  if (!aio.ok() || reinterpret_cast<uintptr_t>(buf) % kDirectAlign != 0) {
    return Read(buf, len, off);
  }
  // reads[i] fetches the blocks of runs[i] straight into the caller's buffer.
  struct Run {
    uint32_t file;
    uint64_t block;  // first block of the run
    uint64_t count;  // blocks in the run
  };
  thread_local std::vector<Run> runs;
  thread_local std::vector<LinuxAio::Read> reads;
  runs.clear();
  reads.clear();

  // Whole blocks start at out = buf + (block start - off), aligned when
  // `off` is, since `buf` is and blocks are multiples of kDirectAlign.
  const bool aligned = off % kDirectAlign == 0;
  auto read_piece = [&](Slot slot, uint64_t block, uint64_t in_block, uint64_t n,
                        char* out) -> Result<uint64_t> {
    const DiskFile& f = *chain_[slot.file];
    if (in_block == 0 && n == kBlockSize && aligned && f.direct_fd() >= 0) {
      const uint64_t run = RunLength(block, end / kBlockSize - block);
      runs.push_back(Run{slot.file, block, run});
      reads.push_back(
          LinuxAio::Read{f.direct_fd(), out, run * kBlockSize, f.entries()[slot.entry].offset});
      return run * kBlockSize;
    }
    // A block the request covers in part: the buffered path reads it whole.
    CBT_RETURN_IF_ERROR(Read(out, n, block * kBlockSize + in_block).status());
    return n;
  };
  CBT_RETURN_IF_ERROR(ReadPieces(buf, off, end, read_piece));

  (*aio)->Run(reads.data(), reads.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    const Run& r = runs[i];
    const LinuxAio::Read& rd = reads[i];
    // Not submitted (the kernel was short of resources), refused (EINVAL
    // where a filesystem takes O_DIRECT at open but not for this read), cut
    // short, or failed: read it again through the page cache, which reports
    // a real I/O error with the file's name.
    if (!rd.complete()) {
      const DiskFile& f = *chain_[r.file];
      CBT_RETURN_IF_ERROR(PreadAll(f.fd(), rd.buf, rd.len, rd.offset, f.path()));
    }
    CBT_RETURN_IF_ERROR(VerifyRun(static_cast<const char*>(rd.buf), r.block, r.count));
  }
  return static_cast<size_t>(end - off);
}

uint64_t ComposedImage::NextData(uint64_t off) const {
  for (uint64_t b = off / kBlockSize; b < map_.size(); ++b) {
    if (map_[b].file != kNoFile) return std::max(off, b * kBlockSize);
  }
  return size_;
}

uint64_t ComposedImage::NextHole(uint64_t off) const {
  for (uint64_t b = off / kBlockSize; b < map_.size(); ++b) {
    if (map_[b].file == kNoFile) return std::max(off, b * kBlockSize);
  }
  return size_;
}

bool ComposedImage::AllHoles(uint64_t off, uint64_t len) const {
  if (off >= size_ || len == 0) return true;
  const uint64_t last = (std::min<uint64_t>(off + len, size_) - 1) / kBlockSize;
  for (uint64_t b = off / kBlockSize; b <= last; ++b) {
    if (map_[b].file != kNoFile) return false;
  }
  return true;
}

size_t ComposedImage::MemoryBytes() const {
  size_t bytes = sizeof *this + map_.capacity() * sizeof(Slot);
  for (const auto& f : chain_) bytes += f->entries().capacity() * sizeof(repo::IndexEntry);
  return bytes;
}

uint64_t ComposedImage::DataBlockCount() const {
  return static_cast<uint64_t>(
      std::count_if(map_.begin(), map_.end(), [](Slot s) { return s.file != kNoFile; }));
}

}  // namespace cbt::image

namespace cbt::image {

void ComposedImage::Prefetch(uint64_t off, uint64_t len, bool leave_single_run) const {
  if (off >= size_) return;
  // Per file, the blocks a window needs lie in increasing file order (files
  // are written in block order), interleaved with other files' blocks.
  // Keeping one open run per file lets each file's adjacent blocks merge
  // into one request however the chain interleaves them.  Runs are not
  // merged across gaps: the gaps hold superseded blocks, and reading them
  // measured slower.
  const uint64_t first = off / kBlockSize;
  const uint64_t last = std::min<uint64_t>((off + len + kBlockSize - 1) / kBlockSize, map_.size());
  struct Run {
    uint32_t file = 0;
    uint64_t start = 0, end = 0;
  };
  std::vector<Run> open(chain_.size());  // the open run of each file
  std::vector<Run> done;
  // Stored blocks of version-2 files, by pack: adjacent ones merge too.
  struct PackRun {
    std::shared_ptr<const repo::Pack> pack;
    uint64_t start = 0, end = 0;
  };
  std::map<uint64_t, PackRun> pack_open;
  std::vector<PackRun> pack_done;
  auto close = [&](uint32_t f) {
    if (open[f].end > open[f].start) done.push_back(open[f]);
    open[f] = Run{};
  };
  for (uint64_t b = first; b < last; ++b) {
    const Slot s = map_[b];
    if (s.file == kNoFile) continue;
    if (chain_[s.file]->packed()) {
      const repo::IndexEntry& e = chain_[s.file]->entries()[s.entry];
      PackRun& r = pack_open[e.pack];
      if (r.pack && e.offset == r.end) {
        r.end += e.stored_size;
        continue;
      }
      if (r.pack) pack_done.push_back(r);
      auto pack = chain_[s.file]->PackOf(e);
      r = pack.ok() ? PackRun{*pack, e.offset, e.offset + e.stored_size} : PackRun{};
      continue;
    }
    const uint64_t o = chain_[s.file]->entries()[s.entry].offset;
    Run& r = open[s.file];
    if (r.end > r.start && o == r.end) {
      r.end = o + kBlockSize;
      continue;
    }
    close(s.file);
    open[s.file] = Run{s.file, o, o + kBlockSize};
  }
  for (uint32_t f = 0; f < open.size(); ++f) close(f);
  for (auto& [id, r] : pack_open) {
    if (r.pack) pack_done.push_back(r);
  }
  for (const PackRun& r : pack_done) {
    r.pack->WillNeed(r.start, r.end);
  }
  if (leave_single_run && done.size() == 1 && HasBigReadahead(chain_[done[0].file]->fd())) return;
  for (const Run& r : done) {
    ::posix_fadvise(chain_[r.file]->fd(), static_cast<off_t>(r.start),
                    static_cast<off_t>(r.end - r.start), POSIX_FADV_WILLNEED);
  }
}

void SequentialPrefetcher::OnRead(const ComposedImage& image, uint64_t off, uint64_t len) {
  uint64_t from = 0, to = 0;
  {
    std::lock_guard<std::mutex> g(mu_);
    // "Sequential" tolerates the reordering of concurrent FUSE requests.
    const uint64_t slack = 4ull << 20;
    const bool sequential = off == 0 || (off + slack >= last_end_ && off <= last_end_ + slack);
    last_end_ = std::max(last_end_, off + len);
    if (!sequential) {
      last_end_ = off + len;
      prefetched_to_ = off + len;
      return;
    }
    // Top the window up in steps of a quarter, so each call covers a
    // reasonably large range.
    if (prefetched_to_ >= off + len + window_ * 3 / 4) return;
    from = std::max(prefetched_to_, off + len);
    to = off + len + window_;
    prefetched_to_ = to;
  }
  image.Prefetch(from, to - from, /*leave_single_run=*/true);
}

}  // namespace cbt::image
