// SPDX-License-Identifier: Apache-2.0
#include "repo/gc.h"

#include "repo/block_store.h"
#include "repo/disk_file.h"
#include "repo/layout.h"
#include "util/file.h"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <set>

namespace cbt::repo {

namespace {

bool EndsWith(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

Result<std::vector<IndexEntry>> ReadEntries(const std::string& path, uint32_t* version) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return Status::FromErrno(errno, path);
  if (!S_ISREG(st.st_mode)) return Status::Corruption(path + " is not a regular file");
  // Open reads the header and index only: a version-1 file holds its
  // blocks too, and may be hundreds of GiB.
  CBT_ASSIGN_OR_RETURN(auto file, DiskFile::Open(path));
  *version = file->version();
  return file->entries();
}

void AddLive(LiveSet* live, const IndexEntry& e, const RefSite& site) {
  live->emplace(std::make_pair(e.pack, e.offset), LiveBlock{e.stored_size, e.checksum, site});
}

// Reads a disk file's entries; a file that cannot be read is an error, or,
// with `unreadable`, listed there and read as no entries.
Result<std::vector<IndexEntry>> Entries(const std::string& path, uint32_t* version,
                                        std::vector<std::string>* unreadable) {
  auto entries = ReadEntries(path, version);
  if (entries.ok() || unreadable == nullptr) return entries;
  unreadable->push_back(entries.status().message());
  *version = 0;
  return std::vector<IndexEntry>{};
}

// Every DATA entry of every disk file in `dir`, except those in `skip`.
Status AddAll(LiveSet* live, const std::string& dir, const std::string& vm, const std::string& name,
              const std::set<std::string>& skip, std::vector<std::string>* unreadable) {
  CBT_ASSIGN_OR_RETURN(auto files, ListDir(dir));
  for (const auto& f : files) {
    if (!EndsWith(f, kDiskFileSuffix) || skip.count(f) > 0) continue;
    uint32_t version = 0;
    CBT_ASSIGN_OR_RETURN(auto entries, Entries(JoinPath(dir, f), &version, unreadable));
    if (version != kPackedDiskFormatVersion) continue;
    for (const auto& e : entries) {
      if (e.kind == EntryKind::kData) AddLive(live, e, {vm, name, f, e.block});
    }
  }
  return Status::Ok();
}

}  // namespace

Result<LiveSet> CollectReferences(const Repository& repo, std::vector<std::string>* unreadable) {
  LiveSet live;
  CBT_ASSIGN_OR_RETURN(auto vms, repo.ListVms());
  for (const auto& vm : vms) {
    const std::string vm_dir = VmDir(repo.path(), vm);
    CBT_ASSIGN_OR_RETURN(auto names, ListDir(vm_dir));
    for (const auto& name : names) {
      const std::string dir = JoinPath(vm_dir, name);
      if (!IsRealDirectory(dir) || ParseTempPointName(name)) continue;
      if (!IsTimestamp(name)) {
        // An interrupted delete's directory, or a stranger: every entry.
        CBT_RETURN_IF_ERROR(AddAll(&live, dir, vm, name, {}, unreadable));
        continue;
      }
      auto m = repo.ReadManifest(vm, name);
      if (!m.ok()) {
        CBT_RETURN_IF_ERROR(AddAll(&live, dir, vm, name, {}, unreadable));
        continue;
      }
      std::set<std::string> named;
      for (const auto& d : m->disks) {
        // The point's own file first, then its layers newest first: an
        // entry a file before it covers is never read (as in prune.cc).
        std::vector<bool> covered(BlockCount(d.virtual_size), false);
        for (const auto& f : d.Files()) {
          named.insert(f);
          uint32_t version = 0;
          CBT_ASSIGN_OR_RETURN(auto entries, Entries(JoinPath(dir, f), &version, unreadable));
          for (const auto& e : entries) {
            if (e.block >= covered.size()) {
              return Status::Corruption(JoinPath(dir, f) + ": block beyond the disk's size");
            }
            if (version == kPackedDiskFormatVersion && e.kind == EntryKind::kData &&
                !covered[e.block]) {
              AddLive(&live, e, {vm, name, f, e.block});
            }
          }
          for (const auto& e : entries) covered[e.block] = true;
        }
      }
      CBT_RETURN_IF_ERROR(AddAll(&live, dir, vm, name, named, unreadable));
    }
  }
  return live;
}

namespace {

// Calls fn(id, path, allocated bytes) for every regular file named like a
// pack under REPO/packs.
Status ForEachPackFile(const Repository& repo,
                       const std::function<void(uint64_t, const std::string&, uint64_t)>& fn) {
  if (repo.remote()) {
    // On an object store: its pack objects, named by their URL.
    CBT_ASSIGN_OR_RETURN(auto objects, repo.remote()->client().List(std::string(kPacksDir) + "/"));
    for (const auto& o : objects) {
      const auto slash = o.key.rfind('/');
      uint64_t id = 0;
      if (!ParseStoreFileName(o.key.substr(slash + 1), ".pack", &id) || o.key != PackKey(id)) {
        continue;
      }
      fn(id, repo.location() + "/" + o.key, o.size);
    }
    return Status::Ok();
  }
  const std::string root = JoinPath(repo.path(), kPacksDir);
  if (!PathExists(root)) return Status::Ok();
  if (!IsRealDirectory(root)) return Status::Corruption(root + " is not a directory");
  CBT_ASSIGN_OR_RETURN(auto subdirs, ListDir(root));
  for (const auto& sub : subdirs) {
    const std::string dir = JoinPath(root, sub);
    if (sub.size() != 2 || !IsRealDirectory(dir)) continue;
    CBT_ASSIGN_OR_RETURN(auto names, ListDir(dir));
    for (const auto& n : names) {
      uint64_t id = 0;
      if (!ParseStoreFileName(n, ".pack", &id) || PackIdHex(id).substr(0, 2) != sub) continue;
      const std::string path = JoinPath(dir, n);
      struct stat st;
      if (::lstat(path.c_str(), &st) != 0) return Status::FromErrno(errno, path);
      if (!S_ISREG(st.st_mode)) continue;  // no pack: never opened, never removed
      fn(id, path, static_cast<uint64_t>(st.st_blocks) * 512);
    }
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<PackInfo>> ListPacks(const Repository& repo) {
  std::vector<PackInfo> out;
  CBT_RETURN_IF_ERROR(ForEachPackFile(repo, [&out, &repo](uint64_t id, const std::string& path,
                                                          uint64_t allocated) {
    PackInfo p;
    p.id = id;
    p.path = path;
    p.allocated = allocated;
    auto pack = repo.remote() ? Pack::OpenRemote(repo.remote(), p.id) : Pack::Open(p.path, p.id);
    if (pack.ok()) {
      auto table = (*pack)->Table();
      if (table.ok()) {
        p.finished = true;
        p.table = std::move(*table);
      } else {
        p.error = table.status().message();
      }
    } else {
      p.error = pack.status().message();
    }
    out.push_back(std::move(p));
  }));
  std::sort(out.begin(), out.end(),
            [](const PackInfo& a, const PackInfo& b) { return a.id < b.id; });
  return out;
}

Result<bool> IsReleased(const PackInfo& pack, const PackRecord& rec, UniqueFd* fd) {
  // Nothing is ever punched out of an object.
  if (objstore::IsS3Url(pack.path)) return false;
  if (fd->get() < 0) {
    CBT_ASSIGN_OR_RETURN(*fd, OpenRead(pack.path));
  }
  std::string bytes(rec.stored_size, '\0');
  CBT_RETURN_IF_ERROR(PreadAll(fd->get(), bytes.data(), bytes.size(), rec.offset, pack.path));
  return IsAllZero(bytes.data(), bytes.size());
}

Result<RepoUsage> MeasureUsage(const Repository& repo) {
  RepoUsage u;
  auto allocated = [](const std::string& path) -> uint64_t {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    return static_cast<uint64_t>(st.st_blocks) * 512;
  };
  CBT_RETURN_IF_ERROR(ForEachPackFile(
      repo, [&u](uint64_t, const std::string&, uint64_t bytes) { u.packs += bytes; }));
  const std::string index_dir = JoinPath(repo.path(), kIndexDir);
  if (repo.remote()) {
    CBT_ASSIGN_OR_RETURN(auto objects, repo.remote()->client().List(std::string(kIndexDir) + "/"));
    for (const auto& o : objects) u.indexes += o.size;
  } else if (IsRealDirectory(index_dir)) {
    CBT_ASSIGN_OR_RETURN(auto names, ListDir(index_dir));
    for (const auto& n : names) u.indexes += allocated(JoinPath(index_dir, n));
  }
  CBT_ASSIGN_OR_RETURN(auto vms, repo.ListVms());
  for (const auto& vm : vms) {
    CBT_ASSIGN_OR_RETURN(auto points, repo.ListPoints(vm));
    for (const auto& p : points) {
      const std::string dir = repo.PointPath(vm, p);
      CBT_ASSIGN_OR_RETURN(auto names, ListDir(dir));
      for (const auto& n : names) {
        if (EndsWith(n, kDiskFileSuffix)) u.disk_files += allocated(JoinPath(dir, n));
      }
    }
  }
  return u;
}

namespace {

// The index records of the live blocks of finished packs (sorted by key,
// one per key), counting them in `stats`; `*live_packs` gets the packs
// holding a live block, `*dead_found` whether any stored block is not live.
std::vector<IndexRecord> LiveIndex(const LiveSet& live, const std::vector<PackInfo>& packs,
                                   std::set<uint64_t>* live_packs_out, GcStats* stats,
                                   bool* dead_found) {
  std::set<uint64_t>& live_packs = *live_packs_out;
  for (const auto& [where, b] : live) live_packs.insert(where.first);
  std::vector<IndexRecord> records;
  for (const auto& p : packs) {
    if (!p.finished) {
      *dead_found = *dead_found || live_packs.count(p.id) == 0;
      continue;
    }
    for (const auto& r : p.table) {
      auto it = live.find({p.id, r.offset});
      if (it != live.end() && it->second.stored_size == r.stored_size &&
          it->second.checksum == r.checksum) {
        records.push_back({r.key, BlockRef{p.id, r.offset, r.stored_size, r.checksum}});
        ++stats->live_blocks;
        stats->live_bytes += r.stored_size;
      } else {
        *dead_found = true;
      }
    }
  }
  std::stable_sort(records.begin(), records.end(),
                   [](const IndexRecord& a, const IndexRecord& b) { return a.key < b.key; });
  records.erase(
      std::unique(records.begin(), records.end(),
                  [](const IndexRecord& a, const IndexRecord& b) { return a.key == b.key; }),
      records.end());
  return records;
}

std::string ThisHost() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

// Garbage collection of a repository on an object store (docs/FORMAT.md
// 19.2, rule 6): under locks/gc, with no writer registered on any host, the
// working copy brought in step, a new index object of the live blocks, the
// old index objects removed, then every pack without a live block (unless
// Object Lock still retains it).  Nothing is punched: a pack with one live
// block stays whole.
Result<GcStats> CollectGarbageRemote(const Repository& repo, const GcOptions& options) {
  GcStats stats;
  const Remote& remote = *repo.remote();
  nlohmann::json holder = {{"host", ThisHost()},
                           {"pid", static_cast<long>(::getpid())},
                           {"command", "gc"},
                           {"started", FormatTimestamp(std::time(nullptr))}};
  std::string busy;
  CBT_ASSIGN_OR_RETURN(auto lock, remote.LockForCollection(holder.dump(), &busy));
  if (!lock) {
    stats.skipped = true;
    stats.skipped_because = busy;
    return stats;
  }
  auto step = [&options](const char* name) {
    return !options.after_step || options.after_step(name);
  };
  CBT_RETURN_IF_ERROR(remote.SyncDown(repo.path(), "", false));
  CBT_ASSIGN_OR_RETURN(LiveSet live, CollectReferences(repo));
  CBT_ASSIGN_OR_RETURN(auto packs, ListPacks(repo));
  std::set<uint64_t> live_packs;
  bool dead_found = false;
  std::vector<IndexRecord> records = LiveIndex(live, packs, &live_packs, &stats, &dead_found);

  CBT_ASSIGN_OR_RETURN(auto old_indexes, remote.client().List(std::string(kIndexDir) + "/"));
  if (dead_found || old_indexes.size() > 1) {
    CBT_RETURN_IF_ERROR(lock->Check());
    if (!records.empty()) {
      uint64_t id = 0;
      CBT_RETURN_IF_ERROR(RandomBytes(&id, sizeof id));
      const std::string data = EncodeIndex(records);
      CBT_RETURN_IF_ERROR(remote.client()
                              .Put(std::string(kIndexDir) + "/" + PackIdHex(id) + ".idx", data)
                              .status());
      CBT_RETURN_IF_ERROR(MakeDir(JoinPath(repo.path(), kIndexDir)));
      CBT_RETURN_IF_ERROR(WriteFileAtomic(IndexPath(repo.path(), id), data));
    }
    if (!step("index-written")) return stats;
    for (const auto& o : old_indexes) {
      CBT_RETURN_IF_ERROR(remote.client().Delete(o.key));
      ::unlink(JoinPath(repo.path(), o.key).c_str());
      ++stats.indexes_replaced;
    }
    if (!step("indexes-removed")) return stats;
  }
  for (const auto& p : packs) {
    if (live_packs.count(p.id) != 0) continue;
    CBT_RETURN_IF_ERROR(lock->Check());
    const std::string key = PackKey(p.id);
    if (remote.retention_days() > 0) {
      CBT_ASSIGN_OR_RETURN(auto head, remote.client().Head(key));
      if (head.has_value() && !head->retain_until.empty()) {
        auto until = objstore::ParseIsoTime(head->retain_until);
        if (until.has_value() && *until > head->server_time) {
          ++stats.packs_retained;
          continue;
        }
      }
    }
    CBT_RETURN_IF_ERROR(remote.client().Delete(key));
    stats.blocks_released += p.table.size();
    ++stats.packs_removed;
    stats.bytes_freed += p.allocated;
  }
  step("packs-released");
  return stats;
}

}  // namespace

Result<GcStats> CollectGarbage(const Repository& repo, const GcOptions& options) {
  GcStats stats;
  if (repo.remote()) return CollectGarbageRemote(repo, options);
  auto lock = StoreLock::Exclusive(repo);
  if (!lock.ok()) {
    if (lock.status().code() != Status::Code::kBusy) return lock.status();
    stats.skipped = true;
    return stats;
  }
  auto step = [&options](const char* name) {
    return !options.after_step || options.after_step(name);
  };
  const std::string index_dir = JoinPath(repo.path(), kIndexDir);
  if (!PathExists(JoinPath(repo.path(), kPacksDir)) && !PathExists(index_dir)) return stats;

  CBT_ASSIGN_OR_RETURN(LiveSet live, CollectReferences(repo));
  CBT_ASSIGN_OR_RETURN(auto packs, ListPacks(repo));

  // Which packs hold live blocks, and the index of those blocks, from the
  // packs' own tables (they carry the content keys).
  std::set<uint64_t> live_packs;
  bool dead_found = false;
  std::vector<IndexRecord> records = LiveIndex(live, packs, &live_packs, &stats, &dead_found);

  // (1) and (2): the new index, then the old ones go.
  std::vector<std::string> old_indexes, strays;
  if (PathExists(index_dir)) {
    if (!IsRealDirectory(index_dir)) return Status::Corruption(index_dir + " is not a directory");
    CBT_ASSIGN_OR_RETURN(auto names, ListDir(index_dir));
    for (const auto& n : names) {
      uint64_t id;
      (ParseStoreFileName(n, ".idx", &id) ? old_indexes : strays).push_back(JoinPath(index_dir, n));
    }
  }
  if (dead_found || old_indexes.size() > 1) {
    if (!records.empty()) {
      CBT_RETURN_IF_ERROR(MakeDir(index_dir));
      uint64_t id = 0;
      CBT_RETURN_IF_ERROR(RandomBytes(&id, sizeof id));
      CBT_RETURN_IF_ERROR(WriteFileAtomic(IndexPath(repo.path(), id), EncodeIndex(records)));
      CBT_RETURN_IF_ERROR(FsyncDir(index_dir));
    }
    if (!step("index-written")) return stats;
    for (const auto& path : old_indexes) {
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Status::FromErrno(errno, path);
      ++stats.indexes_replaced;
    }
    if (!old_indexes.empty()) CBT_RETURN_IF_ERROR(FsyncDir(index_dir));
    if (!step("indexes-removed")) return stats;
  }

  // (3): release the dead blocks.
  std::set<std::string> touched_dirs;
  for (const auto& p : packs) {
    const std::string dir = p.path.substr(0, p.path.find_last_of('/'));
    UniqueFd reader;  // for IsReleased
    if (live_packs.count(p.id) == 0) {
      if (p.finished) {
        for (const auto& r : p.table) {
          CBT_ASSIGN_OR_RETURN(bool released, IsReleased(p, r, &reader));
          if (!released) ++stats.blocks_released;
        }
      }
      if (::unlink(p.path.c_str()) != 0 && errno != ENOENT) return Status::FromErrno(errno, p.path);
      ++stats.packs_removed;
      stats.bytes_freed += p.allocated;
      touched_dirs.insert(dir);
      continue;
    }
    if (!p.finished) continue;  // verify reports what refers to it
    std::vector<const PackRecord*> dead;
    for (const auto& r : p.table) {
      // Referred to, even with another size or checksum (damage verify
      // reports): kept as evidence, never punched.
      if (live.count({p.id, r.offset}) > 0) continue;
      CBT_ASSIGN_OR_RETURN(bool released, IsReleased(p, r, &reader));
      if (!released) dead.push_back(&r);
    }
    if (dead.empty()) continue;
    int fd = ::open(p.path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return Status::FromErrno(errno, p.path);
    UniqueFd owner(fd);
    for (const PackRecord* r : dead) {
      if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(r->offset),
                      static_cast<off_t>(r->stored_size)) != 0) {
        // Without hole punching the space stays taken until the pack has no
        // live block left: correct, only larger.
        if (errno == EOPNOTSUPP) break;
        return Status::FromErrno(errno, p.path);
      }
      ++stats.blocks_released;
    }
    CBT_RETURN_IF_ERROR(Fsync(fd, p.path));
    struct stat st;
    if (::fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_blocks) * 512 < p.allocated) {
      stats.bytes_freed += p.allocated - static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  for (const auto& d : touched_dirs) CBT_RETURN_IF_ERROR(FsyncDir(d));
  if (!step("packs-released")) return stats;
  // Temporaries of index writers that died.
  for (const auto& path : strays) {
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) ::unlink(path.c_str());
  }
  return stats;
}

}  // namespace cbt::repo
