// SPDX-License-Identifier: Apache-2.0
//
// Design notes: the backup flow and what each failure leaves behind.
//
//  1. Lock the VM in the repository (one writer per VM), resolve the VM.
//  2. Clean up after an earlier run into this repository that was killed:
//     its snapshot VMs, and snapshot VDIs orphaned by a run killed between
//     destroying the VM and its disks.  Only what this repository created
//     is touched: each snapshot carries the repository's id (in the VM's
//     name and in other_config), so two repositories backing up one VM
//     never remove each other's snapshots.  A VDI is data_destroyed if a
//     committed point holds it, else destroyed outright (VDI.destroy merges
//     the CBT log into the child, so the chain stays correct either way).
//     Never a CD: VM.snapshot leaves the snapshot's CD drive on the
//     original ISO (xapi_vm_clone.ml, safe_clone_disks), and destroying
//     that VDI deletes the user's ISO file (sm ISOSR.py, ISOVDI.delete).
//  3. Enable CBT on disks whose SR driver supports it (the SM record's
//     features; SR.allowed_operations is empty while any operation runs on
//     the SR); others are read in full.  Sharable and reset-on-boot disks,
//     which VDI.snapshot refuses, are left out through ignore_vdis.
//  4. VM.snapshot, tag it and its disks with the repository id,
//     export_metadata.
//  5. Per disk, decide full or incremental against the newest local point of
//     that disk whose snapshot the server still knows; compute the changed
//     blocks before opening NBD (xapi refuses list_changed_blocks while the
//     VDI is attached for NBD).  Any broken chain means full, with a reason.
//  6. Read over NBD into a temporary point; optionally compare MD5 with
//     Async.VDI.checksum; commit.
//  7. VM.destroy on the snapshot VM, VDI.data_destroy on its VDIs (retrying
//     VDI_IN_USE): the server keeps only CBT metadata.
// A failure before 6's commit removes this run's snapshot entirely; after
// the commit, a failure of step 7 is reported but the point stays (it is
// complete), and the next run finishes the cleanup.
#include "backup/backup.h"

#include "image/composed_image.h"
#include "nbd/nbd_reader.h"
#include "repo/disk_file.h"
#include "repo/layout.h"
#include "util/file.h"
#include "util/interrupt.h"
#include "util/md5.h"
#include "util/text.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace cbt::backup {

using xapi::Session;
using xapi::Value;

namespace {

constexpr char kSnapshotPrefix[] = "cbt-backup ";
// other_config key on the snapshot VM and its VDIs naming the repository.
constexpr char kRepoKey[] = "cbt-backup-repository";

// The name is set by VM.snapshot itself, so a run killed before it could
// tag the snapshot still leaves one its repository recognises.
std::string SnapshotName(const std::string& point, const std::string& repo_id) {
  return kSnapshotPrefix + point + " [" + repo_id + "]";
}

bool IsOurSnapshotName(const std::string& name, const std::string& repo_id) {
  const std::string tail = " [" + repo_id + "]";
  return name.rfind(kSnapshotPrefix, 0) == 0 && name.size() > tail.size() &&
         name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
}

std::string OtherConfig(const Value& rec, const std::string& key) {
  const Value* oc = rec.Find("other_config");
  return oc ? oc->GetString(key) : std::string();
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Disk {
  std::string vbd;
  std::string skip;  // why the disk is left out (sharable, reset on boot), or empty
  std::string userdevice;
  std::string vdi_ref;  // original VDI
  Value vdi;            // its record
  bool cbt_capable = false;
  bool cbt_was_off = false;  // CBT was off before this run enabled it
  std::string snapshot_ref;  // snapshot VDI
  Value snapshot;            // its record
};

struct Context {
  Session& s;
  const repo::Repository& repo;
  const Options& opt;
  std::string repo_id;
  std::set<std::string> vm_disks;  // refs of the VM's disk VDIs
  Report report;
  void Log(const std::string& line) {
    if (opt.log) opt.log(line);
  }
};

Result<Value> Record(Session& s, const std::string& cls, const std::string& ref) {
  return s.Call(cls + ".get_record", {Value(ref)});
}

// Retries VDI_IN_USE: xapi-nbd and snapshot VBDs take a moment to go away.
Status CallRetryInUse(Session& s, const std::string& method, const std::string& ref) {
  for (int attempt = 0;; ++attempt) {
    auto r = s.Call(method, {Value(ref)});
    if (r.ok()) return Status::Ok();
    const std::string code = r.status().remote_code();
    if ((code == "VDI_IN_USE" || code == "OTHER_OPERATION_IN_PROGRESS") && attempt < 10) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500 * (attempt + 1)));
      continue;
    }
    return r.status();
  }
}

