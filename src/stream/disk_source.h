// SPDX-License-Identifier: Apache-2.0
//
// Where the bytes of a disk being sent somewhere come from: a point of the
// repository (its composed image) or a raw image file.  A source answers
// reads, says which 64 KiB blocks (repo::kBlockSize) may hold data so holes
// need not be read, and takes a hint of the blocks a stream will read next
// so it can have them fetched ahead.  The upload streams (stream/
// vhd_stream.h) read from it; restore and export choose it.
//
// Thread-safety: one stream reads a source at a time; ExpectReads starts
// the hint over for the next one.
#ifndef CBT_STREAM_DISK_SOURCE_H_
#define CBT_STREAM_DISK_SOURCE_H_

#include "image/composed_image.h"
#include "util/status.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace cbt::stream {

class DiskSource {
 public:
  virtual ~DiskSource() = default;
  virtual uint64_t size() const = 0;
  // Reads [off, off+len) (within size()); returns bytes read.
  virtual Result<size_t> Read(void* buf, size_t len, uint64_t off) const = 0;
  // True if 64 KiB block `block` may hold non-zero data.
  virtual bool MayHoldData(uint64_t block) const = 0;
  // A hint: the reader will read exactly the 64 KiB blocks set in `blocks`,
  // in increasing order (without it: every block, front to back).  A source
  // may use it to have the next of them fetched while earlier ones are sent.
  virtual void ExpectReads(std::vector<bool> blocks) const { (void)blocks; }
};

// A ComposedImage point of the repository, or a raw image file (holes found
// with SEEK_DATA; a cbtfs file reports the holes of its point).
std::unique_ptr<DiskSource> SourceFromImage(std::shared_ptr<const image::ComposedImage> image);
Result<std::unique_ptr<DiskSource>> SourceFromFile(const std::string& path);

}  // namespace cbt::stream

#endif  // CBT_STREAM_DISK_SOURCE_H_
