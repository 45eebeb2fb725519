// SPDX-License-Identifier: Apache-2.0
#include "repo/block_store.h"

#include "repo/disk_file.h"
#include "repo/layout.h"
#include "util/endian.h"
#include "util/file.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>

namespace cbt::repo {

namespace {

// Index header fields.
constexpr size_t kOffVersion = 8;
constexpr size_t kOffEntrySize = 12;
constexpr size_t kOffCount = 16;
// Entry fields.
constexpr size_t kOffPack = 32;
constexpr size_t kOffOffset = 40;
constexpr size_t kOffStoredSize = 48;
constexpr size_t kOffChecksum = 56;

Result<uint64_t> RandomId() {
  uint64_t v = 0;
  CBT_RETURN_IF_ERROR(RandomBytes(&v, sizeof v));
  return v;
}

bool KeyLess(const IndexRecord& a, const IndexRecord& b) { return a.key < b.key; }

}  // namespace

bool ParseStoreFileName(const std::string& name, const std::string& suffix, uint64_t* id) {
  if (name.size() != 16 + suffix.size() || name.compare(16, suffix.size(), suffix) != 0) {
    return false;
  }
  uint64_t v = 0;
  for (int i = 0; i < 16; ++i) {
    const char c = name[i];
    if (c >= '0' && c <= '9') {
      v = v << 4 | static_cast<uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      v = v << 4 | static_cast<uint64_t>(c - 'a' + 10);
    } else {
      return false;
    }
  }
  *id = v;
  return true;
}

std::string PackPath(const std::string& repo, uint64_t pack) {
  const std::string hex = PackIdHex(pack);
  return JoinPath(JoinPath(JoinPath(repo, kPacksDir), hex.substr(0, 2)), hex + ".pack");
}

std::string IndexPath(const std::string& repo, uint64_t id) {
  return JoinPath(JoinPath(repo, kIndexDir), PackIdHex(id) + ".idx");
}

Result<std::string> ReadIndexFile(const std::string& path) {
  struct stat st;
  // Not a FIFO or device, which a read would hang on or never finish.
  if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return Status::Corruption(path + " is not a regular file");
  }
  CBT_ASSIGN_OR_RETURN(UniqueFd fd, OpenRead(path));
  CBT_ASSIGN_OR_RETURN(uint64_t size, FileSize(fd.get(), path));
  const off_t hole = ::lseek(fd.get(), 0, SEEK_HOLE);
  if (hole >= 0 && static_cast<uint64_t>(hole) < size) {
    return Status::Corruption(path + ": index file has a hole (damaged)");
  }
  std::string bytes(size, '\0');
  CBT_RETURN_IF_ERROR(PreadAll(fd.get(), bytes.data(), bytes.size(), 0, path));
  return bytes;
}

std::string EncodeIndex(std::vector<IndexRecord> records) {
  std::sort(records.begin(), records.end(), KeyLess);
  std::string out(kStoreIndexHeaderSize + records.size() * kStoreIndexEntrySize + 8, '\0');
  char* p = out.data();
  std::memcpy(p, kStoreIndexMagic, sizeof kStoreIndexMagic);
  StoreLe32(p + kOffVersion, kStoreIndexVersion);
  StoreLe32(p + kOffEntrySize, kStoreIndexEntrySize);
  StoreLe64(p + kOffCount, records.size());
  p += kStoreIndexHeaderSize;
  for (const auto& r : records) {
    std::memcpy(p, r.key.data(), r.key.size());
    StoreLe64(p + kOffPack, r.ref.pack);
    StoreLe64(p + kOffOffset, r.ref.offset);
    StoreLe32(p + kOffStoredSize, r.ref.stored_size);
    StoreLe64(p + kOffChecksum, r.ref.checksum);
    p += kStoreIndexEntrySize;
  }
  StoreLe64(p, Checksum(out.data(), out.size() - 8));
  return out;
}