Result<std::string> ResolveVm(Session& s, const std::string& vm) {
  if (repo::IsUuid(vm)) {
    auto ref = s.Call("VM.get_by_uuid", {Value(vm)});
    if (!ref.ok() && ref.status().remote_code() == "UUID_INVALID") {
      return Status::NotFound("the server has no VM with UUID " + vm);
    }
    if (!ref.ok()) return ref.status();
    return ref->str();
  }
  CBT_ASSIGN_OR_RETURN(Value refs, s.Call("VM.get_by_name_label", {Value(vm)}));
  std::vector<std::string> candidates;
  for (const auto& r : refs.items()) {
    CBT_ASSIGN_OR_RETURN(Value rec, Record(s, "VM", r.str()));
    auto tmpl = rec.GetBool("is_a_template");
    auto snap = rec.GetBool("is_a_snapshot");
    auto dom0 = rec.GetBool("is_control_domain");
    if ((tmpl.ok() && *tmpl) || (snap.ok() && *snap) || (dom0.ok() && *dom0)) continue;
    candidates.push_back(r.str());
  }
  if (candidates.empty()) return Status::NotFound("the server has no VM named '" + vm + "'");
  if (candidates.size() > 1) {
    return Status::InvalidArgument(std::to_string(candidates.size()) + " VMs are named '" + vm +
                                   "'; give the VM's UUID instead");
  }
  return candidates[0];
}

// Snapshot VDI UUIDs that committed points of `vm` hold.
std::set<std::string> CommittedSnapshots(const repo::Repository& repo, const std::string& vm) {
  std::set<std::string> out;
  auto points = repo.ListPoints(vm);
  if (!points.ok()) return out;
  for (const auto& p : *points) {
    auto m = repo.ReadManifest(vm, p);
    if (!m.ok()) continue;
    for (const auto& d : m->disks) {
      if (!d.snapshot_vdi_uuid.empty()) out.insert(d.snapshot_vdi_uuid);
    }
  }
  return out;
}

// True for a VDI that a backup into this repository made: a snapshot
// (never an ISO or the original disk that VM.snapshot left in place for an
// ignored or CD drive), not yet reduced to CBT metadata, of one of the VM's
// disks or tagged with this repository's id.
bool IsOurSnapshotDisk(const Context& c, const Value& vdi) {
  auto snap = vdi.GetBool("is_a_snapshot");
  if (!(snap.ok() && *snap) || vdi.GetString("type") == "cbt_metadata") return false;
  return c.vm_disks.count(vdi.GetString("snapshot_of")) > 0 ||
         OtherConfig(vdi, kRepoKey) == c.repo_id;
}

// data_destroy for a snapshot VDI a committed point holds (its CBT metadata
// is the base of the next incremental), destroy for the others.
Status RemoveSnapshotDisk(Context& c, const std::string& ref, const Value& rec,
                          const std::set<std::string>& committed) {
  auto cbt = rec.GetBool("cbt_enabled");
  const bool keep_metadata = committed.count(rec.GetString("uuid")) && cbt.ok() && *cbt;
  return CallRetryInUse(c.s, keep_metadata ? "VDI.data_destroy" : "VDI.destroy", ref)
      .WithContext("snapshot disk " + rec.GetString("uuid"));
}

