// SPDX-License-Identifier: Apache-2.0
//
// ComposedImage: one disk of one point, read as a raw image composed from its
// chain (base plus overlays).  This is the reader cbtfs, verify and restore
// share.  Open builds a block map (block -> file and index entry) from the
// chain, newest file winning, so every read is a lookup whatever the depth.
//
// Every DATA block is checked against its stored checksum as it is read; a
// mismatch fails the read with Corruption naming VM, point, disk and offset,
// and the bad bytes are never returned.
//
// Thread-safety: immutable after Open; Read and the seek helpers may be
// called from many threads at once.
#ifndef CBT_IMAGE_COMPOSED_IMAGE_H_
#define CBT_IMAGE_COMPOSED_IMAGE_H_

#include "repo/disk_file.h"
#include "repo/repository.h"
#include "util/status.h"

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace cbt::image {

// Detects a sequential reader of one image and keeps the kernel prefetching
// a window ahead of it.  Random readers (a loop-mounted filesystem) trigger
// nothing.  Thread-safe: FUSE may deliver a reader's requests on several
// threads and slightly out of order.
class SequentialPrefetcher {
 public:
  explicit SequentialPrefetcher(uint64_t window = 128ull << 20) : window_(window) {}
  void OnRead(const class ComposedImage& image, uint64_t off, uint64_t len);

 private:
  const uint64_t window_;
  std::mutex mu_;
  uint64_t last_end_ = 0;
  uint64_t prefetched_to_ = 0;
};

class ComposedImage {
 public:
  // Names used in error messages.
  struct Label {
    std::string vm;
    std::string point;
    std::string vdi;
  };

  // Opens disk `vdi` of `point`.  NotFound if the point or disk does not
  // exist; Corruption if a file of the chain fails its header or index
  // checks or the chain is inconsistent.  Never modifies the repository.
  static Result<std::shared_ptr<const ComposedImage>> Open(const repo::Repository& repo,
                                                           const std::string& vm,
                                                           const std::string& point,
                                                           const std::string& vdi);

  // Composes already-opened files, base first.  `file_points[i]` names the
  // point that wrote chain[i] (for messages).  Corruption if the first file
  // is not a base, a later one not an overlay, or the sizes differ.
  static Result<std::shared_ptr<const ComposedImage>> FromChain(
      std::vector<std::shared_ptr<const repo::DiskFile>> chain,
      std::vector<std::string> file_points, Label label);

  uint64_t size() const { return size_; }
  const Label& label() const { return label_; }
  // The files of the chain, base first, and the points that wrote them.
  const std::vector<std::shared_ptr<const repo::DiskFile>>& chain() const { return chain_; }
  const std::vector<std::string>& file_points() const { return file_points_; }
  size_t depth() const { return chain_.size(); }

  // Reads `len` bytes at `off` into `buf`.  Bytes past size() are not
  // touched; returns the number of bytes read (short only at the end).
  // Corruption on a checksum mismatch (the whole read fails), IoError on a
  // failed pread.
  Result<size_t> Read(void* buf, size_t len, uint64_t off) const;

  // Alignment ReadDirect needs of its buffer.
  static constexpr size_t kDirectAlign = 4096;

  // Read for a caller that wants the page cache left out, such as a FUSE
  // server whose kernel already caches what it returns.  The runs of whole
  // blocks go from the device straight into `buf` (O_DIRECT), all submitted
  // at once, so a read gathering blocks from many files of a deep chain
  // waits for about one device round trip, and no backing page is
  // allocated, copied or left behind.  Holes are zero-filled; blocks the
  // request covers only in part, files that refuse O_DIRECT, and a `buf`
  // not aligned to kDirectAlign go through Read.  Same bytes, results and
  // errors as Read.
  Result<size_t> ReadDirect(char* buf, size_t len, uint64_t off) const;
  // True if every file of the chain takes O_DIRECT and this thread can use
  // asynchronous I/O: ReadDirect then never falls back to the page cache
  // for whole blocks.  Opens the direct descriptors on first call.
  bool CanReadDirect() const;

  // True if block `block` holds stored data (not a hole, not a zero block).
  bool IsDataBlock(uint64_t block) const { return map_[block].file != kNoFile; }
  // Offset of the first data byte at or after `off`, or size() if none.
  uint64_t NextData(uint64_t off) const;
  // Offset of the first hole byte at or after `off` (size() counts as a hole).
  uint64_t NextHole(uint64_t off) const;
  // True if no byte of [off, off + len) is stored data (holes, zero blocks,
  // or past the end).  Looks only at the blocks of that range.
  bool AllHoles(uint64_t off, uint64_t len) const;
  // Number of blocks that hold data.
  uint64_t DataBlockCount() const;
  // Memory this image holds: its block map and the indexes of its files
  // (files shared with other images are counted here too).  For caches.
  size_t MemoryBytes() const;

  // Asks the kernel to start reading, in the background, the stored blocks
  // that compose [off, off + len): one POSIX_FADV_WILLNEED per run of blocks
  // contiguous in one file.  Deep chains scatter a point's blocks over many
  // files; prefetching ahead of a sequential reader lets the device work on
  // many of them at once instead of one 64 KiB read at a time.
  // With `leave_single_run`, a range whose blocks all lie in one contiguous
  // run of one file on a device with a large readahead (4 MiB or more) is
  // not advised: a reader going through it in order gets the kernel's own
  // readahead, which measured faster there than advice issued from the
  // reading threads, and slower than advice with the common 128 KiB.
  void Prefetch(uint64_t off, uint64_t len, bool leave_single_run = false) const;

 private:
  static constexpr uint32_t kNoFile = 0xffffffffu;
  struct Slot {
    uint32_t file;   // index into chain_, or kNoFile for a hole or zero block
    uint32_t entry;  // index into that file's entries()
  };

  ComposedImage() = default;
  // `detail` (if any) says more, e.g. which pack and offset failed.
  Status CorruptionAt(uint64_t block, uint32_t file, const std::string& detail = "") const;
  // Blocks, at most `max` (>= 1), in the run from `block` (a data block)
  // whose blocks follow one another in the same file.
  uint64_t RunLength(uint64_t block, uint64_t max) const;
  // Blocks, at most `max` (>= 1), in the run from `block` (a data block of
  // a version-2 file) stored raw and back to back in one pack.
  uint64_t PackedRawRun(uint64_t block, uint64_t max) const;
  // Checks the `count` blocks of a run from `block`, read into `data`.
  Status VerifyRun(const char* data, uint64_t block, uint64_t count) const;
  // Fills `out` with the bytes [pos, end) of the disk, block by block:
  // zeros for a hole, and for a piece of a data block (all of it or from
  // `in_block`, `n` bytes) what `read(slot, block, in_block, n, out)`
  // returns, the bytes it filled (`n`, or more for a run of whole blocks).
  template <typename ReadFn>
  Status ReadPieces(char* out, uint64_t pos, uint64_t end, ReadFn&& read) const;

  Label label_;
  uint64_t size_ = 0;
  std::vector<std::shared_ptr<const repo::DiskFile>> chain_;
  std::vector<std::string> file_points_;
  std::vector<Slot> map_;
};

}  // namespace cbt::image

#endif  // CBT_IMAGE_COMPOSED_IMAGE_H_