Result<std::vector<IndexRecord>> ParseIndex(std::string_view b, const std::string& what) {
  auto bad = [&what](const std::string& why) { return Status::Corruption(what + ": " + why); };
  if (b.size() < kStoreIndexHeaderSize + 8 || std::memcmp(b.data(), kStoreIndexMagic, 8) != 0) {
    return bad("not an index file");
  }
  if (LoadLe64(b.data() + b.size() - 8) != Checksum(b.data(), b.size() - 8)) {
    return bad("index checksum mismatch");
  }
  if (LoadLe32(b.data() + kOffVersion) != kStoreIndexVersion) {
    return Status::NotSupported(what + ": index version " +
                                std::to_string(LoadLe32(b.data() + kOffVersion)) +
                                " is not supported");
  }
  const uint64_t count = LoadLe64(b.data() + kOffCount);
  if (LoadLe32(b.data() + kOffEntrySize) != kStoreIndexEntrySize ||
      count != (b.size() - kStoreIndexHeaderSize - 8) / kStoreIndexEntrySize ||
      (b.size() - kStoreIndexHeaderSize - 8) % kStoreIndexEntrySize != 0) {
    return bad("index length does not match its entry count");
  }
  std::vector<IndexRecord> out;
  out.reserve(count);
  const char* p = b.data() + kStoreIndexHeaderSize;
  for (uint64_t i = 0; i < count; ++i, p += kStoreIndexEntrySize) {
    IndexRecord r;
    std::memcpy(r.key.data(), p, r.key.size());
    r.ref.pack = LoadLe64(p + kOffPack);
    r.ref.offset = LoadLe64(p + kOffOffset);
    r.ref.stored_size = LoadLe32(p + kOffStoredSize);
    r.ref.checksum = LoadLe64(p + kOffChecksum);
    if (r.ref.stored_size == 0 || r.ref.stored_size > kRawBlockSize ||
        r.ref.offset < kPackHeaderSize) {
      return bad("index entry " + std::to_string(i) + " names an impossible block");
    }
    if (!out.empty() && !(out.back().key < r.key)) return bad("index keys out of order");
    out.push_back(r);
  }
  return out;
}

size_t BlockStore::KeyHash::operator()(const ContentKey& k) const {
  // The key is a cryptographic hash: any 8 of its bytes are a uniform hash.
  return static_cast<size_t>(LoadLe64(k.data()));
}

Result<std::unique_ptr<BlockStore>> BlockStore::Open(const std::string& repo,
                                                     const StoreOptions& options) {
  if (options.level < kMinZstdLevel || options.level > kMaxZstdLevel || options.level == 0) {
    return Status::InvalidArgument("zstd level " + std::to_string(options.level) + " is outside " +
                                   std::to_string(kMinZstdLevel) + ".." +
                                   std::to_string(kMaxZstdLevel));
  }
  std::unique_ptr<BlockStore> store(new BlockStore(repo, options));
  const std::string dir = JoinPath(repo, kIndexDir);
  if (PathExists(dir)) {
    if (!IsRealDirectory(dir)) return Status::Corruption(dir + " is not a directory");
    CBT_ASSIGN_OR_RETURN(auto names, ListDir(dir));
    for (const auto& name : names) {
      uint64_t id;
      if (!ParseStoreFileName(name, ".idx", &id)) continue;  // temporaries of an interrupted writer
      const std::string path = JoinPath(dir, name);
      CBT_ASSIGN_OR_RETURN(std::string bytes, ReadIndexFile(path));
      CBT_ASSIGN_OR_RETURN(auto records, ParseIndex(bytes, path));
      store->loaded_.insert(store->loaded_.end(), records.begin(), records.end());
    }
  }
  std::stable_sort(store->loaded_.begin(), store->loaded_.end(), KeyLess);
  // Two index files may name one key (two writers stored the block at
  // once): either copy serves.
  store->loaded_.erase(
      std::unique(store->loaded_.begin(), store->loaded_.end(),
                  [](const IndexRecord& a, const IndexRecord& b) { return a.key == b.key; }),
      store->loaded_.end());
  return store;
}