// Destroys a snapshot VM and those of its disks that IsOurSnapshotDisk
// accepts, carrying on past failures.  Returns what could not be removed,
// one item each (empty when all went).
std::vector<std::string> RemoveSnapshot(Context& c, const std::string& snap_vm,
                                        const std::set<std::string>& committed) {
  std::vector<std::string> failed;
  std::vector<std::pair<std::string, Value>> vdis;
  auto vbds = c.s.Call("VM.get_VBDs", {Value(snap_vm)});
  if (!vbds.ok()) {
    failed.push_back("snapshot VM " + snap_vm + ": " + vbds.status().message());
    return failed;
  }
  for (const auto& vbd : vbds->items()) {
    auto rec = Record(c.s, "VBD", vbd.str());
    if (!rec.ok()) continue;
    std::string vdi = rec->GetString("VDI");
    if (rec->GetString("type") != "Disk" || vdi.empty() || vdi == "OpaqueRef:NULL") continue;
    auto vrec = Record(c.s, "VDI", vdi);
    if (vrec.ok() && IsOurSnapshotDisk(c, *vrec)) vdis.emplace_back(vdi, *vrec);
  }
  auto destroyed = c.s.Call("VM.destroy", {Value(snap_vm)});
  if (!destroyed.ok()) failed.push_back("snapshot VM: " + destroyed.status().message());
  for (const auto& [ref, rec] : vdis) {
    Status st = RemoveSnapshotDisk(c, ref, rec, committed);
    if (!st.ok()) failed.push_back(st.message());
  }
  return failed;
}

std::string JoinFailures(const std::vector<std::string>& failed) {
  std::string out;
  for (const auto& f : failed) out += (out.empty() ? "" : "; ") + f;
  return out;
}

// Removes what earlier runs into this repository left on the server:
// snapshot VMs, then snapshot VDIs whose VM is gone.  Failures are reported
// in the notes and do not stop the backup.
void CleanLeftovers(Context& c, const std::string& vm_ref, const std::string& vm_uuid) {
  std::set<std::string> committed = CommittedSnapshots(c.repo, vm_uuid);
  auto note = [&c](const std::string& line) {
    c.report.notes.push_back(line);
    c.Log(line);
  };
  auto snaps = c.s.Call("VM.get_snapshots", {Value(vm_ref)});
  if (!snaps.ok()) {
    note("cannot list the VM's snapshots to clean up: " + snaps.status().message());
  } else {
    for (const auto& snap : snaps->items()) {
      auto rec = Record(c.s, "VM", snap.str());
      if (!rec.ok()) continue;
      const std::string name = rec->GetString("name_label");
      if (!IsOurSnapshotName(name, c.repo_id) && OtherConfig(*rec, kRepoKey) != c.repo_id) {
        continue;
      }
      const std::string label = "'" + Printable(name) + "' (" + rec->GetString("uuid") + ")";
      c.Log("removing snapshot " + label + " left by an interrupted backup");
      auto failed = RemoveSnapshot(c, snap.str(), committed);
      if (failed.empty()) {
        c.report.notes.push_back("removed leftover snapshot " + label);
      } else {
        note("could not remove all of leftover snapshot " + label + ": " + JoinFailures(failed));
      }
    }
  }
  // Orphans: a run killed after VM.destroy and before its disks went.  Only
  // the tag counts here: other tools' snapshots of these disks are not ours.
  for (const auto& disk : c.vm_disks) {
    auto vsnaps = c.s.Call("VDI.get_snapshots", {Value(disk)});
    if (!vsnaps.ok()) continue;
    for (const auto& v : vsnaps->items()) {
      auto rec = Record(c.s, "VDI", v.str());
      if (!rec.ok() || OtherConfig(*rec, kRepoKey) != c.repo_id || !IsOurSnapshotDisk(c, *rec)) {
        continue;
      }
      if (!rec->GetStrings("VBDs").empty()) continue;  // held by a snapshot VM: handled above
      Status st = RemoveSnapshotDisk(c, v.str(), *rec, committed);
      if (st.ok()) {
        c.report.notes.push_back("removed orphaned snapshot disk " + rec->GetString("uuid"));
      } else {
        note("could not remove orphaned snapshot disk: " + st.message());
      }
    }
  }
}

