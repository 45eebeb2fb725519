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
//
// This file is the flow; the snapshots' naming, tagging and removal (steps
// 2, 4, 7) are in snapshot.h, the full-or-incremental rule (5) in
// decision.h, the NBD read (6) in nbd_copy.h.
#include "backup/backup.h"

#include "backup/decision.h"
#include "backup/nbd_copy.h"
#include "backup/snapshot.h"
#include "image/composed_image.h"
#include "repo/disk_file.h"
#include "repo/layout.h"
#include "util/clock.h"
#include "util/file.h"
#include "util/interrupt.h"
#include "util/md5.h"
#include "util/text.h"

#include <chrono>
#include <ctime>
#include <map>
#include <set>
#include <thread>

namespace cbt::backup {

using xapi::Session;
using xapi::Value;

namespace {

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
  SnapshotOwner owner;  // this repository's id and the VM's disks
  Report report;
  void Log(const std::string& line) const {
    if (opt.log) opt.log(line);
  }
};

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
    CBT_ASSIGN_OR_RETURN(Value rec, s.Call("VM.get_record", {Value(r.str())}));
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

// The VM's disks, CBT enabled where the SR's driver supports it.  Every
// disk VDI goes into c.owner.vm_disks, left-out ones too: their snapshots
// are still this repository's to clean up.
Result<std::vector<Disk>> ListDisks(Context& c, const Value& vm, const std::string& vm_uuid) {
  Session& s = c.s;
  std::vector<Disk> disks;
  std::map<std::string, std::optional<bool>> sr_cbt;
  for (const auto& vbd : vm.GetStrings("VBDs")) {
    CBT_ASSIGN_OR_RETURN(Value rec, s.Call("VBD.get_record", {Value(vbd)}));
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
    CBT_ASSIGN_OR_RETURN(d.vdi, s.Call("VDI.get_record", {Value(vdi)}));
    const std::string uuid = d.vdi.GetString("uuid");
    if (!repo::IsUuid(uuid)) {
      return Status::Remote("the server gave a disk of VM " + vm_uuid + " a malformed UUID '" +
                            Printable(uuid) + "'");
    }
    c.owner.vm_disks.insert(vdi);
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
  return disks;
}

// A name for the new point: now, never equal to an existing point, and
// newer than the newest (its parent).
Result<std::string> NewPointName(const Context& c, const std::string& vm_uuid) {
  std::string point = repo::FormatTimestamp(std::time(nullptr));
  while (PathExists(c.repo.PointPath(vm_uuid, point))) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    point = repo::FormatTimestamp(std::time(nullptr));
  }
  // If the clock went back (or a point was imported with a future name),
  // name it just after the newest.
  CBT_ASSIGN_OR_RETURN(auto existing, c.repo.ListPoints(vm_uuid));
  if (!existing.empty() && existing.back() >= point) {
    point = repo::FormatTimestamp(*repo::ParseTimestamp(existing.back()) + 1);
    c.Log("the clock is behind the newest point " + existing.back() + "; naming this point " +
          point);
  }
  return point;
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

// The newest committed point holding `vdi`, if any.  A point whose
// manifest cannot be read is passed over; if the points cannot be listed,
// there is none.
std::optional<ParentPoint> NewestPointOf(const repo::Repository& repo, const std::string& vm,
                                         const std::string& vdi) {
  auto found = repo.NewestPointWithDisk(vm, vdi, /*before=*/"", repo::UnreadableManifest::kSkip);
  if (!found.ok() || !found->has_value()) return std::nullopt;
  const repo::PointDisk& p = **found;
  return ParentPoint{p.point, p.disk.snapshot_vdi_uuid, p.disk.virtual_size};
}

// Full or incremental for disk `d` against `parent`: what is known here,
// then, only if that allows an incremental, the server's answers.  The
// changed blocks are asked for before NBD is opened: xapi refuses
// list_changed_blocks while the VDI is attached for NBD.
Decision DecideDisk(const Context& c, const Disk& d, const std::optional<ParentPoint>& parent,
                    uint64_t virtual_size) {
  DecisionInput in;
  in.full_requested = c.opt.full;
  in.parent = parent;
  in.cbt_capable = d.cbt_capable;
  in.cbt_was_off = d.cbt_was_off;
  auto snap_cbt = d.snapshot.GetBool("cbt_enabled");
  in.snapshot_cbt_enabled = snap_cbt.ok() && *snap_cbt;
  in.virtual_size = virtual_size;
  if (NeedsServerLookup(in)) {
    ServerLookup& l = in.lookup.emplace();
    auto prev = c.s.Call("VDI.get_by_uuid", {Value(parent->snapshot_vdi_uuid)});
    l.previous_found = prev.ok();
    if (prev.ok()) {
      auto prev_cbt = c.s.Call("VDI.get_cbt_enabled", {*prev});
      auto bitmap = c.s.Call("VDI.list_changed_blocks", {*prev, Value(d.snapshot_ref)});
      if (prev_cbt.ok()) {
        auto on = prev_cbt->AsBool();
        if (on.ok()) l.previous_cbt_enabled = *on;
      }
      if (bitmap.ok()) {
        l.changed_blocks_base64 = bitmap->str();
      } else {
        l.changed_blocks_status = bitmap.status();
      }
    }
  }
  return Decide(in);
}

// Compares the MD5 of the disk just written (not committed yet, so its
// chain is composed by hand) with the server's VDI.checksum of the
// snapshot.  Corruption if they differ: the point is then not kept.
Status VerifyDisk(const Context& c, const repo::PointWriter& writer, const Disk& d,
                  const std::string& vm_uuid, const std::string& point, const DiskReport& r,
                  bool overlay) {
  std::vector<std::shared_ptr<const repo::DiskFile>> files;
  std::vector<std::string> points;
  if (overlay) {
    CBT_ASSIGN_OR_RETURN(auto pimg,
                         image::ComposedImage::Open(c.repo, vm_uuid, r.parent_point, r.vdi_uuid));
    files = pimg->chain();
    points = pimg->file_points();
  }
  CBT_ASSIGN_OR_RETURN(
      auto nf, c.repo.OpenDiskFile(JoinPath(writer.temp_dir(), repo::DiskFileName(r.vdi_uuid))));
  files.push_back(nf);
  points.push_back(point);
  CBT_ASSIGN_OR_RETURN(
      auto img, image::ComposedImage::FromChain(files, points, {vm_uuid, point, r.vdi_uuid}));
  c.Log("verifying disk " + r.vdi_uuid + " against the server's checksum");
  auto remote = c.s.CallAsync("VDI.checksum", {Value(d.snapshot_ref)});
  if (!remote.ok()) return remote.status().WithContext("verify");
  CBT_ASSIGN_OR_RETURN(std::string local,
                       Md5Hex(img->size(), [&img](char* buf, size_t n, uint64_t off) {
                         return img->Read(buf, n, off).status();
                       }));
  if (local != remote->str()) {
    return Status::Corruption("verify failed for disk " + r.vdi_uuid + ": local MD5 " + local +
                              ", server MD5 " + remote->str() + "; the point was not kept");
  }
  return Status::Ok();
}

// Finds each disk's copy in snapshot VM `snap_ref` (by snapshot_of), tags
// it with the repository id and reads its record.
Status MatchSnapshotDisks(Context& c, const std::string& snap_ref, const std::string& vm_uuid,
                          std::vector<Disk>* disks) {
  Session& s = c.s;
  std::map<std::string, std::string> snap_of_original;
  CBT_ASSIGN_OR_RETURN(Value snap_vbds, s.Call("VM.get_VBDs", {Value(snap_ref)}));
  for (const auto& vbd : snap_vbds.items()) {
    CBT_ASSIGN_OR_RETURN(Value rec, s.Call("VBD.get_record", {Value(vbd.str())}));
    std::string vdi = rec.GetString("VDI");
    if (vdi.empty() || vdi == "OpaqueRef:NULL") continue;
    auto of = s.Call("VDI.get_snapshot_of", {Value(vdi)});
    if (of.ok()) snap_of_original[of->str()] = vdi;
  }
  for (auto& d : *disks) {
    auto it = snap_of_original.find(d.vdi_ref);
    if (it == snap_of_original.end()) {
      return Status::Remote("the snapshot of VM " + vm_uuid + " has no copy of disk " +
                            d.vdi.GetString("uuid"));
    }
    d.snapshot_ref = it->second;
    CBT_RETURN_IF_ERROR(TagSnapshotDisk(s, d.snapshot_ref, c.owner.repo_id));
    CBT_ASSIGN_OR_RETURN(d.snapshot, s.Call("VDI.get_record", {Value(d.snapshot_ref)}));
    if (!repo::IsUuid(d.snapshot.GetString("uuid"))) {
      return Status::Remote("the server gave a snapshot disk a malformed UUID '" +
                            Printable(d.snapshot.GetString("uuid")) + "'");
    }
  }
  return Status::Ok();
}

// Reads disk `d` into a new disk file of `writer`, in full or incremental,
// verifies it if asked, and fills in its manifest record.
Result<DiskReport> BackupDisk(Context& c, repo::PointWriter& writer, const Disk& d,
                              const std::string& vm_uuid, const std::string& point,
                              repo::DiskRecord* rec) {
  const double td = MonotonicSeconds();
  DiskReport r;
  r.vdi_uuid = d.vdi.GetString("uuid");
  r.name = d.vdi.GetString("name_label");
  r.snapshot_vdi_uuid = d.snapshot.GetString("uuid");
  CBT_ASSIGN_OR_RETURN(int64_t size, d.snapshot.GetInt("virtual_size"));
  r.virtual_size = static_cast<uint64_t>(size);

  std::optional<ParentPoint> parent = NewestPointOf(c.repo, vm_uuid, r.vdi_uuid);
  const Decision decision = DecideDisk(c, d, parent, r.virtual_size);
  const bool overlay = decision.incremental;
  if (overlay) {
    r.mode = "incremental";
    r.parent_point = parent->point;
  } else {
    r.mode = "full";
    r.reason = decision.reason;
    c.Log("disk " + r.vdi_uuid + ": full backup: " + decision.reason);
  }
  for (const auto& e : decision.extents) r.changed_blocks += repo::BlockCount(e.length);

  CBT_ASSIGN_OR_RETURN(
      auto w,
      writer.CreateDisk(r.vdi_uuid, overlay ? repo::FileKind::kOverlay : repo::FileKind::kBase,
                        r.virtual_size));
  CBT_RETURN_IF_ERROR(CopyOverNbd(c.s, c.opt, d.snapshot_ref, r.vdi_uuid, r.virtual_size,
                                  decision.extents, overlay, w.get(), &r.bytes_read));
  CBT_RETURN_IF_ERROR(w->Finish());
  r.bytes_stored = w->added_bytes();

  if (c.opt.verify) {
    CBT_RETURN_IF_ERROR(VerifyDisk(c, writer, d, vm_uuid, point, r, overlay));
    r.verify = "ok";
  }

  *rec = repo::NewDiskRecord(r.vdi_uuid, *w, r.parent_point, r.reason);
  rec->name = r.name;
  rec->snapshot_vdi_uuid = r.snapshot_vdi_uuid;
  rec->userdevice = d.userdevice;
  r.seconds = MonotonicSeconds() - td;
  return r;
}

}  // namespace

Result<Report> Run(Session& s, const repo::Repository& repo, const Options& opt) {
  const double t0 = MonotonicSeconds();
  Context c{s, repo, opt, {}, {}};
  CBT_ASSIGN_OR_RETURN(std::string vm_ref, ResolveVm(s, opt.vm));
  CBT_ASSIGN_OR_RETURN(Value vm, s.Call("VM.get_record", {Value(vm_ref)}));
  c.report.vm_uuid = vm.GetString("uuid");
  c.report.vm_name = vm.GetString("name_label");
  const std::string& vm_uuid = c.report.vm_uuid;
  // Server UUIDs become file names in the repository.
  if (!repo::IsUuid(vm_uuid)) {
    return Status::Remote("the server gave the VM a malformed UUID '" + Printable(vm_uuid) + "'");
  }
  CBT_ASSIGN_OR_RETURN(repo::VmLock lock, repo::VmLock::Acquire(repo, vm_uuid, "backup"));
  CBT_ASSIGN_OR_RETURN(c.owner.repo_id, repo.Id(/*create=*/true));

  CBT_ASSIGN_OR_RETURN(std::vector<Disk> disks, ListDisks(c, vm, vm_uuid));
  CleanLeftovers(s, repo, c.owner, vm_ref, vm_uuid, &c.report.notes,
                 [&c](const std::string& line) { c.Log(line); });
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

  CBT_ASSIGN_OR_RETURN(const std::string point, NewPointName(c, vm_uuid));
  c.report.point = point;

  CBT_RETURN_IF_ERROR(CheckInterrupted());
  c.Log("snapshotting VM " + Printable(c.report.vm_name) + " (" + vm_uuid + ")");
  std::vector<Value> snap_args = {Value(vm_ref), Value(SnapshotName(point, c.owner.repo_id))};
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
      auto failed = RemoveSnapshot(c.s, c.owner, ref, {});
      if (!failed.empty()) {
        c.Log("could not remove this run's snapshot: " + JoinFailures(failed) +
              "; the next backup retries");
      }
    }
  } guard{c, snap_ref, committed};
  // The tag lets this repository, and only it, recognise the snapshot VM
  // and, once that is gone, its disks.
  CBT_RETURN_IF_ERROR(TagSnapshotVm(s, snap_ref, c.owner.repo_id));
  CBT_RETURN_IF_ERROR(CheckInterrupted());

  CBT_RETURN_IF_ERROR(MatchSnapshotDisks(c, snap_ref, vm_uuid, &disks));
  CBT_ASSIGN_OR_RETURN(std::string metadata, ExportMetadata(s, vm_uuid));

  CBT_ASSIGN_OR_RETURN(auto writer, repo::PointWriter::Begin(repo, lock, vm_uuid, point));
  CBT_RETURN_IF_ERROR(writer->WriteMetadata(metadata));
  repo::Manifest m = repo::NewManifest(vm_uuid, c.report.vm_name, point, "xapi");
  m.power_state = vm.GetString("power_state");
  m.skipped_disks = skipped;

  for (const auto& d : disks) {
    CBT_RETURN_IF_ERROR(CheckInterrupted());
    repo::DiskRecord rec;
    CBT_ASSIGN_OR_RETURN(DiskReport r, BackupDisk(c, *writer, d, vm_uuid, point, &rec));
    m.disks.push_back(rec);
    c.report.disks.push_back(r);
  }

  CBT_RETURN_IF_ERROR(CheckInterrupted());
  CBT_RETURN_IF_ERROR(writer->Commit(m));
  committed = true;
  c.Log("committed point " + point);

  // Keep only CBT metadata on the server.
  std::set<std::string> mine;
  for (const auto& d : c.report.disks) mine.insert(d.snapshot_vdi_uuid);
  auto failed = RemoveSnapshot(s, c.owner, snap_ref, mine);
  if (!failed.empty()) {
    c.report.notes.push_back("point committed, but the snapshot could not all be removed (" +
                             JoinFailures(failed) + "); the next backup retries");
    c.Log(c.report.notes.back());
  }
  c.report.seconds = MonotonicSeconds() - t0;
  return std::move(c.report);
}

}  // namespace cbt::backup
