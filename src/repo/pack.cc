// SPDX-License-Identifier: Apache-2.0
#include "repo/pack.h"

#include "repo/disk_file.h"
#include "repo/remote.h"
#include "util/endian.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace cbt::repo {

namespace {

// Header fields (offsets in the first 4096 bytes).
constexpr size_t kOffVersion = 8;
constexpr size_t kOffHeaderSize = 12;
constexpr size_t kOffPackId = 16;
constexpr size_t kOffHeaderChecksum = 80;  // XXH3-64 of bytes 0..79

// Trailer fields.
constexpr size_t kOffCount = 8;
constexpr size_t kOffTableOffset = 16;
constexpr size_t kOffTableChecksum = 24;
constexpr size_t kOffTrailerChecksum = 48;  // XXH3-64 of bytes 0..47

// Table entry fields.
constexpr size_t kOffKey = 0;
constexpr size_t kOffOffset = 32;
constexpr size_t kOffStoredSize = 40;
constexpr size_t kOffFlags = 44;
constexpr size_t kOffChecksum = 48;

}  // namespace

std::string PackIdHex(uint64_t id) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(id));
  return buf;
}

std::string PackHeader(uint64_t id) {
  std::string h(kPackHeaderSize, '\0');
  std::memcpy(h.data(), kPackMagic, sizeof kPackMagic);
  StoreLe32(h.data() + kOffVersion, kPackVersion);
  StoreLe32(h.data() + kOffHeaderSize, kPackHeaderSize);
  StoreLe64(h.data() + kOffPackId, id);
  StoreLe64(h.data() + kOffHeaderChecksum, Checksum(h.data(), kOffHeaderChecksum));
  return h;
}

PackWriter::PackWriter(UniqueFd fd, std::string path, uint64_t id)
    : fd_(std::move(fd)), path_(std::move(path)), id_(id), writeback_(fd_.get(), path_, end_) {}

Result<std::unique_ptr<PackWriter>> PackWriter::Create(const std::string& path, uint64_t id) {
  CBT_ASSIGN_OR_RETURN(UniqueFd fd, CreateExclusive(path));
  // The header goes first and on its own, so that even a pack whose writer
  // died before its first block reached the disk names itself.
  const std::string header = PackHeader(id);
  CBT_RETURN_IF_ERROR(PwriteAll(fd.get(), header.data(), header.size(), 0, path));
  return std::unique_ptr<PackWriter>(new PackWriter(std::move(fd), path, id));
}

void PackWriter::set_staging() {
  std::lock_guard<std::mutex> lock(mu_);
  staging_ = true;
}

Result<BlockRef> PackWriter::Append(const ContentKey& key, std::string_view stored,
                                    uint64_t checksum) {
  if (stored.empty() || stored.size() > kRawBlockSize) {
    return Status::InvalidArgument("a stored block is 1 to 65536 bytes, not " +
                                   std::to_string(stored.size()));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return Status::InvalidArgument(path_ + ": pack already finished");
  if (!failed_.ok()) return failed_;
  const uint64_t offset = end_;
  Status st = PwriteAll(fd_.get(), stored.data(), stored.size(), offset, path_);
  if (st.ok()) {
    end_ += stored.size();
    if (!staging_) st = writeback_.Wrote(end_);
  }
  if (!st.ok()) {
    // The table would name a block that is not there, or one whose
    // writeback failed (which fsync would no longer report): the pack is
    // unusable.
    failed_ = st;
    return st;
  }
  records_.push_back({key, offset, static_cast<uint32_t>(stored.size()), checksum});
  return BlockRef{id_, offset, static_cast<uint32_t>(stored.size()), checksum};
}

uint64_t PackWriter::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return end_;
}

