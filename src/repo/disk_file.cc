// SPDX-License-Identifier: Apache-2.0
//
// Design notes.  The data area is append-only while writing, so a backup
// streams blocks to disk in arrival order (NBD replies may come out of
// order) without seeking back.  The index and header are written last: the
// header's magic is what makes the file valid, and it is written after the
// index, so a crash mid-write leaves a file every reader refuses.  Commit
// durability is the point writer's business (repository.cc); this file only
// fsyncs itself in Finish().
#include "repo/disk_file.h"

#include "util/endian.h"

#include <xxhash.h>
#if defined(__x86_64__)
// Debian's libxxhash is built for the baseline CPU; its dispatching entry
// point picks AVX2 or AVX-512 at run time: 39 GB/s against 15 GB/s on 64 KiB
// blocks in cache, for every block a backup stores or a read verifies.
#define XXH_DISPATCH_DISABLE_REPLACE
#include <xxh_x86dispatch.h>
#endif

#include <fcntl.h>
#include <sys/vfs.h>

#include <algorithm>
#include <cstring>
#include <functional>

namespace cbt::repo {

namespace {

// Header field offsets (docs/FORMAT.md, "Header").
constexpr size_t kOffMagic = 0;
constexpr size_t kOffVersion = 8;
constexpr size_t kOffHeaderSize = 12;
constexpr size_t kOffIncompat = 16;
constexpr size_t kOffCompat = 24;
constexpr size_t kOffBlockSize = 32;
constexpr size_t kOffKind = 36;
constexpr size_t kOffVirtualSize = 40;
constexpr size_t kOffEntryCount = 48;
constexpr size_t kOffDataBlocks = 56;
constexpr size_t kOffIndexOffset = 64;
constexpr size_t kOffIndexChecksum = 72;
constexpr size_t kOffHeaderChecksum = 80;  // XXH3-64 of bytes 0..79

}  // namespace

uint64_t Checksum(const void* data, size_t len) {
#if defined(__x86_64__)
  return XXH3_64bits_dispatch(data, len);
#else
  return XXH3_64bits(data, len);
#endif
}

bool IsAllZero(const void* data, size_t len) {
  const auto* p = static_cast<const unsigned char*>(data);
  // Word-at-a-time scan; memcmp against the preceding bytes keeps it short.
  if (len == 0) return true;
  if (p[0] != 0) return false;
  return std::memcmp(p, p + 1, len - 1) == 0;
}

DiskFileWriter::DiskFileWriter(std::string path, UniqueFd fd, FileKind kind, uint64_t virtual_size,
                               BlockStore* store)
    : path_(std::move(path)),
      fd_(std::move(fd)),
      kind_(kind),
      virtual_size_(virtual_size),
      writeback_(fd_.get(), path_, kHeaderSize),
      seen_(BlockCount(virtual_size), false),
      store_(store) {}

Result<std::unique_ptr<DiskFileWriter>> DiskFileWriter::Create(const std::string& path,
                                                               FileKind kind, uint64_t virtual_size,
                                                               BlockStore* store) {
  CBT_ASSIGN_OR_RETURN(UniqueFd fd, CreateExclusive(path));
  // An all-zero header marks the file as unfinished until Finish() runs.
  unsigned char zero[kHeaderSize] = {};
  CBT_RETURN_IF_ERROR(PwriteAll(fd.get(), zero, sizeof zero, 0, path));
  auto w = std::unique_ptr<DiskFileWriter>(
      new DiskFileWriter(path, std::move(fd), kind, virtual_size, store));
  return w;
}

// Only version-1 files hold data; their writeback is paced as a pack's
// is (util/writeback_window.h).
Status DiskFileWriter::WriteData(const char* data, uint64_t len) {
  CBT_RETURN_IF_ERROR(write_failed_);
  Status st = PwriteAll(fd_.get(), data, len, next_data_offset_, path_);
  if (st.ok()) st = writeback_.Wrote(next_data_offset_ + len);
  if (!st.ok()) write_failed_ = st;
  return st;
}

Status DiskFileWriter::CheckBlock(uint64_t block) {
  if (finished_) return Status::InvalidArgument(path_ + ": write after Finish");
  if (block >= seen_.size()) {
    return Status::InvalidArgument(path_ + ": block " + std::to_string(block) +
                                   " is beyond the end of the disk");
  }
  if (seen_[block]) {
    return Status::InvalidArgument(path_ + ": block " + std::to_string(block) + " recorded twice");
  }
  seen_[block] = true;
  return Status::Ok();
}

Status DiskFileWriter::AddData(uint64_t block, const void* data) {
  CBT_RETURN_IF_ERROR(CheckBlock(block));
  if (store_ != nullptr) {
    if (slot_ == nullptr) slot_ = store_->NewSlot();
    uint64_t added = 0;
    CBT_ASSIGN_OR_RETURN(BlockRef ref, slot_->Put(static_cast<const char*>(data), &added));
    entries_.push_back(
        {block, EntryKind::kData, ref.offset, ref.checksum, ref.stored_size, ref.pack});
    added_bytes_ += added;
    ++data_blocks_;
    return Status::Ok();
  }
  CBT_RETURN_IF_ERROR(WriteData(static_cast<const char*>(data), kBlockSize));
  entries_.push_back(
      {block, EntryKind::kData, next_data_offset_, Checksum(data, kBlockSize), 0, 0});
  next_data_offset_ += kBlockSize;
  ++data_blocks_;
  return Status::Ok();
}

Status DiskFileWriter::AddDataRun(uint64_t first, const char* data, uint64_t count,
                                  const uint64_t* checksums) {
  // Validate the whole run before marking any block, so a refused run
  // leaves the writer as it was.
  for (uint64_t i = 0; i < count; ++i) {
    if (finished_ || first + i >= seen_.size() || seen_[first + i]) {
      return CheckBlock(first + i);  // fails, and says why, without marking
    }
  }
  if (store_ != nullptr) {
    for (uint64_t i = 0; i < count; ++i) {
      CBT_RETURN_IF_ERROR(AddData(first + i, data + i * kBlockSize));
    }
    return Status::Ok();
  }
  for (uint64_t i = 0; i < count; ++i) seen_[first + i] = true;
  CBT_RETURN_IF_ERROR(WriteData(data, count * kBlockSize));
  for (uint64_t i = 0; i < count; ++i) {
    entries_.push_back({first + i, EntryKind::kData, next_data_offset_, checksums[i], 0, 0});
    next_data_offset_ += kBlockSize;
  }
  data_blocks_ += count;
  return Status::Ok();
}

Status DiskFileWriter::AddRef(uint64_t block, const BlockRef& ref, uint64_t added) {
  if (store_ == nullptr) {
    return Status::InvalidArgument(path_ + ": a version-1 disk file holds no references");
  }
  CBT_RETURN_IF_ERROR(CheckBlock(block));
  entries_.push_back(
      {block, EntryKind::kData, ref.offset, ref.checksum, ref.stored_size, ref.pack});
  added_bytes_ += added;
  ++data_blocks_;
  return Status::Ok();
}

Status DiskFileWriter::AddZero(uint64_t block) {
  CBT_RETURN_IF_ERROR(CheckBlock(block));
  entries_.push_back({block, EntryKind::kZero, 0, 0, 0, 0});
  ++zero_blocks_;
  return Status::Ok();
}

Status DiskFileWriter::Finish() {
  if (finished_) return Status::InvalidArgument(path_ + ": Finish called twice");
  finished_ = true;
  CBT_RETURN_IF_ERROR(write_failed_);
  std::sort(entries_.begin(), entries_.end(),
            [](const IndexEntry& a, const IndexEntry& b) { return a.block < b.block; });
  const bool packed = store_ != nullptr;
  const size_t entry_size = packed ? kPackedIndexEntrySize : kIndexEntrySize;
  std::vector<unsigned char> index(entries_.size() * entry_size, 0);
  for (size_t i = 0; i < entries_.size(); ++i) {
    unsigned char* p = index.data() + i * entry_size;
    const IndexEntry& e = entries_[i];
    StoreLe64(p, e.block);
    StoreLe32(p + 8, static_cast<uint32_t>(e.kind));
    if (packed) {
      StoreLe32(p + 12, e.stored_size);
      StoreLe64(p + 16, e.pack);
      StoreLe64(p + 24, e.offset);
      StoreLe64(p + 32, e.checksum);
      StoreLe64(p + 40, 0);
    } else {
      StoreLe32(p + 12, 0);
      StoreLe64(p + 16, e.offset);
      StoreLe64(p + 24, e.checksum);
    }
  }
  const uint64_t index_offset = next_data_offset_;
  CBT_RETURN_IF_ERROR(PwriteAll(fd_.get(), index.data(), index.size(), index_offset, path_));

  unsigned char header[kHeaderSize] = {};
  std::memcpy(header + kOffMagic, kDiskMagic, sizeof kDiskMagic);
  StoreLe32(header + kOffVersion, packed ? kPackedDiskFormatVersion : kDiskFormatVersion);
  StoreLe32(header + kOffHeaderSize, kHeaderSize);
  StoreLe64(header + kOffIncompat, 0);
  StoreLe64(header + kOffCompat, 0);
  StoreLe32(header + kOffBlockSize, kBlockSize);
  StoreLe32(header + kOffKind, static_cast<uint32_t>(kind_));
  StoreLe64(header + kOffVirtualSize, virtual_size_);
  StoreLe64(header + kOffEntryCount, entries_.size());
  StoreLe64(header + kOffDataBlocks, data_blocks_);
  StoreLe64(header + kOffIndexOffset, index_offset);
  StoreLe64(header + kOffIndexChecksum, Checksum(index.data(), index.size()));
  StoreLe64(header + kOffHeaderChecksum, Checksum(header, kOffHeaderChecksum));
  CBT_RETURN_IF_ERROR(PwriteAll(fd_.get(), header, sizeof header, 0, path_));
  file_size_ = index_offset + index.size();
  CBT_RETURN_IF_ERROR(Fsync(fd_.get(), path_));
  writeback_.Release(file_size_);
  return Status::Ok();
}

namespace {

struct ParsedFile {
  uint32_t version = 0;
  FileKind kind = FileKind::kBase;
  uint64_t virtual_size = 0;
  std::vector<IndexEntry> entries;
};

// Validates a disk file of `size` bytes whose header is `h`; `read` reads
// `len` bytes at `off` of the file.  Shared by Open (reading the file) and
// ParseEntries (bytes already in memory).
Result<ParsedFile> Parse(const unsigned char* h, uint64_t size,
                         const std::function<Status(void*, size_t, uint64_t)>& read,
                         const std::string& path) {
  if (std::memcmp(h + kOffMagic, kDiskMagic, sizeof kDiskMagic) != 0) {
    return Status::Corruption(path + ": not a disk data file (bad magic)");
  }
  if (LoadLe64(h + kOffHeaderChecksum) != Checksum(h, kOffHeaderChecksum)) {
    return Status::Corruption(path + ": header checksum mismatch");
  }
  const uint32_t version = LoadLe32(h + kOffVersion);
  if (version != kDiskFormatVersion && version != kPackedDiskFormatVersion) {
    return Status::NotSupported(path + ": disk file format version " + std::to_string(version) +
                                " is not supported (this build reads versions 1 and 2)");
  }
  const bool packed = version == kPackedDiskFormatVersion;
  if ((LoadLe64(h + kOffIncompat) & ~kKnownIncompatibleFeatures) != 0) {
    return Status::NotSupported(path + ": uses incompatible features this build does not know");
  }
  if (LoadLe32(h + kOffHeaderSize) != kHeaderSize || LoadLe32(h + kOffBlockSize) != kBlockSize) {
    return Status::Corruption(path + ": unexpected header or block size");
  }
  const uint32_t kind = LoadLe32(h + kOffKind);
  if (kind != static_cast<uint32_t>(FileKind::kBase) &&
      kind != static_cast<uint32_t>(FileKind::kOverlay)) {
    return Status::Corruption(path + ": unknown file kind " + std::to_string(kind));
  }
  const uint64_t virtual_size = LoadLe64(h + kOffVirtualSize);
  const uint64_t count = LoadLe64(h + kOffEntryCount);
  const uint64_t data_blocks = LoadLe64(h + kOffDataBlocks);
  const uint64_t index_offset = LoadLe64(h + kOffIndexOffset);
  const uint64_t nblocks = BlockCount(virtual_size);
  if (virtual_size == 0 || virtual_size > kMaxVirtualSize) {
    return Status::Corruption(path + ": implausible virtual size " + std::to_string(virtual_size));
  }
  const uint64_t entry_size = packed ? kPackedIndexEntrySize : kIndexEntrySize;
  const uint64_t data_area = packed ? 0 : data_blocks * uint64_t{kBlockSize};
  if (count > nblocks || data_blocks > count || index_offset != kHeaderSize + data_area ||
      size != index_offset + count * entry_size) {
    return Status::Corruption(path + ": file length does not match its header (truncated?)");
  }
  std::vector<unsigned char> index(count * entry_size);
  CBT_RETURN_IF_ERROR(read(index.data(), index.size(), index_offset));
  if (Checksum(index.data(), index.size()) != LoadLe64(h + kOffIndexChecksum)) {
    return Status::Corruption(path + ": index checksum mismatch");
  }

  ParsedFile out;
  out.version = version;
  out.kind = static_cast<FileKind>(kind);
  out.virtual_size = virtual_size;
  out.entries.reserve(count);
  uint64_t seen_data = 0;
  std::vector<bool> slot_used(packed ? 0 : data_blocks, false);
  for (uint64_t i = 0; i < count; ++i) {
    const unsigned char* p = index.data() + i * entry_size;
    IndexEntry e{LoadLe64(p), static_cast<EntryKind>(LoadLe32(p + 8)), 0, 0, 0, 0};
    bool clean, placed;
    if (packed) {
      e.stored_size = LoadLe32(p + 12);
      e.pack = LoadLe64(p + 16);
      e.offset = LoadLe64(p + 24);
      e.checksum = LoadLe64(p + 32);
      // ZERO entries name nothing; the reserved word is zero.
      clean = LoadLe64(p + 40) == 0 &&
              (e.kind != EntryKind::kZero ||
               (e.stored_size == 0 && e.pack == 0 && e.offset == 0 && e.checksum == 0));
      placed = e.kind != EntryKind::kData ||
               (e.stored_size >= 1 && e.stored_size <= kRawBlockSize &&
                e.offset >= kPackHeaderSize && e.offset <= (uint64_t{1} << 62));
    } else {
      e.offset = LoadLe64(p + 16);
      e.checksum = LoadLe64(p + 24);
      clean = LoadLe32(p + 12) == 0 &&
              (e.kind != EntryKind::kZero || (e.offset == 0 && e.checksum == 0));
      placed =
          e.kind != EntryKind::kData ||
          (e.offset >= kHeaderSize && index_offset >= kHeaderSize + kBlockSize &&
           e.offset <= index_offset - kBlockSize && (e.offset - kHeaderSize) % kBlockSize == 0);
    }
    const bool ordered = i == 0 || e.block > out.entries.back().block;
    const bool valid_kind = e.kind == EntryKind::kData || e.kind == EntryKind::kZero;
    if (!ordered || !valid_kind || e.block >= nblocks || !placed || !clean) {
      return Status::Corruption(path + ": index entry " + std::to_string(i) + " is invalid");
    }
    if (e.kind == EntryKind::kData) {
      if (!packed) {
        // Each data slot belongs to exactly one block.  (Blocks of a
        // version-2 file may share a stored block: that is dedup.)
        const uint64_t slot = (e.offset - kHeaderSize) / kBlockSize;
        if (slot_used[slot]) {
          return Status::Corruption(path + ": index entry " + std::to_string(i) +
                                    " shares its data with another block");
        }
        slot_used[slot] = true;
      }
      ++seen_data;
    }
    out.entries.push_back(e);
  }
  if (seen_data != data_blocks) {
    return Status::Corruption(path + ": data block count does not match the index");
  }
  return out;
}

}  // namespace

Result<std::shared_ptr<const DiskFile>> DiskFile::Open(const std::string& path,
                                                       std::shared_ptr<const PackCache> packs) {
  CBT_ASSIGN_OR_RETURN(UniqueFd fd, OpenRead(path));
  CBT_ASSIGN_OR_RETURN(uint64_t size, FileSize(fd.get(), path));
  if (size < kHeaderSize) return Status::Corruption(path + ": shorter than its header");
  unsigned char h[kHeaderSize];
  CBT_RETURN_IF_ERROR(PreadAll(fd.get(), h, sizeof h, 0, path));
  const int raw_fd = fd.get();
  CBT_ASSIGN_OR_RETURN(ParsedFile parsed, Parse(
                                              h, size,
                                              [&](void* buf, size_t len, uint64_t off) {
                                                return PreadAll(raw_fd, buf, len, off, path);
                                              },
                                              path));
  auto file = std::shared_ptr<DiskFile>(new DiskFile());
  file->entries_ = std::move(parsed.entries);
  file->path_ = path;
  file->fd_ = std::move(fd);
  file->kind_ = parsed.kind;
  file->version_ = parsed.version;
  file->packs_ = std::move(packs);
  file->virtual_size_ = parsed.virtual_size;
  file->file_size_ = size;
  return std::shared_ptr<const DiskFile>(std::move(file));
}

Result<std::vector<IndexEntry>> DiskFile::ParseEntries(std::string_view bytes,
                                                       const std::string& what, uint32_t* version) {
  if (bytes.size() < kHeaderSize) return Status::Corruption(what + ": shorter than its header");
  auto read = [&](void* buf, size_t len, uint64_t off) -> Status {
    if (off > bytes.size() || len > bytes.size() - off) {
      return Status::Corruption(what + ": truncated");
    }
    if (len > 0) std::memcpy(buf, bytes.data() + off, len);  // an empty index has no buffer
    return Status::Ok();
  };
  CBT_ASSIGN_OR_RETURN(
      ParsedFile parsed,
      Parse(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), read, what));
  if (version != nullptr) *version = parsed.version;
  return std::move(parsed.entries);
}