BlockStore::~BlockStore() {
  {
    std::lock_guard<std::mutex> lock(finish_mu_);
    finish_stop_ = true;
  }
  finish_cv_.notify_all();
  if (finisher_.joinable()) finisher_.join();
}

void BlockStore::FinishBehind(std::unique_ptr<PackWriter> pack) {
  std::unique_lock<std::mutex> lock(finish_mu_);
  finish_cv_.wait(lock, [this] { return to_finish_.size() < kFinishQueue; });
  to_finish_.push_back(std::move(pack));
  if (!finisher_.joinable()) finisher_ = std::thread([this] { FinishLoop(); });
  finish_cv_.notify_all();
}

void BlockStore::FinishLoop() {
  std::unique_lock<std::mutex> lock(finish_mu_);
  for (;;) {
    finish_cv_.wait(lock, [this] { return finish_stop_ || !to_finish_.empty(); });
    // Stopping is for a writer that never flushed: no point will refer to
    // the packs still queued, so they need not be finished.
    if (finish_stop_) {
      to_finish_.clear();
      return;
    }
    std::unique_ptr<PackWriter> pack = std::move(to_finish_.front());
    to_finish_.pop_front();
    finishing_ = true;
    lock.unlock();
    const Status st = pack->Finish();
    pack.reset();
    if (!st.ok()) Break(st);
    lock.lock();
    finishing_ = false;
    finish_cv_.notify_all();
  }
}

Status BlockStore::WaitFinished() {
  {
    std::unique_lock<std::mutex> lock(finish_mu_);
    finish_cv_.wait(lock, [this] { return to_finish_.empty() && !finishing_; });
  }
  return Broken();
}

Status BlockStore::Broken() const {
  std::lock_guard<std::mutex> lock(mu_);
  return broken_;
}

void BlockStore::Break(const Status& st) {
  std::lock_guard<std::mutex> lock(mu_);
  if (broken_.ok()) broken_ = st;
}

bool BlockStore::CheckLoaded(const ContentKey& key, const BlockRef& ref) {
  std::shared_ptr<const CheckedPack> checked;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto c = checked_.find(key);
    if (c != checked_.end()) return c->second;
    auto p = packs_.find(ref.pack);
    if (p != packs_.end()) checked = p->second;
  }
  if (!checked) {
    auto fresh = std::make_shared<CheckedPack>();
    auto opened = options_.packs ? options_.packs->Get(ref.pack)
                                 : Pack::Open(PackPath(repo_, ref.pack), ref.pack);
    if (opened.ok()) {
      fresh->pack = *opened;
      // A pack without a valid table was never finished: nothing in it may
      // be referred to, whatever an index says.
      auto table = fresh->pack->Table();
      if (table.ok()) fresh->table = std::move(*table);
    }
    checked = fresh;
  }
  const PackRecord* rec = FindRecord(checked->table, ref.offset);
  bool good = rec != nullptr && rec->key == key && rec->stored_size == ref.stored_size &&
              rec->checksum == ref.checksum;
  if (good) {
    std::string raw(kRawBlockSize, '\0');
    good = checked->pack->ReadBlock(ref, raw.data()).ok() && KeyOf(raw, options_.key) == key;
  }
  std::lock_guard<std::mutex> lock(mu_);
  packs_.emplace(ref.pack, checked);
  checked_.emplace(key, good);
  return good;
}

bool BlockStore::Find(const ContentKey& key, BlockRef* ref) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto a = added_.find(key);
    if (a != added_.end()) {
      *ref = a->second;
      return true;
    }
  }
  IndexRecord probe;
  probe.key = key;
  // loaded_ is written only in Open: read without the lock.
  auto it = std::lower_bound(loaded_.begin(), loaded_.end(), probe, KeyLess);
  if (it == loaded_.end() || it->key != key) return false;
  if (!CheckLoaded(key, it->ref)) return false;  // the caller stores it again
  *ref = it->ref;
  return true;
}