Status PackWriter::Finish() {
  std::lock_guard<std::mutex> lock(mu_);
  // Sticky: after a failed write or writeback, a second try could
  // "succeed" over lost data (a failed writeback may have dropped the dirty
  // pages).
  if (!failed_.ok()) return failed_;
  if (finished_) return Status::Ok();
  std::string tail(records_.size() * kPackEntrySize + kPackTrailerSize, '\0');
  char* p = tail.data();
  for (const auto& r : records_) {
    std::memcpy(p + kOffKey, r.key.data(), r.key.size());
    StoreLe64(p + kOffOffset, r.offset);
    StoreLe32(p + kOffStoredSize, r.stored_size);
    StoreLe64(p + kOffChecksum, r.checksum);
    p += kPackEntrySize;
  }
  const size_t table_len = records_.size() * kPackEntrySize;
  std::memcpy(p, kPackTrailerMagic, sizeof kPackTrailerMagic);
  StoreLe64(p + kOffCount, records_.size());
  StoreLe64(p + kOffTableOffset, end_);
  StoreLe64(p + kOffTableChecksum, Checksum(tail.data(), table_len));
  StoreLe64(p + kOffTrailerChecksum, Checksum(p, kOffTrailerChecksum));
  Status st = PwriteAll(fd_.get(), tail.data(), tail.size(), end_, path_);
  // Written out, not fsynced: the store syncs the filesystem once for all
  // its packs (BlockStore::Flush), which costs one device cache flush where
  // an fsync per pack cost one each, in the middle of the reads.
  if (st.ok() && !staging_) st = writeback_.WriteOut(end_ + tail.size());
  if (!st.ok()) {
    failed_ = st;
    return st;
  }
  finished_ = true;
  return Status::Ok();
}

Result<std::pair<uint64_t, uint64_t>> ParsePackTrailer(std::string_view t, uint64_t file_size,
                                                       const std::string& what) {
  auto bad = [&what](const std::string& why) { return Status::Corruption(what + ": " + why); };
  if (t.size() != kPackTrailerSize || std::memcmp(t.data(), kPackTrailerMagic, 8) != 0) {
    return bad("no pack trailer (a pack that was never finished?)");
  }
  if (LoadLe64(t.data() + kOffTrailerChecksum) != Checksum(t.data(), kOffTrailerChecksum)) {
    return bad("pack trailer checksum mismatch");
  }
  const uint64_t count = LoadLe64(t.data() + kOffCount);
  const uint64_t table_offset = LoadLe64(t.data() + kOffTableOffset);
  // file = blocks up to table_offset, count entries, trailer; checked
  // without overflow.
  if (file_size < uint64_t{kPackHeaderSize} + kPackTrailerSize || table_offset < kPackHeaderSize ||
      table_offset > file_size - kPackTrailerSize ||
      count != (file_size - kPackTrailerSize - table_offset) / kPackEntrySize ||
      (file_size - kPackTrailerSize - table_offset) % kPackEntrySize != 0) {
    return bad("pack trailer does not match the file's size");
  }
  return std::make_pair(table_offset, count);
}

Result<std::vector<PackRecord>> ParsePackTable(std::string_view table, uint64_t count,
                                               uint64_t table_offset, uint64_t expected,
                                               const std::string& what) {
  auto bad = [&what](const std::string& why) { return Status::Corruption(what + ": " + why); };
  if (count > table.size() / kPackEntrySize || table.size() != count * kPackEntrySize) {
    return bad("pack table has the wrong length");
  }
  if (Checksum(table.data(), table.size()) != expected) return bad("pack table checksum mismatch");
  std::vector<PackRecord> out;
  out.reserve(count);
  uint64_t prev_end = kPackHeaderSize;
  for (uint64_t i = 0; i < count; ++i) {
    const char* e = table.data() + i * kPackEntrySize;
    PackRecord r;
    std::memcpy(r.key.data(), e + kOffKey, r.key.size());
    r.offset = LoadLe64(e + kOffOffset);
    r.stored_size = LoadLe32(e + kOffStoredSize);
    r.checksum = LoadLe64(e + kOffChecksum);
    if (LoadLe32(e + kOffFlags) != 0) return bad("pack record with unknown flags");
    if (r.stored_size == 0 || r.stored_size > kRawBlockSize || r.offset < prev_end ||
        r.offset > table_offset || r.stored_size > table_offset - r.offset) {
      return bad("pack record " + std::to_string(i) + " outside the block area or overlapping");
    }
    prev_end = r.offset + r.stored_size;
    out.push_back(r);
  }
  return out;
}

