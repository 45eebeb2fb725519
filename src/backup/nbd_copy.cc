// SPDX-License-Identifier: Apache-2.0
//
// The NBD endpoints of a snapshot disk and the sink that turns the pieces
// NBD delivers into data runs and zero blocks of a disk file.
#include "backup/nbd_copy.h"

#include "backup/connection_budget.h"

#include <atomic>
#include <cstring>
#include <mutex>
#include <optional>

namespace cbt::backup {

using xapi::Value;

Status CopyOverNbd(xapi::Session& s, const Options& options, const std::string& snapshot_ref,
                   const std::string& vdi_uuid, uint64_t virtual_size,
                   const std::vector<nbd::Extent>& extents, bool overlay, repo::DiskFileWriter* w,
                   uint64_t* bytes_read) {
  CBT_ASSIGN_OR_RETURN(Value infos, s.Call("VDI.get_nbd_info", {Value(snapshot_ref)}));
  if (infos.items().empty()) {
    return Status::NotSupported(
        "the server offers no NBD access: no network has the 'nbd' purpose (on the pool master "
        "run: xe network-param-add param-name=purpose param-key=nbd uuid=<network>)");
  }
  std::vector<nbd::Endpoint> eps;
  for (const auto& info : infos.items()) {
    nbd::Endpoint ep;
    ep.address = info.GetString("address");
    auto port = info.GetInt("port");
    ep.port = port.ok() ? static_cast<int>(*port) : 10809;
    ep.exportname = info.GetString("exportname");
    ep.cert = info.GetString("cert");
    ep.subject = info.GetString("subject");
    eps.push_back(std::move(ep));
  }
  nbd::ReaderOptions ro;
  ro.connections = options.connections;
  ro.require_tls = options.require_tls;
  ro.timeout_seconds = options.nbd_timeout;
  // The reader spreads its connections round-robin over the endpoints
  // (every host that sees the SR) and skips one it cannot reach for the
  // next, so any one host may end up with all of them.  The lease is
  // therefore charged in full to every host of the list: never more than
  // the budget reaches any host, at the price of holding back some
  // connections on hosts a read turns out not to use.  A reconnect after a
  // failed request closes its connection first, so the count holds.
  std::optional<BudgetLease> lease;  // released after the reader closes
  if (options.budget != nullptr) {
    std::vector<std::string> hosts;
    for (const auto& ep : eps) hosts.push_back(nbd::HostOfAddress(ep.address));
    CBT_ASSIGN_OR_RETURN(int granted, options.budget->Acquire(hosts, ro.connections));
    ro.connections = granted;
    lease.emplace(options.budget, std::move(hosts), granted);
  }
  CBT_ASSIGN_OR_RETURN(auto reader, nbd::Reader::Connect(eps, ro));
  if (reader->size() < virtual_size) {
    return Status::Corruption("NBD export of " + vdi_uuid + " is " +
                              std::to_string(reader->size()) + " bytes, the VDI " +
                              std::to_string(virtual_size));
  }
  std::mutex mu;
  uint64_t total = 0;
  for (const auto& e : extents) total += e.length;
  std::atomic<uint64_t> done{0};
  Status st = reader->Read(extents, [&](uint64_t off, const char* data, size_t len) -> Status {
    // Pieces start on block boundaries; only the disk's last block is
    // short.  Zero detection and checksums run here, on the reader threads;
    // only the writes are serialised, one per run of non-zero blocks.
    const uint64_t first = off / repo::kBlockSize;
    const uint64_t nblocks = (len + repo::kBlockSize - 1) / repo::kBlockSize;
    const uint64_t whole = len / repo::kBlockSize;  // blocks without padding
    std::vector<uint64_t> sums(nblocks);
    std::vector<char> zero(nblocks);
    std::vector<char> pad;
    for (uint64_t i = 0; i < nblocks; ++i) {
      const char* blk = data + i * repo::kBlockSize;
      if (i >= whole) {  // the short last block, padded with zeros
        pad.assign(repo::kBlockSize, 0);
        std::memcpy(pad.data(), blk, len - i * repo::kBlockSize);
        blk = pad.data();
      }
      zero[i] = repo::IsAllZero(blk, repo::kBlockSize);
      if (!zero[i] && w->store() == nullptr) sums[i] = repo::Checksum(blk, repo::kBlockSize);
    }
    if (repo::BlockStore* store = w->store()) {
      // Version-2 file: hashing, compressing and storing run here on the
      // reader threads too; the writer only records references.
      std::vector<repo::BlockRef> refs(nblocks);
      std::vector<uint64_t> added(nblocks, 0);
      repo::BlockStore::Slot* slot = store->AcquireSlot();
      Status put;
      for (uint64_t i = 0; i < nblocks && put.ok(); ++i) {
        if (zero[i]) continue;
        const char* blk = i < whole ? data + i * repo::kBlockSize : pad.data();
        auto ref = slot->Put(blk, &added[i]);
        if (ref.ok()) {
          refs[i] = *ref;
        } else {
          put = ref.status();
        }
      }
      store->ReleaseSlot(slot);
      CBT_RETURN_IF_ERROR(put);
      std::lock_guard<std::mutex> g(mu);
      for (uint64_t i = 0; i < nblocks; ++i) {
        if (zero[i]) {
          if (overlay) CBT_RETURN_IF_ERROR(w->AddZero(first + i));
        } else {
          CBT_RETURN_IF_ERROR(w->AddRef(first + i, refs[i], added[i]));
        }
      }
      uint64_t now = done += len;
      if (options.progress) options.progress(vdi_uuid, now, total);
      return Status::Ok();
    }
    std::lock_guard<std::mutex> g(mu);
    for (uint64_t i = 0; i < nblocks;) {
      if (zero[i]) {
        if (overlay) CBT_RETURN_IF_ERROR(w->AddZero(first + i));
        ++i;
        continue;
      }
      uint64_t j = i;
      while (j < nblocks && !zero[j] && j < whole) ++j;
      if (j == i) {  // the padded last block
        CBT_RETURN_IF_ERROR(w->AddDataRun(first + i, pad.data(), 1, &sums[i]));
        ++i;
        continue;
      }
      CBT_RETURN_IF_ERROR(w->AddDataRun(first + i, data + i * repo::kBlockSize, j - i, &sums[i]));
      i = j;
    }
    uint64_t now = done += len;
    if (options.progress) options.progress(vdi_uuid, now, total);
    return Status::Ok();
  });
  *bytes_read = reader->bytes_read();
  return st.WithContext("disk " + vdi_uuid);
}

}  // namespace cbt::backup
