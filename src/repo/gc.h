// SPDX-License-Identifier: Apache-2.0
//
// The references from disk files to the block store, and the collection
// that releases stored blocks no point can read (docs/FORMAT.md, "Garbage
// collection").
//
// Liveness is decided from the disk files alone, never from the index
// files: a block is live if a version-2 disk file of a committed point
// names it in an entry that the point can read (an entry of a layer that a
// newer file of the same point covers is not readable), or if any disk
// file left by an interrupted delete (.del-*) names it.  Temporaries of
// writers that died (.tmp-*) count for nothing: the store lock guarantees
// no writer is alive while a collection runs.
//
// Collection order, each step durable before the next: (1) one new index
// file of the live blocks, built from the packs' own tables; (2) the old
// index files removed; (3) packs without a live block removed and dead
// blocks of the others punched out.  A dead block is therefore never
// punched while an index still names it, and a crash anywhere leaves a
// valid store with at most the garbage the next collection releases.
//
// Thread-safety: functions; CollectGarbage takes the store lock itself.
#ifndef CBT_REPO_GC_H_
#define CBT_REPO_GC_H_

#include "repo/repository.h"
#include "util/file.h"
#include "util/status.h"

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace cbt::repo {

// Where a reference was found, for messages.
struct RefSite {
  std::string vm;
  std::string point;  // a point, or the name of a .del- directory
  std::string file;   // disk file name
  uint64_t block = 0;
};

struct LiveBlock {
  uint32_t stored_size = 0;
  uint64_t checksum = 0;
  RefSite site;  // the first reference found
};

// (pack, offset) -> the block referred to there.
using LiveSet = std::map<std::pair<uint64_t, uint64_t>, LiveBlock>;

// Every readable reference of the repository (see above).  Corruption
// naming the file if a disk file of a committed point or of an interrupted
// delete cannot be parsed: a collection must never decide from part of
// the references.  With `unreadable`, such files are listed there instead
// and skipped (for verify, which reports them itself).  A point whose
// manifest cannot be read counts every entry of every disk file in it.
Result<LiveSet> CollectReferences(const Repository& repo,
                                  std::vector<std::string>* unreadable = nullptr);

// A pack of the store as found on disk.
struct PackInfo {
  uint64_t id = 0;
  std::string path;
  bool finished = false;          // its table and trailer are valid
  std::vector<PackRecord> table;  // finished packs only
  uint64_t allocated = 0;         // bytes the filesystem holds for it
  std::string error;              // why it is not finished (empty if it is)
};

// Every file named like a pack under REPO/packs, sorted by id; regular
// files only (anything else is reported as an unfinished pack).
Result<std::vector<PackInfo>> ListPacks(const Repository& repo);

// True if the stored bytes at `rec` read as zeros: a block a collection
// punched out (a stored block is a zstd frame, never all zeros, or a raw
// block, never all zeros since zero blocks are not stored).  `*fd` is the
// pack's descriptor, opened on first use, so that a caller going through
// a pack's records opens it once.
Result<bool> IsReleased(const PackInfo& pack, const PackRecord& rec, UniqueFd* fd);

// Bytes the filesystem holds for the repository's data (st_blocks).
struct RepoUsage {
  uint64_t packs = 0;
  uint64_t indexes = 0;
  uint64_t disk_files = 0;  // .cbd files of committed points
  uint64_t total() const { return packs + indexes + disk_files; }
};
Result<RepoUsage> MeasureUsage(const Repository& repo);

struct GcOptions {
  // Called after each durable step with its name; returning false stops
  // the collection there as a crash would (tests).
  std::function<bool(const std::string& step)> after_step;
};

struct GcStats {
  bool skipped = false;          // another command held the store lock
  std::string skipped_because;   // on an object store: who holds it
  uint64_t live_blocks = 0;      // stored blocks some point reads
  uint64_t live_bytes = 0;       // their stored bytes
  uint64_t blocks_released = 0;  // dead blocks punched out or removed now
  uint64_t packs_removed = 0;
  uint64_t indexes_replaced = 0;  // old index files removed
  uint64_t bytes_freed = 0;       // allocated bytes the filesystem got back
  uint64_t packs_retained = 0;    // dead packs S3 Object Lock still retains
};

// Collects the garbage of a format-3 repository (a version-1 repository
// has no store: nothing to do).  Skipped (stats.skipped, no error) if any
// other command holds the store lock.
Result<GcStats> CollectGarbage(const Repository& repo, const GcOptions& options = {});

}  // namespace cbt::repo

#endif  // CBT_REPO_GC_H_