BlockStore::Slot* BlockStore::NewSlot() {
  std::lock_guard<std::mutex> lock(mu_);
  slots_.push_back(std::unique_ptr<Slot>(new Slot(this)));
  return slots_.back().get();
}

BlockStore::Slot* BlockStore::AcquireSlot() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_slots_.empty()) {
      Slot* s = free_slots_.back();
      free_slots_.pop_back();
      return s;
    }
  }
  return NewSlot();
}

void BlockStore::ReleaseSlot(Slot* slot) {
  std::lock_guard<std::mutex> lock(mu_);
  free_slots_.push_back(slot);
}

Result<std::shared_ptr<const Pack>> PackCache::Get(uint64_t id) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = open_.find(id);
    if (it != open_.end()) return it->second;
  }
  auto opened = Pack::Open(PackPath(repo_, id), id);
  if (!opened.ok() && opened.status().IsNotFound() && remote_) {
    opened = Pack::OpenRemote(remote_, id);
  }
  CBT_ASSIGN_OR_RETURN(auto pack, std::move(opened));
  std::lock_guard<std::mutex> lock(mu_);
  if (open_.size() >= kMaxOpen) {
    for (auto it = open_.begin(); it != open_.end();) {
      it = it->second.use_count() == 1 ? open_.erase(it) : std::next(it);
    }
  }
  return open_.emplace(id, std::move(pack)).first->second;
}

Result<std::unique_ptr<PackWriter>> BlockStore::NewPack() {
  CBT_ASSIGN_OR_RETURN(uint64_t id, RandomId());
  const std::string path = PackPath(repo_, id);
  const std::string dir = path.substr(0, path.find_last_of('/'));
  CBT_RETURN_IF_ERROR(MakeDirs(dir));
  // A repository from elsewhere may hold links: never write through one.
  for (const std::string& d : {JoinPath(repo_, kPacksDir), dir}) {
    if (!IsRealDirectory(d)) return Status::Corruption(d + " is not a directory (a link?)");
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (std::find(pack_dirs_.begin(), pack_dirs_.end(), dir) == pack_dirs_.end()) {
      pack_dirs_.push_back(dir);
    }
    created_packs_.push_back(id);
  }
  CBT_ASSIGN_OR_RETURN(auto writer, PackWriter::Create(path, id));
  if (options_.on_pack_finished) writer->set_staging();
  return writer;
}

Result<BlockRef> BlockStore::Slot::Put(const char* raw, uint64_t* added) {
  if (added != nullptr) *added = 0;
  CBT_RETURN_IF_ERROR(store_->Broken());
  const std::string_view block(raw, kRawBlockSize);
  const ContentKey key = KeyOf(block, store_->options_.key);
  BlockRef ref;
  if (store_->Find(key, &ref)) {
    std::lock_guard<std::mutex> lock(store_->mu_);
    ++store_->stats_.blocks_reused;
    return ref;
  }
  const uint64_t checksum = Checksum(raw, kRawBlockSize);
  const bool compressed =
      store_->options_.compress && Compress(block, store_->options_.level, &frame_);
  if (pack_ && pack_->size() >= store_->options_.pack_target) {
    if (!store_->options_.on_pack_finished) {
      store_->FinishBehind(std::move(pack_));
    } else {
      // A staging copy: not fsynced, so finishing it costs no wait; the
      // callee uploads it from here.
      Status st = pack_->Finish();
      const uint64_t id = pack_->id();
      pack_.reset();
      if (!st.ok()) {
        store_->Break(st);
        return st;
      }
      store_->options_.on_pack_finished(id);
    }
  }
  if (!pack_) {
    auto pack = store_->NewPack();
    if (!pack.ok()) return pack.status();  // nothing written: not broken
    pack_ = std::move(*pack);
  }
  auto appended = pack_->Append(key, compressed ? std::string_view(frame_) : block, checksum);
  if (!appended.ok()) {
    store_->Break(appended.status());
    return appended.status();
  }
  ref = *appended;
  std::lock_guard<std::mutex> lock(store_->mu_);
  auto [it, inserted] = store_->added_.emplace(key, ref);
  if (!inserted) {
    // Another slot stored the same block meanwhile: its copy is the one
    // referenced, and this one is garbage for the next collection.
    ++store_->stats_.blocks_reused;
    return it->second;
  }
  store_->unindexed_.push_back({key, ref});
  if (added != nullptr) *added = ref.stored_size;
  ++store_->stats_.blocks_stored;
  store_->stats_.bytes_stored += ref.stored_size;
  return ref;
}

