// SPDX-License-Identifier: Apache-2.0
//
// Building the VHD and chunked upload bodies: the VHD footer, header and
// BAT computed up front (so the length is known), then each present 2 MiB
// block as its sector bitmap followed by data read from the source straight
// into the caller's buffer; the chunked body as frames of runs of carried
// blocks.
#include "stream/vhd_stream.h"

#include "repo/disk_file.h"
#include "util/endian.h"

#include <algorithm>
#include <cstring>
#include <ctime>
#include <random>

namespace cbt::stream {

namespace {

// One carry flag per repository block; as uint64_t for the arithmetic.
constexpr uint64_t kBlock = repo::kBlockSize;
constexpr uint64_t kVhdBlock = 2 * 1024 * 1024;
constexpr uint64_t kPerVhdBlock = kVhdBlock / kBlock;  // 32
constexpr uint64_t kSectorsPerBlock = kBlock / 512;    // 128
constexpr uint64_t kTableOffset = 1536;
constexpr uint64_t kMaxVhdSize = 2040ull << 30;
constexpr uint32_t kVhdEpoch = 946684800;  // 2000-01-01 in UNIX time

uint32_t OnesComplementSum(const char* p, size_t n) {
  uint32_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum += static_cast<unsigned char>(p[i]);
  return ~sum;
}

// CHS geometry as the VHD specification computes it.
void Geometry(uint64_t size, uint16_t* cyl, uint8_t* heads, uint8_t* spt) {
  uint64_t total = std::min<uint64_t>(size / 512, 65535ull * 16 * 255);
  uint64_t s, h, cth;
  if (total >= 65535ull * 16 * 63) {
    s = 255;
    h = 16;
    cth = total / s;
  } else {
    s = 17;
    cth = total / s;
    h = std::max<uint64_t>((cth + 1023) / 1024, 4);
    if (cth >= h * 1024 || h > 16) {
      s = 31;
      h = 16;
      cth = total / s;
    }
    if (cth >= h * 1024) {
      s = 63;
      h = 16;
      cth = total / s;
    }
  }
  *cyl = static_cast<uint16_t>(cth / h);
  *heads = static_cast<uint8_t>(h);
  *spt = static_cast<uint8_t>(s);
}

std::string Footer(uint64_t size) {
  std::string f(512, '\0');
  char* p = f.data();
  std::memcpy(p, "conectix", 8);
  StoreBe32(p + 8, 2);
  StoreBe32(p + 12, 0x00010000);
  StoreBe64(p + 16, 512);
  StoreBe32(p + 24, static_cast<uint32_t>(std::time(nullptr) - kVhdEpoch));
  // "tap\0": blktap's creator; makes every qemu version use current_size.
  std::memcpy(p + 28, "tap\0", 4);
  StoreBe32(p + 32, 0x00010000);
  StoreBe32(p + 36, 0);
  StoreBe64(p + 40, size);
  StoreBe64(p + 48, size);
  uint16_t cyl;
  uint8_t heads, spt;
  Geometry(size, &cyl, &heads, &spt);
  p[56] = static_cast<char>(cyl >> 8);
  p[57] = static_cast<char>(cyl & 0xff);
  p[58] = static_cast<char>(heads);
  p[59] = static_cast<char>(spt);
  StoreBe32(p + 60, 3);  // dynamic
  std::random_device rd;
  for (int i = 0; i < 16; ++i) p[68 + i] = static_cast<char>(rd());
  StoreBe32(p + 64, OnesComplementSum(p, 512));
  return f;
}

}  // namespace

Result<std::unique_ptr<VhdStream>> VhdStream::Create(const DiskSource& source,
                                                     std::vector<bool> carry) {
  const uint64_t size = source.size();
  if (size % 512 != 0) {
    return Status::InvalidArgument("a VHD needs a disk size that is a multiple of 512 bytes");
  }
  if (size > kMaxVhdSize) {
    return Status::InvalidArgument("XenServer imports VHDs of at most 2040 GiB");
  }
  auto s = std::unique_ptr<VhdStream>(new VhdStream(source));
  carry.resize(repo::BlockCount(size), false);
  source.ExpectReads(carry);
  s->carry_ = std::move(carry);
  const uint64_t entries = (size + kVhdBlock - 1) / kVhdBlock;
  for (uint64_t b = 0; b < s->carry_.size(); ++b) {
    if (!s->carry_[b]) continue;
    ++s->carried_;
    const uint32_t vb = static_cast<uint32_t>(b / kPerVhdBlock);
    if (s->present_.empty() || s->present_.back() != vb) s->present_.push_back(vb);
  }
  const uint64_t bat_bytes = (entries * 4 + 511) / 512 * 512;
  const uint64_t first_block = kTableOffset + bat_bytes;

  s->footer_ = Footer(size);
  std::string header(1024, '\0');
  char* h = header.data();
  std::memcpy(h, "cxsparse", 8);
  StoreBe64(h + 8, ~uint64_t{0});
  StoreBe64(h + 16, kTableOffset);
  StoreBe32(h + 24, 0x00010000);
  StoreBe32(h + 28, static_cast<uint32_t>(entries));
  StoreBe32(h + 32, static_cast<uint32_t>(kVhdBlock));
  StoreBe32(h + 36, OnesComplementSum(h, 1024));
  std::string bat(bat_bytes, '\xff');
  for (size_t i = 0; i < s->present_.size(); ++i) {
    uint64_t sector = (first_block + i * (512 + kVhdBlock)) / 512;
    StoreBe32(bat.data() + 4 * s->present_[i], static_cast<uint32_t>(sector));
  }
  s->prefix_ = s->footer_ + header + bat;
  s->length_ = first_block + s->present_.size() * (512 + kVhdBlock) + 512;
  s->bitmap_.resize(512);
  s->block_pos_ = 512 + kVhdBlock;  // no block started
  return s;
}

void VhdStream::StartBlock(uint32_t vb) {
  std::fill(bitmap_.begin(), bitmap_.end(), 0);
  const uint64_t size = source_.size();
  for (uint64_t i = 0; i < kPerVhdBlock; ++i) {
    const uint64_t b = vb * kPerVhdBlock + i;
    if (b >= carry_.size() || !carry_[b]) continue;
    // Bits for the sectors of this 64 KiB block that lie inside the disk.
    const uint64_t n = std::min(kBlock, size - b * kBlock);
    const uint64_t first = i * kSectorsPerBlock;
    for (uint64_t sct = first; sct < first + (n + 511) / 512; ++sct) {
      bitmap_[sct / 8] = static_cast<char>(bitmap_[sct / 8] | (0x80 >> (sct % 8)));
    }
  }
  block_ = vb;
  block_pos_ = 0;
}

// A block's data goes from the source straight into the upload buffer: no
// staging copy of the 2 MiB block, which measured as much CPU as the reads.
Status VhdStream::BlockData(char* buf, uint64_t pos, size_t n) {
  const uint64_t size = source_.size();
  while (n > 0) {
    const uint64_t i = pos / kBlock, in = pos % kBlock;
    const size_t len = static_cast<size_t>(std::min<uint64_t>(n, kBlock - in));
    const uint64_t b = block_ * kPerVhdBlock + i;
    const uint64_t off = b * kBlock;
    // Bytes of this 64 KiB block inside the disk; the rest reads as zeros.
    const uint64_t valid = off < size ? std::min(kBlock, size - off) : 0;
    size_t got = 0;
    if (b < carry_.size() && carry_[b] && in < valid && source_.MayHoldData(b)) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(len, valid - in));
      CBT_ASSIGN_OR_RETURN(got, source_.Read(buf, want, off + in));
      if (got != want) {
        return Status::IoError("short read of the disk at offset " + std::to_string(off + in));
      }
    }
    std::memset(buf + got, 0, len - got);
    buf += len;
    pos += len;
    n -= len;
  }
  return Status::Ok();
}