Result<std::shared_ptr<const Pack>> DiskFile::PackOf(const IndexEntry& e) const {
  if (packs_ == nullptr) {
    return Status::InvalidArgument(path_ + ": opened without its repository's packs");
  }
  auto pack = packs_->Get(e.pack);
  if (pack.status().IsNotFound()) {
    return Status::Corruption("block at disk offset " + std::to_string(e.block * kBlockSize) +
                              ": pack " + PackIdHex(e.pack) + " is missing");
  }
  return pack;
}

Status DiskFile::ReadBlock(const IndexEntry& e, void* buf) const {
  if (packed()) {
    CBT_ASSIGN_OR_RETURN(auto pack, PackOf(e));
    Status st = pack->ReadBlock(BlockRef{e.pack, e.offset, e.stored_size, e.checksum},
                                static_cast<char*>(buf));
    if (st.IsCorruption()) {
      return Status::Corruption("checksum mismatch at disk offset " +
                                std::to_string(e.block * kBlockSize) + " (" + st.message() + ")");
    }
    return st;
  }
  CBT_RETURN_IF_ERROR(PreadAll(fd_.get(), buf, kBlockSize, e.offset, path_));
  if (Checksum(buf, kBlockSize) != e.checksum) {
    return Status::Corruption("checksum mismatch at disk offset " +
                              std::to_string(e.block * kBlockSize));
  }
  return Status::Ok();
}

namespace {

// Filesystems whose O_DIRECT reads through Linux AIO are known to run
// asynchronously and uncached.  Elsewhere O_DIRECT may be ignored, or AIO
// may run each read to completion inside io_submit (ZFS before 2.3, for
// example), which would turn one parallel batch into serial reads.
bool DirectAioIsReal(int fd) {
  struct statfs st;
  if (::fstatfs(fd, &st) != 0) return false;
  switch (static_cast<unsigned long>(st.f_type)) {
    case 0xEF53:      // ext2/3/4
    case 0x58465342:  // XFS
    case 0x9123683E:  // btrfs
      return true;
    default:
      return false;
  }
}

}  // namespace

int DiskFile::direct_fd() const {
  std::call_once(direct_once_, [this] {
    if (packed() || !DirectAioIsReal(fd_.get())) return;
    // Through /proc rather than the path: a delete may have moved the file
    // to another point since it was opened, and this must be the same file.
    const std::string self = "/proc/self/fd/" + std::to_string(fd_.get());
    int fd = ::open(self.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (fd >= 0) direct_fd_ = UniqueFd(fd);
  });
  return direct_fd_.get();
}

}  // namespace cbt::repo