Status BlockStore::Flush() {
  std::lock_guard<std::mutex> flushing(flush_mu_);
  CBT_RETURN_IF_ERROR(Broken());
  std::vector<Slot*> slots;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& s : slots_) slots.push_back(s.get());
  }
  for (Slot* s : slots) {
    if (!s->pack_) continue;
    Status st = s->pack_->Finish();
    const uint64_t id = s->pack_->id();
    s->pack_.reset();
    if (!st.ok()) {
      Break(st);
      return st;
    }
    if (options_.on_pack_finished) options_.on_pack_finished(id);
  }
  CBT_RETURN_IF_ERROR(WaitFinished());
  std::vector<std::string> dirs;
  std::vector<IndexRecord> records;
  {
    std::lock_guard<std::mutex> lock(mu_);
    dirs = pack_dirs_;
    records.swap(unindexed_);
  }
  Status synced;
  if (!dirs.empty()) {
    dirs.push_back(JoinPath(repo_, kPacksDir));
    if (options_.on_pack_finished) {
      // Staging copies are uploaded, not kept: only their names need to
      // last until the upload, and syncing the filesystem would write out
      // the data the upload reads back from the page cache.
      for (const auto& d : dirs) {
        if (synced.ok()) synced = FsyncDir(d);
      }
    } else {
      // The packs are written out (PackWriter::Finish); one sync of their
      // filesystem makes them and their directory entries durable.  It
      // also writes out whatever else is dirty there: on a repository's
      // filesystem, mostly other writers' packs, each with at most a few
      // megabytes in flight.  An fsync per pack instead, even deferred to
      // here when it has nothing left to write, cost a device cache flush
      // each: 51-63 flushes in a 2 GiB backup against 17-26.
      synced = SyncFilesystemsOf(dirs);
    }
  }
  if (!synced.ok()) {
    Break(synced);
    return synced;
  }
  if (records.empty()) return Status::Ok();
  const std::string dir = JoinPath(repo_, kIndexDir);
  CBT_RETURN_IF_ERROR(MakeDir(dir));
  if (!IsRealDirectory(dir)) {
    Status st = Status::Corruption(dir + " is not a directory (a link?)");
    Break(st);
    return st;
  }
  CBT_ASSIGN_OR_RETURN(uint64_t id, RandomId());
  Status st = WriteFileAtomic(IndexPath(repo_, id), EncodeIndex(records));
  if (st.ok()) st = FsyncDir(repo_);
  if (st.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    written_indexes_.push_back(IndexPath(repo_, id));
  }
  // Whether the index is durable is unknown: nothing may refer to its blocks.
  if (!st.ok()) Break(st);
  return st;
}

StoreStats BlockStore::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::vector<uint64_t> BlockStore::created_packs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return created_packs_;
}

std::vector<std::string> BlockStore::written_indexes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return written_indexes_;
}

size_t BlockStore::known_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return loaded_.size() + added_.size();
}

}  // namespace cbt::repo