// Whether the SR's driver tracks changed blocks: the SM record's
// VDI_CONFIG_CBT feature.  Not SR.allowed_operations, which xapi empties of
// everything but plug while any operation runs on the SR
// (xapi_sr_operations.ml, check_parallel_ops), so a busy shared SR would
// turn every incremental into a full backup.  nullopt when the SM records
// cannot be read (the caller then lets VDI.enable_cbt decide).
std::optional<bool> SrSupportsCbt(Session& s, const std::string& sr_ref,
                                  std::map<std::string, std::optional<bool>>* cache) {
  auto type = s.Call("SR.get_type", {Value(sr_ref)});
  if (!type.ok()) return std::nullopt;
  auto hit = cache->find(type->str());
  if (hit != cache->end()) return hit->second;
  std::optional<bool> answer;
  auto sms = s.Call("SM.get_all_records");
  if (sms.ok()) {
    answer = false;
    for (const auto& [ref, sm] : sms->members()) {
      if (sm.GetString("type") != type->str()) continue;
      const Value* features = sm.Find("features");
      answer = features != nullptr && features->Find("VDI_CONFIG_CBT") != nullptr;
    }
  }
  (*cache)[type->str()] = answer;
  return answer;
}

Result<std::string> ExportMetadata(Session& s, const std::string& vm_uuid) {
  CBT_ASSIGN_OR_RETURN(xapi::HttpResponse resp,
                       s.http().Get("/export_metadata?session_id=" + xapi::UrlEncode(s.ref()) +
                                    "&uuid=" + vm_uuid + "&export_snapshots=false"));
  if (resp.status != 200) {
    return Status::Remote("export_metadata answered HTTP " + std::to_string(resp.status));
  }
  if (resp.body.rfind("HTTP/", 0) == 0) {
    return Status::Remote("export_metadata returned an error inside its body");
  }
  return std::move(resp.body);
}

struct Parent {
  std::string point;
  std::string snapshot_vdi_uuid;
  uint64_t virtual_size = 0;
};

// The newest committed point holding `vdi`, if any.
std::optional<Parent> NewestPointOf(const repo::Repository& repo, const std::string& vm,
                                    const std::string& vdi) {
  auto points = repo.ListPoints(vm);
  if (!points.ok()) return std::nullopt;
  for (auto it = points->rbegin(); it != points->rend(); ++it) {
    auto m = repo.ReadManifest(vm, *it);
    if (!m.ok()) continue;
    if (const repo::DiskRecord* d = m->FindDisk(vdi)) {
      return Parent{*it, d->snapshot_vdi_uuid, d->virtual_size};
    }
  }
  return std::nullopt;
}

// Reads one disk into `w` and fills in the report.
Status ReadDisk(Context& c, const Disk& d, const std::vector<nbd::Extent>& extents, bool overlay,
                repo::DiskFileWriter* w, DiskReport* r) {
  CBT_ASSIGN_OR_RETURN(Value infos, c.s.Call("VDI.get_nbd_info", {Value(d.snapshot_ref)}));
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
  ro.connections = c.opt.connections;
  ro.require_tls = c.opt.require_tls;
  ro.timeout_seconds = c.opt.nbd_timeout;
  CBT_ASSIGN_OR_RETURN(auto reader, nbd::Reader::Connect(eps, ro));
  if (reader->size() < r->virtual_size) {
    return Status::Corruption("NBD export of " + r->vdi_uuid + " is " +
                              std::to_string(reader->size()) + " bytes, the VDI " +
                              std::to_string(r->virtual_size));
  }
  std::mutex mu;
  uint64_t total = 0;
  for (const auto& e : extents) total += e.length;
  std::atomic<uint64_t> done{0};
  const std::string vdi = r->vdi_uuid;
  Status s = reader->Read(extents, [&](uint64_t off, const char* data, size_t len) -> Status {
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
      if (!zero[i]) sums[i] = repo::Checksum(blk, repo::kBlockSize);
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
    if (c.opt.progress) c.opt.progress(vdi, now, total);
    return Status::Ok();
  });
  r->bytes_read = reader->bytes_read();
  return s.WithContext("disk " + r->vdi_uuid);
}

}  // namespace

Result<std::string> DecodeBase64(const std::string& text) {
  auto val = [](char ch) -> int {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+') return 62;
    if (ch == '/') return 63;
    return -1;
  };
  std::string in;
  for (char ch : text) {
    if (ch != '\n' && ch != '\r' && ch != ' ') in += ch;
  }
  if (in.size() % 4 != 0) return Status::Corruption("changed-block bitmap is not valid base64");
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      if (in[i + k] == '=' && i + 4 == in.size() && k >= 2) {
        v[k] = 0;
        ++pad;
      } else {
        v[k] = val(in[i + k]);
        if (v[k] < 0 || pad > 0)
          return Status::Corruption("changed-block bitmap is not valid base64");
      }
    }
    uint32_t triple = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out += static_cast<char>(triple >> 16);
    if (pad < 2) out += static_cast<char>((triple >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(triple & 0xff);
  }
  return out;
}

