// SPDX-License-Identifier: Apache-2.0
//
// The two bodies a disk upload can have, generated on the fly, forward-only,
// from a disk source (stream/disk_source.h) and a choice of which 64 KiB
// blocks to carry, each with its length known before the first byte (for
// Content-Length).
//
// A dynamic VHD: blocks not carried are absent (a 2 MiB VHD block with no
// carried 64 KiB block is not in the file at all; inside a present block
// only the sectors of carried blocks have their bitmap bits set).  xapi's
// import_raw_vdi.ml hands the body to vhd-tool (Vhd_tool_wrapper.receive),
// which writes exactly the sectors whose bits are set, so the same stream is
// a sparse full restore onto a new VDI or a changed-blocks restore onto an
// existing one.  vhd-tool reads the body as a stream and never seeks back,
// so the layout is the one it can follow: footer copy, header at 512, BAT at
// 1536, blocks in increasing order, footer.  The XAPI simulator's reader
// (scripts/xapi-sim/vhd.py) checks the same constraints in the tests;
// README.md ("restore and export") says when each body is used.
//
// Thread-safety: one reader at a time.
#ifndef CBT_STREAM_VHD_STREAM_H_
#define CBT_STREAM_VHD_STREAM_H_

#include "stream/disk_source.h"
#include "util/status.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace cbt::stream {

class VhdStream {
 public:
  // `carry[b]` says whether 64 KiB block b goes into the stream.
  // InvalidArgument if the size is not a multiple of 512 or above 2040 GiB.
  static Result<std::unique_ptr<VhdStream>> Create(const DiskSource& source,
                                                   std::vector<bool> carry);
  uint64_t length() const { return length_; }
  uint64_t carried_blocks() const { return carried_; }
  // Produces the next bytes of the stream (at most `max`); 0 at the end.
  Result<size_t> Next(char* buf, size_t max);

 private:
  VhdStream(const DiskSource& source) : source_(source) {}
  void StartBlock(uint32_t vhd_block);
  // Writes `n` bytes of the current block's data, from `pos` within it, to
  // `buf`: read from the source straight into the caller's buffer, or zeros.
  Status BlockData(char* buf, uint64_t pos, size_t n);

  const DiskSource& source_;
  std::vector<bool> carry_;
  std::vector<uint32_t> present_;  // VHD block numbers present, increasing
  std::string prefix_;             // footer copy + header + BAT
  std::string footer_;
  uint64_t length_ = 0;
  uint64_t carried_ = 0;
  // Streaming state.
  uint64_t pos_ = 0;
  size_t next_block_ = 0;
  std::vector<char> bitmap_;  // sector bitmap of the current block
  uint32_t block_ = 0;        // the current VHD block
  size_t block_pos_ = 0;      // position in bitmap + data of the current block
};

// xapi's raw "chunked" upload framing (import_raw_vdi?format=raw&chunked,
// which import_raw_vdi.ml passes to vhd-tool as raw input with chunked
// encoding): frames of a little-endian {u64 offset, u32 length} header and
// `length` bytes, ended by a 0/0 header.  Only the framed extents are
// written, so it carries exactly the chosen 64 KiB blocks, where a VHD must
// carry whole 2 MiB blocks.  The framing is taken from xapi's code (and
// modelled by scripts/xapi-sim/handlers.py); no other client is known to
// use it, so it is used only when asked for.
class ChunkedRawStream {
 public:
  static std::unique_ptr<ChunkedRawStream> Create(const DiskSource& source,
                                                  const std::vector<bool>& carry);
  uint64_t length() const { return length_; }
  uint64_t carried_blocks() const { return carried_; }
  Result<size_t> Next(char* buf, size_t max);

 private:
  explicit ChunkedRawStream(const DiskSource& source) : source_(source) {}
  struct Frame {
    uint64_t offset;
    uint32_t length;
  };
  const DiskSource& source_;
  std::vector<Frame> frames_;
  uint64_t length_ = 0;
  uint64_t carried_ = 0;
  size_t frame_ = 0;       // current frame
  uint64_t in_frame_ = 0;  // bytes of the current frame (header included) produced
};

}  // namespace cbt::stream

#endif  // CBT_STREAM_VHD_STREAM_H_
