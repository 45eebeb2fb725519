// SPDX-License-Identifier: Apache-2.0
//
// The shared block store of a format-3 repository: every 64 KiB block is
// stored once, compressed, in a pack (repo/pack.h), and found again by its
// content key through the index files REPO/index/<id>.idx, so a block that
// any disk, point or VM of the repository already stored is referenced
// instead of stored again.
//
// Writing: a writer opens the store (loading every index file), takes one
// Slot per thread that stores blocks, and calls Slot::Put for each block;
// Flush finishes every pack and writes one index file of the blocks this
// writer stored.  A pack that fills up during the writes is finished (its
// trailer written and the file written out to the device) by a thread of
// the store's own, so that no Put waits for the device.  Flush waits for
// those too, then makes every pack durable with one sync of their
// filesystem: a cache flush per pack, amid a backup's reads, made the
// device take twice as long over those reads (median of 12 paired full
// backups).  Only after Flush may anything refer to those blocks (a disk
// file, then the point's commit).  A writer that dies before Flush leaves
// packs no index names; one that dies after it leaves indexed blocks no
// point refers to, which later writers may reuse: collection therefore
// decides liveness from the disk files' references, and keeps an index's
// blocks until it rewrites the index itself.
//
// An index may come from elsewhere, or a pack may be damaged: the first
// time this writer would reuse a block an index names, it reads the block
// and checks its content key; a block that fails is stored again.  Any
// failed write, writeback or sync makes the store broken: every later Put
// and Flush returns that error, so nothing is ever referred to that may be
// lost.
//
// Two writers at once (backups of different VMs) each see the index as it
// was when they opened it: a block both store is stored twice, which costs
// space, never correctness.
//
// Thread-safety: Put on different Slots may run concurrently; Slot itself
// belongs to one thread; NewSlot and Flush may be called from any thread
// (Flush calls are serialised), but Flush must not run concurrently with Put.
#ifndef CBT_REPO_BLOCK_STORE_H_
#define CBT_REPO_BLOCK_STORE_H_

#include "repo/pack.h"
#include "util/block_codec.h"
#include "util/status.h"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace cbt::repo {

inline constexpr char kPacksDir[] = "packs";
inline constexpr char kIndexDir[] = "index";
inline constexpr char kStoreIndexMagic[8] = {'C', 'B', 'T', 'I', 'N', 'D', 'X', '\0'};
inline constexpr uint32_t kStoreIndexVersion = 1;
inline constexpr uint32_t kStoreIndexHeaderSize =
    32;  // then the entries, then an XXH3-64 of all before it
inline constexpr uint32_t kStoreIndexEntrySize = 64;

// One index entry: where the block with `key` is.
struct IndexRecord {
  ContentKey key;
  BlockRef ref;
};

// Parses "<16 lower-case hex digits><suffix>" (a pack or index file name)
// into its id.
bool ParseStoreFileName(const std::string& name, const std::string& suffix, uint64_t* id);
// Paths of the store's files.
std::string PackPath(const std::string& repo, uint64_t pack);
std::string IndexPath(const std::string& repo, uint64_t id);

// Reads index file `path`: Corruption unless it is a regular file with no
// hole (a sparse file would claim any size without taking it).
Result<std::string> ReadIndexFile(const std::string& path);
// The bytes of an index file holding `records` (sorted here by key).
std::string EncodeIndex(std::vector<IndexRecord> records);
// Parses an index file; Corruption naming `what` unless the magic, length
// and checksum hold and keys are in strictly increasing order;
// NotSupported for an unknown version.
Result<std::vector<IndexRecord>> ParseIndex(std::string_view bytes, const std::string& what);

class PackCache;

struct StoreOptions {
  bool compress = true;                 // false: blocks are stored raw
  int level = 3;                        // zstd level of new blocks
  uint64_t pack_target = 128ull << 20;  // a pack is finished once this large
  // Where packs named by index files are opened for the reuse check: the
  // repository's cache (which also reads packs on an object store); null:
  // the files of `repo`.
  std::shared_ptr<const PackCache> packs;
  // Called with each pack's id once it is finished (from the thread that
  // finished it); with it, packs are staging copies (PackWriter::set_staging)
  // that the callee uploads.  Null: packs are the repository's own files.
  std::function<void(uint64_t)> on_pack_finished;
  KeyAlgorithm key = KeyAlgorithm::kBlake3;  // the repository's content keys
};

struct StoreStats {
  uint64_t blocks_stored = 0;  // new blocks written to packs
  uint64_t bytes_stored = 0;   // their stored (compressed) bytes
  uint64_t blocks_reused = 0;  // blocks found already stored
};

class BlockStore {
 public:
  // Opens the store of the repository at `repo` for writing: loads every
  // index file (Corruption naming one that is damaged or not a regular
  // file).
  static Result<std::unique_ptr<BlockStore>> Open(const std::string& repo,
                                                  const StoreOptions& options);
  ~BlockStore();