Result<Report> Run(Session& s, const repo::Repository& repo, const Options& opt) {
  const double t0 = Now();
  Context c{s, repo, opt, {}, {}, {}};
  CBT_ASSIGN_OR_RETURN(std::string vm_ref, ResolveVm(s, opt.vm));
  CBT_ASSIGN_OR_RETURN(Value vm, Record(s, "VM", vm_ref));
  c.report.vm_uuid = vm.GetString("uuid");
  c.report.vm_name = vm.GetString("name_label");
  const std::string& vm_uuid = c.report.vm_uuid;
  // Server UUIDs become file names in the repository.
  if (!repo::IsUuid(vm_uuid)) {
    return Status::Remote("the server gave the VM a malformed UUID '" + Printable(vm_uuid) + "'");
  }
  CBT_ASSIGN_OR_RETURN(repo::VmLock lock, repo::VmLock::Acquire(repo, vm_uuid, "backup"));
  CBT_ASSIGN_OR_RETURN(c.repo_id, repo.Id(/*create=*/true));

  // Disks of the VM, CBT enabled where the SR's driver supports it.
  std::vector<Disk> disks;
  std::map<std::string, std::optional<bool>> sr_cbt;
  for (const auto& vbd : vm.GetStrings("VBDs")) {
    CBT_ASSIGN_OR_RETURN(Value rec, Record(s, "VBD", vbd));
    auto empty = rec.GetBool("empty");
    std::string vdi = rec.GetString("VDI");
    if (rec.GetString("type") != "Disk" || (empty.ok() && *empty) || vdi.empty() ||
        vdi == "OpaqueRef:NULL") {
      continue;
    }
    Disk d;
    d.vbd = vbd;
    d.userdevice = rec.GetString("userdevice");
    d.vdi_ref = vdi;
    CBT_ASSIGN_OR_RETURN(d.vdi, Record(s, "VDI", vdi));
    const std::string uuid = d.vdi.GetString("uuid");
    if (!repo::IsUuid(uuid)) {
      return Status::Remote("the server gave a disk of VM " + vm_uuid + " a malformed UUID '" +
                            Printable(uuid) + "'");
    }
    c.vm_disks.insert(vdi);
    // VDI.snapshot refuses these (xapi_vdi.ml, check_operation_error:
    // VDI_IS_SHARABLE, VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION), and
    // with them VM.snapshot fails as a whole unless they are ignored.
    auto sharable = d.vdi.GetBool("sharable");
    if (sharable.ok() && *sharable) {
      d.skip = "sharable disk: XenServer cannot snapshot it";
    } else if (d.vdi.GetString("on_boot") == "reset") {
      d.skip = "reset-on-boot disk: XenServer cannot snapshot it";
    }
    if (!d.skip.empty()) {
      c.Log("disk " + uuid + " ('" + Printable(d.vdi.GetString("name_label")) +
            "') is left out: " + d.skip);
      disks.push_back(std::move(d));
      continue;
    }
    std::optional<bool> supports = SrSupportsCbt(s, d.vdi.GetString("SR"), &sr_cbt);
    auto enabled = d.vdi.GetBool("cbt_enabled");
    d.cbt_capable = supports.value_or(true) || (enabled.ok() && *enabled);
    if (d.cbt_capable && !(enabled.ok() && *enabled)) {
      d.cbt_was_off = true;
      auto r = s.Call("VDI.enable_cbt", {Value(vdi)});
      if (!r.ok()) {
        c.Log("cannot enable CBT on disk " + d.vdi.GetString("uuid") + " (" + r.status().message() +
              "): it is backed up in full");
        d.cbt_capable = false;
      }
    } else if (!d.cbt_capable) {
      c.Log("the SR of disk " + d.vdi.GetString("uuid") +
            " does not support CBT: it is backed up in full every time");
    }
    disks.push_back(std::move(d));
  }
  CleanLeftovers(c, vm_ref, vm_uuid);
  std::vector<Value> ignore;
  std::vector<repo::SkippedDisk> skipped;
  for (auto it = disks.begin(); it != disks.end();) {
    if (it->skip.empty()) {
      ++it;
      continue;
    }
    ignore.emplace_back(it->vdi_ref);
    skipped.push_back({it->vdi.GetString("uuid"), it->vdi.GetString("name_label"), it->skip});
    it = disks.erase(it);
  }
  c.report.skipped = skipped;
  if (disks.empty()) return Status::InvalidArgument("VM " + vm_uuid + " has no disks to back up");

  // Point name: now, and never equal to an existing point.
  std::string point = repo::FormatTimestamp(std::time(nullptr));
  while (PathExists(repo.PointPath(vm_uuid, point))) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    point = repo::FormatTimestamp(std::time(nullptr));
  }
  // A point must be newer than its parent: if the clock went back (or a
  // point was imported with a future name), name it just after the newest.
  CBT_ASSIGN_OR_RETURN(auto existing, repo.ListPoints(vm_uuid));
  if (!existing.empty() && existing.back() >= point) {
    point = repo::FormatTimestamp(*repo::ParseTimestamp(existing.back()) + 1);
    c.Log("the clock is behind the newest point " + existing.back() + "; naming this point " +
          point);
  }
  c.report.point = point;

  CBT_RETURN_IF_ERROR(CheckInterrupted());
  c.Log("snapshotting VM " + Printable(c.report.vm_name) + " (" + vm_uuid + ")");
  std::vector<Value> snap_args = {Value(vm_ref), Value(SnapshotName(point, c.repo_id))};
  if (!ignore.empty()) snap_args.push_back(Value::Array(ignore));
  CBT_ASSIGN_OR_RETURN(Value snap_vm, s.Call("VM.snapshot", snap_args));
  const std::string snap_ref = snap_vm.str();
  bool committed = false;
  // Removes this run's snapshot whatever happens before the commit.
  struct SnapshotGuard {
    Context& c;
    const std::string& ref;
    bool& committed;
    ~SnapshotGuard() {
      if (committed) return;
      auto failed = RemoveSnapshot(c, ref, {});
      if (!failed.empty()) {
        c.Log("could not remove this run's snapshot: " + JoinFailures(failed) +
              "; the next backup retries");
      }
    }
  } guard{c, snap_ref, committed};
  // The tag lets this repository, and only it, recognise the snapshot VM
  // and, once that is gone, its disks.  VM.snapshot copies other_config, so
  // a stale value is replaced, not added to.
  (void)s.Call("VM.remove_from_other_config", {Value(snap_ref), Value(kRepoKey)});
  CBT_RETURN_IF_ERROR(
      s.Call("VM.add_to_other_config", {Value(snap_ref), Value(kRepoKey), Value(c.repo_id)})
          .status());
  CBT_RETURN_IF_ERROR(CheckInterrupted());

  // Map the snapshot's VDIs to the originals (by snapshot_of).
  std::map<std::string, std::string> snap_of_original;
  CBT_ASSIGN_OR_RETURN(Value snap_vbds, s.Call("VM.get_VBDs", {Value(snap_ref)}));
  for (const auto& vbd : snap_vbds.items()) {
    CBT_ASSIGN_OR_RETURN(Value rec, Record(s, "VBD", vbd.str()));
    std::string vdi = rec.GetString("VDI");
    if (vdi.empty() || vdi == "OpaqueRef:NULL") continue;
    auto of = s.Call("VDI.get_snapshot_of", {Value(vdi)});
    if (of.ok()) snap_of_original[of->str()] = vdi;
  }
  for (auto& d : disks) {
    auto it = snap_of_original.find(d.vdi_ref);
    if (it == snap_of_original.end()) {
      return Status::Remote("the snapshot of VM " + vm_uuid + " has no copy of disk " +
                            d.vdi.GetString("uuid"));
    }
    d.snapshot_ref = it->second;
    (void)s.Call("VDI.remove_from_other_config", {Value(d.snapshot_ref), Value(kRepoKey)});
    CBT_RETURN_IF_ERROR(s.Call("VDI.add_to_other_config",
                               {Value(d.snapshot_ref), Value(kRepoKey), Value(c.repo_id)})
                            .status());
    CBT_ASSIGN_OR_RETURN(d.snapshot, Record(s, "VDI", d.snapshot_ref));
    if (!repo::IsUuid(d.snapshot.GetString("uuid"))) {
      return Status::Remote("the server gave a snapshot disk a malformed UUID '" +
                            Printable(d.snapshot.GetString("uuid")) + "'");
    }
  }
  CBT_ASSIGN_OR_RETURN(std::string metadata, ExportMetadata(s, vm_uuid));

  CBT_ASSIGN_OR_RETURN(auto writer, repo::PointWriter::Begin(repo, lock, vm_uuid, point));
  CBT_RETURN_IF_ERROR(writer->WriteMetadata(metadata));
  repo::Manifest m;
  m.vm_uuid = vm_uuid;
  m.vm_name = c.report.vm_name;
  m.point = point;
  m.created_by = std::string("cbt-backup ") + CBT_VERSION;
  m.source = "xapi";
  m.power_state = vm.GetString("power_state");
  m.skipped_disks = skipped;

  for (auto& d : disks) {
    CBT_RETURN_IF_ERROR(CheckInterrupted());
    const double td = Now();
    DiskReport r;
    r.vdi_uuid = d.vdi.GetString("uuid");
    r.name = d.vdi.GetString("name_label");
    r.snapshot_vdi_uuid = d.snapshot.GetString("uuid");
    CBT_ASSIGN_OR_RETURN(int64_t size, d.snapshot.GetInt("virtual_size"));
    r.virtual_size = static_cast<uint64_t>(size);

    // Full or incremental, and why.
    std::optional<Parent> parent = NewestPointOf(repo, vm_uuid, r.vdi_uuid);
    std::vector<nbd::Extent> extents;
    std::string reason;
    auto snap_cbt = d.snapshot.GetBool("cbt_enabled");
    if (opt.full) {
      reason = "--full was given";
    } else if (!parent) {
      reason = "first backup of this disk";
    } else if (!d.cbt_capable) {
      reason = "the disk's SR does not support CBT";
    } else if (d.cbt_was_off) {
      reason = "CBT was off on this disk (disabled or lost on the server); it is on again";
    } else if (!(snap_cbt.ok() && *snap_cbt)) {
      reason = "CBT is not enabled on the new snapshot (it was disabled or lost on the server)";
    } else if (parent->virtual_size != r.virtual_size) {
      reason = "the disk was resized since point " + parent->point;
    } else if (parent->snapshot_vdi_uuid.empty()) {
      reason = "point " + parent->point + " was not taken from this server";
    } else {
      auto prev = s.Call("VDI.get_by_uuid", {Value(parent->snapshot_vdi_uuid)});
      if (!prev.ok()) {
        reason = "the server no longer has the snapshot of point " + parent->point;
      } else {
        auto prev_cbt = s.Call("VDI.get_cbt_enabled", {*prev});
        auto bitmap_b64 = s.Call("VDI.list_changed_blocks", {*prev, Value(d.snapshot_ref)});
        auto prev_cbt_on = prev_cbt.ok() ? prev_cbt->AsBool() : Result<bool>(true);
        if (prev_cbt_on.ok() && !*prev_cbt_on) {
          reason = "the snapshot of point " + parent->point + " has no CBT log any more";
        } else if (!bitmap_b64.ok()) {
          const auto& e = bitmap_b64.status().detail();
          // SR_BACKEND_FAILURE_460 "unrelated": the CBT chain was cut.
          std::string why = e.size() > 2 && e[0] == "SR_BACKEND_FAILURE_460"
                                ? "the CBT chain is broken: " + e[2]
                                : bitmap_b64.status().message();
          reason = "the server cannot list the blocks changed since point " + parent->point + " (" +
                   why + ")";
        } else {
          auto bitmap = DecodeBase64(bitmap_b64->str());
          const uint64_t expect = (repo::BlockCount(r.virtual_size) + 7) / 8;
          if (!bitmap.ok()) {
            reason = bitmap.status().message();
          } else if (bitmap->size() != expect) {
            reason = "the server's changed-block bitmap has " + std::to_string(bitmap->size()) +
                     " bytes where " + std::to_string(expect) + " were expected";
          } else {
            extents = nbd::ExtentsFromBitmap(*bitmap, r.virtual_size);
          }
        }
      }
    }
    const bool overlay = reason.empty();
    if (overlay) {
      r.mode = "incremental";
      r.parent_point = parent->point;
    } else {
      r.mode = "full";
      r.reason = reason;
      extents = {{0, r.virtual_size}};
      c.Log("disk " + r.vdi_uuid + ": full backup: " + reason);
    }
    for (const auto& e : extents) r.changed_blocks += repo::BlockCount(e.length);

    CBT_ASSIGN_OR_RETURN(
        auto w,
        writer->CreateDisk(r.vdi_uuid, overlay ? repo::FileKind::kOverlay : repo::FileKind::kBase,
                           r.virtual_size));
    CBT_RETURN_IF_ERROR(ReadDisk(c, d, extents, overlay, w.get(), &r));
    CBT_RETURN_IF_ERROR(w->Finish());
    r.bytes_stored = w->file_size();

    if (opt.verify) {
      // The new point is not committed yet: compose its chain by hand.
      std::vector<std::shared_ptr<const repo::DiskFile>> files;
      std::vector<std::string> points;
      if (overlay) {
        CBT_ASSIGN_OR_RETURN(auto pimg,
                             image::ComposedImage::Open(repo, vm_uuid, r.parent_point, r.vdi_uuid));
        files = pimg->chain();
        points = pimg->file_points();
      }
      CBT_ASSIGN_OR_RETURN(auto nf, repo::DiskFile::Open(JoinPath(writer->temp_dir(),
                                                                  repo::DiskFileName(r.vdi_uuid))));
      files.push_back(nf);
      points.push_back(point);
      CBT_ASSIGN_OR_RETURN(
          auto img, image::ComposedImage::FromChain(files, points, {vm_uuid, point, r.vdi_uuid}));
      c.Log("verifying disk " + r.vdi_uuid + " against the server's checksum");
      auto remote = s.CallAsync("VDI.checksum", {Value(d.snapshot_ref)});
      if (!remote.ok()) return remote.status().WithContext("verify");
      CBT_ASSIGN_OR_RETURN(std::string local,
                           Md5Hex(img->size(), [&img](char* buf, size_t n, uint64_t off) {
                             return img->Read(buf, n, off).status();
                           }));
      if (local != remote->str()) {
        return Status::Corruption("verify failed for disk " + r.vdi_uuid + ": local MD5 " + local +
                                  ", server MD5 " + remote->str() + "; the point was not kept");
      }
      r.verify = "ok";
    }

    repo::DiskRecord rec;
    rec.vdi_uuid = r.vdi_uuid;
    rec.name = r.name;
    rec.snapshot_vdi_uuid = r.snapshot_vdi_uuid;
    rec.userdevice = d.userdevice;
    rec.virtual_size = r.virtual_size;
    rec.file = repo::DiskFileName(r.vdi_uuid);
    rec.base = !overlay;
    rec.parent_point = r.parent_point;
    rec.data_blocks = w->data_blocks();
    rec.zero_blocks = w->zero_blocks();
    rec.stored_bytes = r.bytes_stored;
    rec.reason = r.reason;
    m.disks.push_back(rec);
    r.seconds = Now() - td;
    c.report.disks.push_back(r);
  }

  CBT_RETURN_IF_ERROR(CheckInterrupted());
  CBT_RETURN_IF_ERROR(writer->Commit(m));
  committed = true;
  c.Log("committed point " + point);

  // Keep only CBT metadata on the server.
  std::set<std::string> mine;
  for (const auto& d : c.report.disks) mine.insert(d.snapshot_vdi_uuid);
  auto failed = RemoveSnapshot(c, snap_ref, mine);
  if (!failed.empty()) {
    c.report.notes.push_back("point committed, but the snapshot could not all be removed (" +
                             JoinFailures(failed) + "); the next backup retries");
    c.Log(c.report.notes.back());
  }
  c.report.seconds = Now() - t0;
  return std::move(c.report);
}

}  // namespace cbt::backup