Result<size_t> VhdStream::Next(char* buf, size_t max) {
  constexpr size_t kBlockBytes = 512 + kVhdBlock;
  size_t out = 0;
  while (out < max && pos_ < length_) {
    if (pos_ < prefix_.size()) {
      size_t n = std::min<size_t>(max - out, prefix_.size() - pos_);
      std::memcpy(buf + out, prefix_.data() + pos_, n);
      out += n;
      pos_ += n;
      continue;
    }
    if (block_pos_ == kBlockBytes) {
      if (next_block_ < present_.size()) {
        StartBlock(present_[next_block_++]);
      } else {
        const uint64_t footer_pos = pos_ - (length_ - 512);
        size_t n = std::min<size_t>(max - out, 512 - footer_pos);
        std::memcpy(buf + out, footer_.data() + footer_pos, n);
        out += n;
        pos_ += n;
        continue;
      }
    }
    size_t n = std::min(max - out, kBlockBytes - block_pos_);
    if (block_pos_ < 512) {
      n = std::min<size_t>(n, 512 - block_pos_);
      std::memcpy(buf + out, bitmap_.data() + block_pos_, n);
    } else {
      CBT_RETURN_IF_ERROR(BlockData(buf + out, block_pos_ - 512, n));
    }
    block_pos_ += n;
    out += n;
    pos_ += n;
  }
  return out;
}