namespace {

// Checks a pack's header (`h`, kPackHeaderSize bytes) names pack `id`.
Status CheckHeader(const char* h, uint64_t id, const std::string& what) {
  if (std::memcmp(h, kPackMagic, sizeof kPackMagic) != 0) {
    return Status::Corruption(what + ": not a pack (bad magic)");
  }
  if (LoadLe64(h + kOffHeaderChecksum) != Checksum(h, kOffHeaderChecksum)) {
    return Status::Corruption(what + ": pack header checksum mismatch");
  }
  if (LoadLe32(h + kOffVersion) != kPackVersion) {
    return Status::NotSupported(what + ": pack version " +
                                std::to_string(LoadLe32(h + kOffVersion)) + " is not supported");
  }
  if (LoadLe32(h + kOffHeaderSize) != kPackHeaderSize) {
    return Status::Corruption(what + ": pack header size is not 4096");
  }
  if (LoadLe64(h + kOffPackId) != id) {
    return Status::Corruption(what + ": the header names pack " +
                              PackIdHex(LoadLe64(h + kOffPackId)));
  }
  return Status::Ok();
}

}  // namespace

Result<std::shared_ptr<const Pack>> Pack::Open(const std::string& path, uint64_t id) {
  // A FIFO planted under a pack's name would block the open forever.
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    return Status::Corruption(path + " is not a regular file");
  }
  CBT_ASSIGN_OR_RETURN(UniqueFd fd, OpenRead(path));
  CBT_ASSIGN_OR_RETURN(uint64_t size, FileSize(fd.get(), path));
  if (size < kPackHeaderSize) return Status::Corruption(path + ": pack shorter than its header");
  char h[kPackHeaderSize];
  CBT_RETURN_IF_ERROR(PreadAll(fd.get(), h, sizeof h, 0, path));
  CBT_RETURN_IF_ERROR(CheckHeader(h, id, path));
  return std::shared_ptr<const Pack>(new Pack(std::move(fd), path, id, size));
}

Result<std::shared_ptr<const Pack>> Pack::OpenRemote(std::shared_ptr<const Remote> remote,
                                                     uint64_t id) {
  const std::string key = PackKey(id);
  const std::string what = remote->client().url().ToString() + "/" + key;
  CBT_ASSIGN_OR_RETURN(uint64_t size, remote->SizeOf(key));
  if (size < kPackHeaderSize) return Status::Corruption(what + ": pack shorter than its header");
  char h[kPackHeaderSize];
  CBT_RETURN_IF_ERROR(remote->ReadAt(key, size, h, sizeof h, 0));
  CBT_RETURN_IF_ERROR(CheckHeader(h, id, what));
  auto pack = std::shared_ptr<Pack>(new Pack(UniqueFd(), what, id, size));
  pack->remote_ = std::move(remote);
  pack->key_ = key;
  return std::shared_ptr<const Pack>(std::move(pack));
}

Status Pack::ReadRange(char* out, uint64_t len, uint64_t off) const {
  if (remote_) return remote_->ReadAt(key_, size_, out, len, off);
  return PreadAll(fd_.get(), out, len, off, path_);
}

void Pack::WillNeed(uint64_t start, uint64_t end) const {
  if (end <= start) return;
  if (remote_) {
    remote_->Prefetch(key_, size_, start, end);
    return;
  }
  ::posix_fadvise(fd_.get(), static_cast<off_t>(start), static_cast<off_t>(end - start),
                  POSIX_FADV_WILLNEED);
}

const PackRecord* FindRecord(const std::vector<PackRecord>& table, uint64_t offset) {
  auto rec = std::lower_bound(table.begin(), table.end(), offset,
                              [](const PackRecord& r, uint64_t off) { return r.offset < off; });
  return rec != table.end() && rec->offset == offset ? &*rec : nullptr;
}

