// SPDX-License-Identifier: Apache-2.0
#include "local/copy_points.h"

#include "repo/block_store.h"
#include "repo/disk_file.h"
#include "repo/layout.h"
#include "repo/pack.h"
#include "util/file.h"

#include <map>
#include <memory>
#include <set>

namespace cbt::local {

namespace {

// The content keys of the source's stored blocks, one pack table at a time.
class SourceKeys {
 public:
  explicit SourceKeys(const repo::Repository& repo) : repo_(repo) {}
  // The key of the block entry `e` names; nullptr if its pack or record
  // cannot be found (the block is then read and keyed by the store).
  const ContentKey* Of(const repo::IndexEntry& e) {
    auto it = tables_.find(e.pack);
    if (it == tables_.end()) {
      std::vector<repo::PackRecord> table;
      auto pack = repo_.packs()->Get(e.pack);
      if (pack.ok()) {
        auto t = (*pack)->Table();
        if (t.ok()) table = std::move(*t);
      }
      it = tables_.emplace(e.pack, std::move(table)).first;
    }
    const repo::PackRecord* rec = repo::FindRecord(it->second, e.offset);
    if (rec == nullptr || rec->stored_size != e.stored_size || rec->checksum != e.checksum) {
      return nullptr;
    }
    return &rec->key;
  }

 private:
  const repo::Repository& repo_;
  std::map<uint64_t, std::vector<repo::PackRecord>> tables_;
};

}  // namespace

Result<CopyStats> CopyVm(const repo::Repository& from, const repo::Repository& to,
                         const std::string& vm,
                         const std::function<void(const std::string&)>& on_point) {
  CopyStats stats;
  CBT_ASSIGN_OR_RETURN(auto source_points, from.ListPoints(vm));
  if (source_points.empty()) return stats;
  CBT_ASSIGN_OR_RETURN(repo::VmLock lock, repo::VmLock::Acquire(to, vm, "copy"));
  // Listed under the lock: what the target has now.
  std::set<std::string> present;
  if (IsDirectory(JoinPath(to.path(), vm))) {
    CBT_ASSIGN_OR_RETURN(auto points, to.ListPoints(vm));
    present.insert(points.begin(), points.end());
  }
  SourceKeys keys(from);
  std::unique_ptr<char[]> buf(new char[repo::kBlockSize]);
  for (const auto& p : source_points) {
    if (present.count(p) != 0) {
      stats.present.push_back(p);
      continue;
    }
    CBT_ASSIGN_OR_RETURN(repo::Manifest m, from.ReadManifest(vm, p));
    CBT_ASSIGN_OR_RETURN(auto writer, repo::PointWriter::Begin(to, lock, vm, p));
    repo::BlockStore* store = writer->store();
    repo::BlockStore::Slot* slot = store->AcquireSlot();
    for (auto& d : m.disks) {
      uint64_t added = 0;
      for (const auto& name : d.Files()) {
        const std::string path = JoinPath(from.PointPath(vm, p), name);
        CBT_ASSIGN_OR_RETURN(auto src, from.OpenDiskFile(path));
        CBT_ASSIGN_OR_RETURN(auto out, writer->CreateFile(name, src->kind(), src->virtual_size()));
        for (const auto& e : src->entries()) {
          if (e.kind == repo::EntryKind::kZero) {
            CBT_RETURN_IF_ERROR(out->AddZero(e.block));
            continue;
          }
          if (e.kind != repo::EntryKind::kData) continue;
          repo::BlockRef ref;
          const ContentKey* key = src->packed() ? keys.Of(e) : nullptr;
          if (key != nullptr && store->Lookup(*key, &ref)) {
            ++stats.blocks_referred;
            CBT_RETURN_IF_ERROR(out->AddRef(e.block, ref, 0));
            continue;
          }
          Status read = src->ReadBlock(e, buf.get());
          if (!read.ok()) return read.WithContext("copying " + path);
          uint64_t stored = 0;
          CBT_ASSIGN_OR_RETURN(ref, slot->Put(buf.get(), &stored));
          ++stats.blocks_sent;
          CBT_RETURN_IF_ERROR(out->AddRef(e.block, ref, stored));
        }
        CBT_RETURN_IF_ERROR(out->Finish());
        if (name == d.file) added = out->added_bytes();
      }
      d.stored_bytes = added;
    }
    store->ReleaseSlot(slot);
    CBT_ASSIGN_OR_RETURN(std::string metadata,
                         ReadFile(JoinPath(from.PointPath(vm, p), repo::kMetadataFile)));
    CBT_RETURN_IF_ERROR(writer->WriteMetadata(metadata));
    stats.bytes_stored += store->stats().bytes_stored;
    CBT_RETURN_IF_ERROR(writer->Commit(m));
    stats.copied.push_back(p);
    if (on_point) on_point(p);
  }
  return stats;
}

}  // namespace cbt::local