std::unique_ptr<ChunkedRawStream> ChunkedRawStream::Create(const DiskSource& source,
                                                           const std::vector<bool>& carry) {
  auto s = std::unique_ptr<ChunkedRawStream>(new ChunkedRawStream(source));
  source.ExpectReads(carry);
  constexpr uint64_t kMaxFrame = 4 << 20;
  const uint64_t size = source.size();
  for (uint64_t b = 0; b < carry.size() && b * kBlock < size; ++b) {
    if (!carry[b]) continue;
    ++s->carried_;
    const uint64_t off = b * kBlock;
    const uint32_t len = static_cast<uint32_t>(std::min(kBlock, size - off));
    if (!s->frames_.empty() && s->frames_.back().offset + s->frames_.back().length == off &&
        s->frames_.back().length + len <= kMaxFrame) {
      s->frames_.back().length += len;
    } else {
      s->frames_.push_back({off, len});
    }
  }
  s->frames_.push_back({0, 0});  // end of stream
  for (const auto& f : s->frames_) s->length_ += 12 + f.length;
  return s;
}

Result<size_t> ChunkedRawStream::Next(char* buf, size_t max) {
  size_t out = 0;
  while (out < max && frame_ < frames_.size()) {
    const Frame& f = frames_[frame_];
    if (in_frame_ < 12) {
      char header[12];
      StoreLe64(header, f.offset);
      StoreLe32(header + 8, static_cast<uint32_t>(f.length));
      size_t n = std::min<size_t>(max - out, 12 - in_frame_);
      std::memcpy(buf + out, header + in_frame_, n);
      out += n;
      in_frame_ += n;
    } else {
      const uint64_t done = in_frame_ - 12;
      const uint64_t off = f.offset + done;
      // At most up to the end of this 64 KiB block, so holes are per block.
      size_t n = static_cast<size_t>(
          std::min<uint64_t>({max - out, f.length - done, kBlock - off % kBlock}));
      if (n > 0) {
        const uint64_t block = off / kBlock;
        if (source_.MayHoldData(block)) {
          CBT_ASSIGN_OR_RETURN(size_t got, source_.Read(buf + out, n, off));
          if (got != n) return Status::IoError("short read at offset " + std::to_string(off));
        } else {
          std::memset(buf + out, 0, n);
        }
        out += n;
        in_frame_ += n;
      }
    }
    if (in_frame_ == 12 + f.length) {
      ++frame_;
      in_frame_ = 0;
    }
  }
  return out;
}

}  // namespace cbt::stream