Status DecodeBlock(std::string_view stored, uint64_t checksum, char* out, const std::string& what) {
  if (stored.size() == kRawBlockSize) {
    std::memcpy(out, stored.data(), kRawBlockSize);
  } else if (Status st = Decompress(stored, out, kRawBlockSize); !st.ok()) {
    return Status::Corruption(what + ": " + st.message());
  }
  if (Checksum(out, kRawBlockSize) != checksum)
    return Status::Corruption(what + ": checksum mismatch");
  return Status::Ok();
}

Result<std::string> Pack::ReadStored(const BlockRef& ref) const {
  const std::string what = path_ + " offset " + std::to_string(ref.offset);
  if (ref.stored_size == 0 || ref.stored_size > kRawBlockSize || ref.offset < kPackHeaderSize ||
      ref.offset > size_ || ref.stored_size > size_ - ref.offset) {
    return Status::Corruption(what + ": block reference outside the pack");
  }
  std::string stored(ref.stored_size, '\0');
  CBT_RETURN_IF_ERROR(ReadRange(stored.data(), stored.size(), ref.offset));
  return stored;
}

// The read path of every packed block: a raw block is read straight into
// `out`; a compressed one through a per-thread buffer, so the hot path
// allocates nothing.
Status Pack::ReadBlock(const BlockRef& ref, char* out) const {
  auto what = [&] { return path_ + " offset " + std::to_string(ref.offset); };
  if (ref.stored_size == 0 || ref.stored_size > kRawBlockSize || ref.offset < kPackHeaderSize) {
    return Status::Corruption(what() + ": block reference outside the pack");
  }
  if (ref.offset > size_ || ref.stored_size > size_ - ref.offset) {
    // A pack its writer is still filling (a backup checking a disk before
    // its commit) has grown since it was opened.
    struct stat st;
    const uint64_t now =
        !remote_ && ::fstat(fd_.get(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
    if (ref.offset > now || ref.stored_size > now - ref.offset) {
      return Status::Corruption(what() + ": block reference outside the pack");
    }
  }
  if (ref.stored_size == kRawBlockSize) {
    CBT_RETURN_IF_ERROR(ReadRange(out, kRawBlockSize, ref.offset));
    if (Checksum(out, kRawBlockSize) != ref.checksum) {
      return Status::Corruption(what() + ": checksum mismatch");
    }
    return Status::Ok();
  }
  thread_local std::string stored;
  stored.resize(ref.stored_size);
  CBT_RETURN_IF_ERROR(ReadRange(stored.data(), ref.stored_size, ref.offset));
  if (Status st = Decompress(stored, out, kRawBlockSize); !st.ok()) {
    return Status::Corruption(what() + ": " + st.message());
  }
  if (Checksum(out, kRawBlockSize) != ref.checksum) {
    return Status::Corruption(what() + ": checksum mismatch");
  }
  return Status::Ok();
}

Result<std::vector<PackRecord>> Pack::Table() const {
  if (size_ < uint64_t{kPackHeaderSize} + kPackTrailerSize) {
    return Status::Corruption(path_ + ": no pack trailer (a pack that was never finished?)");
  }
  char t[kPackTrailerSize];
  CBT_RETURN_IF_ERROR(ReadRange(t, sizeof t, size_ - kPackTrailerSize));
  CBT_ASSIGN_OR_RETURN(auto geometry, ParsePackTrailer({t, sizeof t}, size_, path_));
  const auto [table_offset, count] = geometry;
  // A table is written out in full: a hole in it (a sparse file claiming
  // a huge table) is damage, found before allocating for it.
  const off_t hole = remote_ ? -1 : ::lseek(fd_.get(), static_cast<off_t>(table_offset), SEEK_HOLE);
  if (hole >= 0 && static_cast<uint64_t>(hole) < table_offset + count * kPackEntrySize) {
    return Status::Corruption(path_ + ": the pack's table has a hole (damaged)");
  }
  std::string table(count * kPackEntrySize, '\0');
  CBT_RETURN_IF_ERROR(ReadRange(table.data(), table.size(), table_offset));
  return ParsePackTable(table, count, table_offset, LoadLe64(t + kOffTableChecksum), path_);
}

}  // namespace cbt::repo
