// SPDX-License-Identifier: Apache-2.0
//
// Pack files: the shared block store of a repository of format 3.  A pack
// holds stored blocks (zstd frames, or raw 64 KiB when a block does not
// shrink) back to back, and, once finished, a table of them and a trailer,
// so that every pack describes itself:
//
//   [header, 4096 bytes][stored blocks ...][table: 64-byte entries][trailer, 64 bytes]
//
// Disk files refer to a block by (pack, offset, stored size, checksum of
// the raw block), so a read is one pread and at most one decompression,
// whatever the chain depth.  A pack is written once by one writer and then
// only ever has ranges of dead blocks punched out of it (a hole reads as
// zeros, which fails the block's checksum: a dead block is never served).
// A pack without its trailer was not finished; no disk file refers to it.
//
// Thread-safety: PackWriter::Append may be called from several threads at
// once; Finish after every Append has returned.  Pack is immutable after
// Open and safe to share.
#ifndef CBT_REPO_PACK_H_
#define CBT_REPO_PACK_H_

#include "util/block_codec.h"
#include "util/file.h"
#include "util/status.h"
#include "util/writeback_window.h"

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace cbt::repo {

class Remote;

inline constexpr char kPackMagic[8] = {'C', 'B', 'T', 'P', 'A', 'C', 'K', '\0'};
inline constexpr char kPackTrailerMagic[8] = {'C', 'B', 'T', 'P', 'E', 'N', 'D', '\0'};
inline constexpr uint32_t kPackVersion = 1;
inline constexpr uint32_t kPackHeaderSize = 4096;
inline constexpr uint32_t kPackEntrySize = 64;
inline constexpr uint32_t kPackTrailerSize = 64;
// Every stored block is one 64 KiB block of a disk; stored raw it takes
// exactly this, compressed less.
inline constexpr uint32_t kRawBlockSize = 64 * 1024;

// One stored block of a pack.
struct PackRecord {
  ContentKey key;            // content key of the raw block (BLAKE3 or SHA-256)
  uint64_t offset = 0;       // of the stored bytes in the pack
  uint32_t stored_size = 0;  // kRawBlockSize: raw; less: a zstd frame
  uint64_t checksum = 0;     // XXH3-64 of the raw block
};

// Where a block is: what a disk file's entry says.
struct BlockRef {
  uint64_t pack = 0;
  uint64_t offset = 0;
  uint32_t stored_size = 0;
  uint64_t checksum = 0;
};

// Writes one pack.  The header goes first, so that even an unfinished pack
// names itself; Finish appends the table and trailer and writes it out.
class PackWriter {
 public:
  // Creates `path` (must not exist, mode 0600) for pack `id`.
  static Result<std::unique_ptr<PackWriter>> Create(const std::string& path, uint64_t id);

  // Appends a stored block (`stored`: a zstd frame of the raw block, or the
  // raw 64 KiB) whose raw bytes have `key` and `checksum`; returns where it
  // is.  InvalidArgument if `stored` is empty or longer than 64 KiB.
  Result<BlockRef> Append(const ContentKey& key, std::string_view stored, uint64_t checksum);

  // Bytes the pack holds so far (header and blocks).
  uint64_t size() const;
  // A pack that is only a staging copy (of a repository on an object store,
  // uploaded once finished): left in the page cache, where the upload
  // reads it back, and not fsynced.
  // Call before the first Append.
  void set_staging();
  uint64_t id() const { return id_; }
  const std::string& path() const { return path_; }

  // Writes the table and trailer and waits until the whole file has
  // reached the device (WritebackWindow::WriteOut); a staging copy is only
  // written.  Not durable yet: the caller syncs the filesystem holding the
  // pack and its directory (SyncFilesystemsOf) before anything refers to
  // it.  Once a write or the writeback has failed, returns that error
  // forever: the pack is never finished and nothing may refer to its
  // blocks.
  Status Finish();
  // The records appended, in offset order (valid after Finish).
  const std::vector<PackRecord>& records() const { return records_; }

 private:
  PackWriter(UniqueFd fd, std::string path, uint64_t id);
  UniqueFd fd_;
  std::string path_;
  uint64_t id_;
  mutable std::mutex mu_;
  uint64_t end_ = kPackHeaderSize;  // offset of the next block
  // Paces the blocks' writeback (not for a staging copy: its upload reads
  // it back from the page cache).
  WritebackWindow writeback_;
  std::vector<PackRecord> records_;
  bool finished_ = false;
  bool staging_ = false;
  Status failed_;  // the first failed write or writeback; every later Finish returns it
};

// Pack `id` as 16 lower-case hexadecimal digits, as its file is named.
std::string PackIdHex(uint64_t id);
// The header of pack `id` (4096 bytes).
std::string PackHeader(uint64_t id);
// Parses a pack's trailer (its last kPackTrailerSize bytes) of a file of
// `file_size` bytes: returns the table's offset and entry count.
// Corruption (naming `what`) unless the magic, checksum and geometry hold.
Result<std::pair<uint64_t, uint64_t>> ParsePackTrailer(std::string_view trailer, uint64_t file_size,
                                                       const std::string& what);
// Parses a pack's table (`count` entries) whose blocks end at
// `table_offset`; checks the table checksum `expected` and that records are
// in offset order, inside the block area, and do not overlap.
Result<std::vector<PackRecord>> ParsePackTable(std::string_view table, uint64_t count,
                                               uint64_t table_offset, uint64_t expected,
                                               const std::string& what);

// A finished pack, opened for reading blocks.
class Pack {
 public:
  // Opens `path` (not through a symbolic link) and checks its header,
  // which must name pack `id`.  The table is read only by Table().
  static Result<std::shared_ptr<const Pack>> Open(const std::string& path, uint64_t id);
  // Opens pack `id` of a repository on an object store (repo/remote.h):
  // reads go through the store's chunk cache.  NotFound if the store does
  // not have it.
  static Result<std::shared_ptr<const Pack>> OpenRemote(std::shared_ptr<const Remote> remote,
                                                        uint64_t id);

  // Reads the block at `ref` into `out` (kRawBlockSize bytes):
  // decompressed if stored compressed, then checked against ref.checksum.
  // Corruption naming the pack and offset if it does not match.
  Status ReadBlock(const BlockRef& ref, char* out) const;
  // Reads the stored bytes of `ref` as they are (for verify and copying).
  Result<std::string> ReadStored(const BlockRef& ref) const;
  // The pack's table; Corruption if the pack was not finished.
  Result<std::vector<PackRecord>> Table() const;

  // `len` bytes of the pack at `off`, as they are stored.
  Status ReadRange(char* out, uint64_t len, uint64_t off) const;
  // Tells the source that [start, end) will be read soon: the kernel's
  // read-ahead for a file, ranged GETs in the background for an object.
  void WillNeed(uint64_t start, uint64_t end) const;

  uint64_t id() const { return id_; }
  uint64_t file_size() const { return size_; }
  // The file's path, or the object's s3:// URL.
  const std::string& path() const { return path_; }

 private:
  Pack(UniqueFd fd, std::string path, uint64_t id, uint64_t size)
      : fd_(std::move(fd)), path_(std::move(path)), id_(id), size_(size) {}
  UniqueFd fd_;  // -1 for a pack on an object store
  std::shared_ptr<const Remote> remote_;
  std::string key_;  // the object's key, for a pack on an object store
  std::string path_;
  uint64_t id_;
  uint64_t size_;
};

// The record of `table` (in offset order, as Pack::Table returns it) at
// exactly `offset`, or nullptr.
const PackRecord* FindRecord(const std::vector<PackRecord>& table, uint64_t offset);

// Decodes the stored bytes of a block into `out` (kRawBlockSize bytes) and
// checks `checksum`; `what` names the block in errors.
Status DecodeBlock(std::string_view stored, uint64_t checksum, char* out, const std::string& what);

}  // namespace cbt::repo

#endif  // CBT_REPO_PACK_H_
