// SPDX-License-Identifier: Apache-2.0
//
// Disk data files (".cbd"): one per disk per point, either the base of a
// chain or an overlay on the same disk's file in the parent point.  The byte
// layout is specified in docs/FORMAT.md, "Disk data files"; the constants
// below are that table.  In short (all integers little-endian):
//
//   version 1: [header, 4096 bytes][data blocks, 64 KiB each][index: 32-byte entries]
//   version 2: [header, 4096 bytes][index: 48-byte entries]
//
// An index entry names a block of the virtual disk and says either DATA (the
// block's bytes are at `offset`, checksummed with XXH3-64) or ZERO (the block
// reads as zeros and overrides the parent).  Blocks absent from the index are
// unchanged since the parent (overlay) or never written (base).  In version
// 1 the data is in the file itself; in version 2 (repositories of format 3)
// a DATA entry names a stored block of the repository's block store
// (pack id, offset, stored size), which other entries, disks, points and
// VMs may share.
//
// Thread-safety: a DiskFileWriter belongs to one thread.  A DiskFile is
// immutable after Open and its Read* methods may be called concurrently.
#ifndef CBT_REPO_DISK_FILE_H_
#define CBT_REPO_DISK_FILE_H_

#include "repo/block_store.h"
#include "util/file.h"
#include "util/status.h"
#include "util/writeback_window.h"

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace cbt::repo {

inline constexpr char kDiskMagic[8] = {'C', 'B', 'T', 'D', 'I', 'S', 'K', '\0'};
inline constexpr uint32_t kDiskFormatVersion = 1;        // blocks in the file
inline constexpr uint32_t kPackedDiskFormatVersion = 2;  // blocks in the block store
inline constexpr uint32_t kHeaderSize = 4096;
inline constexpr uint32_t kBlockSize = 64 * 1024;
inline constexpr uint32_t kIndexEntrySize = 32;        // version 1
inline constexpr uint32_t kPackedIndexEntrySize = 48;  // version 2
// Feature masks: a reader refuses a file with an unknown incompatible bit and
// ignores unknown compatible bits.  Version 1 defines none.
inline constexpr uint64_t kKnownIncompatibleFeatures = 0;

enum class FileKind : uint32_t { kBase = 1, kOverlay = 2 };
enum class EntryKind : uint32_t { kData = 1, kZero = 2 };

struct IndexEntry {
  uint64_t block;  // block number in the virtual disk
  EntryKind kind;
  // DATA only: byte offset of the block's data in the file (version 1) or
  // of its stored bytes in pack `pack` (version 2).
  uint64_t offset;
  uint64_t checksum;     // XXH3-64 of the raw 64 KiB block (DATA only)
  uint32_t stored_size;  // version 2 DATA: bytes stored in the pack; else 0
  uint64_t pack;         // version 2 DATA: the pack's id; else 0
};

// XXH3-64 (seed 0) of `len` bytes: the checksum used throughout the format.
uint64_t Checksum(const void* data, size_t len);
// True if `len` bytes at `data` are all zero.
bool IsAllZero(const void* data, size_t len);
// The largest virtual size a repository file may claim: 256 TiB, far
// above any VDI XenServer makes, and small enough that per-block maps of
// a disk (one bit or slot per 64 KiB) stay allocatable when a damaged or
// planted file claims the most.
inline constexpr uint64_t kMaxVirtualSize = uint64_t{1} << 48;
inline uint64_t BlockCount(uint64_t virtual_size) {
  return (virtual_size + kBlockSize - 1) / kBlockSize;
}

// Writes one disk data file.  Blocks may be added in any order, each block
// at most once; Finish() sorts the index, writes it and the header, and
// fsyncs.  A file that was not finished has an all-zero header and is refused
// by DiskFile::Open, so a half-written file can never be mistaken for data.
//
// With a block store, the writer makes a version-2 file: AddData and
// AddDataRun store each block through the store (compressed, or referred
// to when the store already holds it) and the file keeps only references.
// The blocks are durable only after the store's Flush, which the caller
// runs before anything refers to this file (PointWriter::Commit).
class DiskFileWriter {
 public:
  // Creates `path` (must not exist, mode 0600); version 2 if `store` is
  // given (it must outlive the writer), else version 1.
  static Result<std::unique_ptr<DiskFileWriter>> Create(const std::string& path, FileKind kind,
                                                        uint64_t virtual_size,
                                                        BlockStore* store = nullptr);

  // Records block `block` with its 64 KiB of data (the last block of a disk
  // whose size is not a multiple of 64 KiB is padded with zeros by the
  // caller).  InvalidArgument if the block is out of range or repeated.
  Status AddData(uint64_t block, const void* data);
  // Records `count` consecutive blocks starting at `first`, whose data is
  // contiguous at `data` and whose checksums (see Checksum) the caller has
  // computed, with one write: the fast path of a backup, which checksums
  // outside any lock.  Same errors as AddData.
  Status AddDataRun(uint64_t first, const char* data, uint64_t count, const uint64_t* checksums);
  // Version 2 only: records block `block` as the stored block at `ref`,
  // which the caller stored itself (BlockStore::Slot::Put, from any
  // thread); `added` is the stored bytes that Put added to the store (0 if
  // the block was already stored).  Same errors as AddData.
  Status AddRef(uint64_t block, const BlockRef& ref, uint64_t added);
  // Records block `block` as all zeros (overlays only; in a base a zero block
  // is simply left out).
  Status AddZero(uint64_t block);
  // Writes index and header and fsyncs the file.  Must be called once.
  Status Finish();

  FileKind kind() const { return kind_; }
  uint64_t virtual_size() const { return virtual_size_; }
  uint64_t data_blocks() const { return data_blocks_; }
  uint64_t zero_blocks() const { return zero_blocks_; }
  // The size of the file; 0 until Finish succeeds.
  uint64_t file_size() const { return file_size_; }
  // Version 2: the store the blocks go to; nullptr for version 1.
  BlockStore* store() const { return store_; }
  // Bytes this file added to the repository: its size, plus (version 2)
  // the stored bytes of the blocks it stored new.  Valid after Finish.
  uint64_t added_bytes() const { return file_size_ + added_bytes_; }

 private:
  DiskFileWriter(std::string path, UniqueFd fd, FileKind kind, uint64_t virtual_size,
                 BlockStore* store);
  Status CheckBlock(uint64_t block);
  Status FinishPacked();
  // Writes `len` bytes of data at next_data_offset_ (which the caller then
  // advances).  A failure is returned again by every later call and by
  // Finish.
  Status WriteData(const char* data, uint64_t len);

  std::string path_;
  UniqueFd fd_;
  FileKind kind_;
  uint64_t virtual_size_;
  uint64_t next_data_offset_ = kHeaderSize;
  WritebackWindow writeback_;  // paces the data area's writeback
  Status write_failed_;        // the first failed data write
  std::vector<IndexEntry> entries_;
  std::vector<bool> seen_;
  uint64_t data_blocks_ = 0;
  uint64_t zero_blocks_ = 0;
  uint64_t file_size_ = 0;
  bool finished_ = false;
  BlockStore* store_ = nullptr;
  BlockStore::Slot* slot_ = nullptr;  // version 2: for AddData, taken on first use
  uint64_t added_bytes_ = 0;
};

// A disk data file opened for reading; header and index are verified at
// Open, each block's checksum on every read.
class DiskFile {
 public:
  // Opens and validates `path`.  Corruption if the magic, header checksum,
  // index checksum, index order or file length is wrong; NotSupported if the
  // version or an incompatible feature bit is unknown; NotFound if missing.
  // A version-2 file reads its blocks from the packs of `packs` (the
  // repository's); opened without it, its index can be read but ReadBlock
  // fails.
  static Result<std::shared_ptr<const DiskFile>> Open(
      const std::string& path, std::shared_ptr<const PackCache> packs = nullptr);
  // Parses the bytes of a whole disk file (for checks of files that are not
  // opened for reading).  Same errors as Open.
  static Result<std::vector<IndexEntry>> ParseEntries(std::string_view bytes,
                                                      const std::string& what,
                                                      uint32_t* version = nullptr);

  FileKind kind() const { return kind_; }
  uint32_t version() const { return version_; }
  // True for version 2: DATA entries name stored blocks in packs.
  bool packed() const { return version_ == kPackedDiskFormatVersion; }
  uint64_t virtual_size() const { return virtual_size_; }
  uint64_t file_size() const { return file_size_; }
  const std::vector<IndexEntry>& entries() const { return entries_; }
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }

  // Reads the DATA block of entry `e` into `buf` (kBlockSize bytes) and checks
  // its checksum.  Corruption names the disk offset when it does not match
  // or (version 2) the stored block cannot be decoded.
  Status ReadBlock(const IndexEntry& e, void* buf) const;
  // Version 2: the pack holding entry `e`'s block, opened through the
  // repository's pack cache.
  Result<std::shared_ptr<const Pack>> PackOf(const IndexEntry& e) const;

  // A second descriptor of the same file that bypasses the page cache
  // (O_DIRECT), opened on first use; -1 where the filesystem refuses it or
  // is not one where O_DIRECT with Linux AIO is known to work (ext4, XFS,
  // btrfs), and for version 2, whose blocks are elsewhere.
  // Reads through it need buffers, offsets and lengths aligned to 4096.
  int direct_fd() const;

 private:
  DiskFile() = default;
  std::string path_;
  UniqueFd fd_;
  mutable std::once_flag direct_once_;
  mutable UniqueFd direct_fd_;
  FileKind kind_ = FileKind::kBase;
  uint32_t version_ = kDiskFormatVersion;
  std::shared_ptr<const PackCache> packs_;
  uint64_t virtual_size_ = 0;
  uint64_t file_size_ = 0;
  std::vector<IndexEntry> entries_;
};

}  // namespace cbt::repo

#endif  // CBT_REPO_DISK_FILE_H_