  class Slot {
   public:
    // Stores the raw 64 KiB block at `raw` unless a block with the same
    // content is known; returns where it is.  `*added` (if given) is set to
    // the bytes stored (0 when the block was known).
    Result<BlockRef> Put(const char* raw, uint64_t* added = nullptr);

   private:
    friend class BlockStore;
    explicit Slot(BlockStore* store) : store_(store) {}
    BlockStore* store_;
    std::unique_ptr<PackWriter> pack_;
    std::string frame_;
  };

  // Where a block with content `key` is stored, if it is (stored by this
  // writer, or named by an index and checked as Put would), without the
  // block's bytes: what a copy between repositories asks before reading.
  bool Lookup(const ContentKey& key, BlockRef* ref) { return Find(key, ref); }

  // A slot for one thread; valid until the store is destroyed.
  Slot* NewSlot();
  // A slot no one else holds until ReleaseSlot: for threads of a pool that
  // store blocks now and then (a slot keeps its open pack between uses).
  Slot* AcquireSlot();
  void ReleaseSlot(Slot* slot);

  // Finishes every slot's pack, makes the packs and their directories
  // durable (a staging copy's directories only), and writes an index file
  // of the blocks stored since the last Flush.
  Status Flush();

  StoreStats stats() const;
  // Ids of the packs this writer created, and the index files its Flushes
  // wrote (paths), in order.
  std::vector<uint64_t> created_packs() const;
  std::vector<std::string> written_indexes() const;
  // Blocks known (loaded and stored).
  size_t known_blocks() const;

 private:
  BlockStore(std::string repo, StoreOptions options) : repo_(std::move(repo)), options_(options) {}
  // The known location of `key`, if any: stored by this writer, or named
  // by an index and checked (CheckLoaded) the first time.
  bool Find(const ContentKey& key, BlockRef* ref);
  // True if the block at `ref` is in its pack's table (so the pack was
  // finished), readable, and has content `key`.
  bool CheckLoaded(const ContentKey& key, const BlockRef& ref);
  Status Broken() const;
  void Break(const Status& st);
  Result<std::unique_ptr<PackWriter>> NewPack();
  // Hands a full pack to the finishing thread (waiting while kFinishQueue
  // packs are queued, which bounds the open files).  A pack that fails to
  // finish breaks the store.
  void FinishBehind(std::unique_ptr<PackWriter> pack);
  void FinishLoop();
  // Waits until every pack handed over is finished; returns Broken().
  Status WaitFinished();

  struct KeyHash {
    size_t operator()(const ContentKey& k) const;
  };

  std::string repo_;
  StoreOptions options_;
  std::vector<IndexRecord> loaded_;  // sorted by key, read-only after Open
  mutable std::mutex mu_;
  std::unordered_map<ContentKey, BlockRef, KeyHash> added_;  // stored by this writer
  std::vector<IndexRecord> unindexed_;                       // stored since the last Flush
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<Slot*> free_slots_;
  std::vector<std::string> pack_dirs_;  // to make durable at Flush
  std::vector<uint64_t> created_packs_;
  std::vector<std::string> written_indexes_;
  StoreStats stats_;
  Status broken_;  // the first failure that may have lost data
  // Keys of loaded_ checked by reading their block: good or bad.
  std::unordered_map<ContentKey, bool, KeyHash> checked_;
  // Packs opened to check, with their tables (empty if unfinished).
  struct CheckedPack {
    std::shared_ptr<const Pack> pack;
    std::vector<PackRecord> table;
  };
  std::unordered_map<uint64_t, std::shared_ptr<const CheckedPack>> packs_;
  std::mutex flush_mu_;
  static constexpr size_t kFinishQueue = 8;
  std::mutex finish_mu_;  // never held with mu_
  std::condition_variable finish_cv_;
  std::deque<std::unique_ptr<PackWriter>> to_finish_;  // under finish_mu_
  bool finishing_ = false;                             // a Finish runs (under finish_mu_)
  bool finish_stop_ = false;
  std::thread finisher_;
};

// The finished packs of one repository, opened for reading on first use
// and kept open (at most kMaxOpen at a time; packs no read is using are
// closed first).  Thread-safe.
class PackCache {
 public:
  // The packs of the repository at `repo`; with `remote`, a pack that is
  // not a file there is read from the object store.
  explicit PackCache(std::string repo, std::shared_ptr<const Remote> remote = nullptr)
      : repo_(std::move(repo)), remote_(std::move(remote)) {}
  // Pack `id`; NotFound if it does not exist (released by a collection, or
  // lost), Corruption if its header does not name it.
  Result<std::shared_ptr<const Pack>> Get(uint64_t id) const;
  const std::string& repo() const { return repo_; }

 private:
  static constexpr size_t kMaxOpen = 1024;
  std::string repo_;
  std::shared_ptr<const Remote> remote_;
  mutable std::mutex mu_;
  mutable std::unordered_map<uint64_t, std::shared_ptr<const Pack>> open_;
};

}  // namespace cbt::repo

#endif  // CBT_REPO_BLOCK_STORE_H_
