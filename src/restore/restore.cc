// SPDX-License-Identifier: Apache-2.0
//
// Design notes.  Each disk goes through the same path (RestoreDisk): pick
// the source (the point's composed image, or a raw file), decide which
// 64 KiB blocks to carry, build the body (VHD stream or raw bytes) whose
// exact length is known up front, PUT it to /import_raw_vdi inside a task we
// created, then wait for that task: xapi answers 200 before reading the
// body, so only the task says whether the import worked.
//
// Which blocks travel:
//   new VDI, vhd        every block that may hold data (a new VDI reads zero
//                       elsewhere);
//   existing VDI, full  every block (old contents must be overwritten);
//   changed blocks      the blocks list_changed_blocks reports between the
//                       point's snapshot and the target (itself when it is
//                       not attached, else a fresh snapshot of it).
#include "restore/restore.h"

#include "image/composed_image.h"
#include "repo/disk_file.h"
#include "repo/layout.h"
#include "restore/vm_metadata.h"
#include "stream/vhd_stream.h"
#include "util/clock.h"
#include "util/file.h"
#include "util/md5.h"
#include "util/text.h"
#include "xapi/cbt_bitmap.h"

#include <cstring>
#include <memory>

namespace cbt::restore {

using stream::DiskSource;
using xapi::Session;
using xapi::Value;

// A bit of the server's changed-block bitmap is one block of the point.
static_assert(xapi::kCbtBlockSize == repo::kBlockSize);

namespace {

// Destroys what this restore created unless it is released.
struct Created {
  Session& s;
  std::vector<std::string> vdis;
  std::string vm;
  bool keep = false;
  ~Created() {
    if (keep) return;
    if (!vm.empty()) (void)s.Call("VM.destroy", {Value(vm)});
    for (const auto& v : vdis) (void)s.Call("VDI.destroy", {Value(v)});
  }
};

// MD5 of the source followed by zeros up to `total` (a VDI the server
// rounded up reads zero past the restored bytes).
Result<std::string> Md5Of(const DiskSource& src, uint64_t total) {
  src.ExpectReads({});  // every block, whatever the upload read
  return Md5Hex(total, [&src](char* buf, size_t n, uint64_t off) -> Status {
    std::memset(buf, 0, n);
    if (off >= src.size()) return Status::Ok();
    return src.Read(buf, n, off).status();
  });
}

// How long to wait for a task that an HTTP handler may never have been
// given (the request failed before it reached one).
// Short: after a broken transfer xapi fails the task within moments, and a
// handler that never got the request never will.
constexpr double kOrphanTaskSeconds = 5;

// The client for uploads to `sr_ref`: nullptr for the pool master when it
// sees the SR, else a client for a host that does, trusting that host's own
// certificate.  xapi would redirect (302) an upload the master cannot take
// (import_raw_vdi.ml, import; importexport.ml, find_host_for_sr), but it
// answers before reading the body and closes, so a client that is sending
// a large body sees a broken pipe, not the redirect: asking first avoids it.
Result<std::unique_ptr<xapi::HttpClient>> UploadClientForSr(Session& s, const std::string& sr_ref) {
  auto pools = s.Call("pool.get_all");
  std::string master;
  if (pools.ok() && !pools->items().empty()) {
    auto m = s.Call("pool.get_master", {pools->items()[0]});
    if (m.ok()) master = m->str();
  }
  CBT_ASSIGN_OR_RETURN(Value pbds, s.Call("SR.get_PBDs", {Value(sr_ref)}));
  std::string host;
  for (const auto& pbd : pbds.items()) {
    auto rec = s.Call("PBD.get_record", {pbd});
    if (!rec.ok()) continue;
    auto attached = rec->GetBool("currently_attached");
    if (!(attached.ok() && *attached)) continue;
    if (rec->GetString("host") == master) return std::unique_ptr<xapi::HttpClient>();
    if (host.empty()) host = rec->GetString("host");
  }
  if (host.empty() || master.empty()) return std::unique_ptr<xapi::HttpClient>();
  CBT_ASSIGN_OR_RETURN(Value address, s.Call("host.get_address", {Value(host)}));
  CBT_ASSIGN_OR_RETURN(std::string pem, s.HostCertificate(host));
  return s.http().ForHost(address.str(), pem);
}

// The client for the host a redirect names: the pool hands out each host's
// own certificate (host.get_server_certificate), which a user's --ca-cert
// for the master does not cover.
Result<std::unique_ptr<xapi::HttpClient>> FollowRedirect(Session& s, const xapi::HttpClient& from,
                                                         const std::string& location) {
  CBT_ASSIGN_OR_RETURN(auto parts, xapi::SplitUrl(location));
  std::string host = parts.first.substr(parts.first.find("://") + 3);
  if (!host.empty() && host.front() == '[') {
    host = host.substr(1, host.find(']') - 1);
  } else if (host.find(':') != std::string::npos) {
    host = host.substr(0, host.find(':'));
  }
  std::string pem;
  if (auto hosts = s.Call("host.get_all_records"); hosts.ok()) {
    for (const auto& [ref, rec] : hosts->members()) {
      if (rec.GetString("address") != host && rec.GetString("hostname") != host) continue;
      auto cert = s.HostCertificate(ref);
      if (cert.ok()) pem = *cert;
    }
  }
  return from.ForUrl(parts.first, pem);
}

// Streams `src` into VDI `vdi_ref` and waits for the import task.  The host
// that is sent the upload answers 302 when it cannot see the VDI's SR,
// naming one that can (import_raw_vdi.ml, import), and leaves the task to
// that host: the upload starts again there, with the same query.
Status Upload(Session& s, xapi::HttpClient& http, const Options& opt, const std::string& vdi_ref,
              const DiskSource& src, const std::vector<bool>& carry, const std::string& format,
              const std::string& label, DiskResult* r) {
  CBT_ASSIGN_OR_RETURN(Value task, s.Call("task.create", {Value("cbt-backup restore"),
                                                          Value("import of " + label)}));
  struct TaskGuard {
    Session& s;
    std::string t;
    ~TaskGuard() { (void)s.Call("task.destroy", {Value(t)}); }
  } tg{s, task.str()};

  std::string path = "/import_raw_vdi?session_id=" + xapi::UrlEncode(s.ref()) +
                     "&vdi=" + xapi::UrlEncode(vdi_ref) +
                     (format == "raw-chunked" ? "&format=raw&chunked" : "&format=" + format) +
                     "&task_id=" + xapi::UrlEncode(task.str());
  xapi::HttpClient* target = &http;
  std::unique_ptr<xapi::HttpClient> redirected;
  const double t0 = MonotonicSeconds();
  for (int hop = 0;; ++hop) {
    std::unique_ptr<stream::VhdStream> vhd;
    std::unique_ptr<stream::ChunkedRawStream> chunked;
    uint64_t length = src.size();
    if (format == "vhd") {
      CBT_ASSIGN_OR_RETURN(vhd, stream::VhdStream::Create(src, carry));
      length = vhd->length();
      r->blocks_sent = vhd->carried_blocks();
    } else if (format == "raw-chunked") {
      chunked = stream::ChunkedRawStream::Create(src, carry);
      length = chunked->length();
      r->blocks_sent = chunked->carried_blocks();
    } else {
      r->blocks_sent = repo::BlockCount(src.size());
    }
    uint64_t sent = 0;
    Status source_error;
    auto body = [&](char* buf, size_t max) -> int64_t {
      Result<size_t> n = size_t{0};
      if (vhd) {
        n = vhd->Next(buf, max);
      } else if (chunked) {
        n = chunked->Next(buf, max);
      } else if (sent < length) {
        n = src.Read(buf, static_cast<size_t>(std::min<uint64_t>(max, length - sent)), sent);
      }
      if (!n.ok()) {
        source_error = n.status();
        return -1;
      }
      sent += *n;
      if (opt.progress) opt.progress(label, sent, length);
      return static_cast<int64_t>(*n);
    };
    auto resp = target->Put(path, length, body);
    r->bytes_sent = sent;
    if (resp.ok() && resp->status >= 300 && resp->status < 400 && resp->headers.count("location")) {
      if (hop >= 2) return Status::Remote("import_raw_vdi redirected " + label + " too often");
      const std::string location = resp->headers.at("location");
      CBT_ASSIGN_OR_RETURN(redirected, FollowRedirect(s, *target, location));
      CBT_ASSIGN_OR_RETURN(auto parts, xapi::SplitUrl(location));
      path = parts.second;
      target = redirected.get();
      continue;
    }
    if (!source_error.ok()) {
      (void)s.WaitTaskFor(task.str(), kOrphanTaskSeconds);
      return source_error.WithContext("reading the point");
    }
    if (!resp.ok() || resp->status != 200) {
      // The handler may never have touched the task: wait a bounded time for
      // its verdict, which says why better than the transport can.
      auto result = s.WaitTaskFor(task.str(), kOrphanTaskSeconds);
      if (!resp.ok()) {
        if (resp.status().code() == Status::Code::kAborted) return resp.status();
        return Status::IoError("upload of " + label + " was cut after " + std::to_string(sent) +
                               " of " + std::to_string(length) + " bytes (" +
                               resp.status().message() + ")" +
                               (result.ok() ? "" : ": " + result.status().message()));
      }
      return Status::Remote("import_raw_vdi refused the upload of " + label + " (HTTP " +
                            std::to_string(resp->status) + ")" +
                            (result.ok() ? "" : ": " + result.status().message()));
    }
    // Whatever the transport said, the task has the verdict (and the reason).
    auto result = s.WaitTask(task.str());
    r->upload_seconds = MonotonicSeconds() - t0;
    if (!result.ok()) return result.status().WithContext("import of " + label);
    if (sent != length) return Status::IoError("upload of " + label + " ended early");
    return Status::Ok();
  }
}

Result<Value> VdiByUuid(Session& s, const std::string& uuid, const std::string& what) {
  auto ref = s.Call("VDI.get_by_uuid", {Value(uuid)});
  if (!ref.ok() && ref.status().remote_code() == "UUID_INVALID") {
    return Status::NotFound("the server has no VDI " + uuid + " (" + what + ")");
  }
  return ref;
}

// Blocks changed on `target_ref` since the point's snapshot, or a reason why
// they cannot be known.
Result<std::vector<bool>> ChangedSincePoint(Session& s, const repo::DiskRecord& d,
                                            const std::string& target_ref, uint64_t size,
                                            std::string* reason) {
  if (d.snapshot_vdi_uuid.empty()) {
    *reason = "the point does not name its server snapshot";
    return std::vector<bool>();
  }
  auto snap = s.Call("VDI.get_by_uuid", {Value(d.snapshot_vdi_uuid)});
  if (!snap.ok()) {
    *reason = "the server no longer has the CBT metadata of the point's snapshot";
    return std::vector<bool>();
  }
  auto cbt = s.Call("VDI.get_cbt_enabled", {Value(target_ref)});
  auto on = cbt.ok() ? cbt->AsBool() : Result<bool>(false);
  if (!on.ok() || !*on) {
    *reason = "CBT is off on the target disk";
    return std::vector<bool>();
  }
  // The live VDI may be `vdi_to` while it is not attached (a halted VM, as
  // a restore wants): its log then covers every write up to now.  If it is
  // attached, xapi refuses (VDI_IN_USE) and a fresh snapshot closes the live
  // log instead; the snapshot is removed again afterwards (its log merges
  // back into the disk's).
  auto bitmap = s.Call("VDI.list_changed_blocks", {*snap, Value(target_ref)});
  if (!bitmap.ok() && bitmap.status().remote_code() == "VDI_IN_USE") {
    CBT_ASSIGN_OR_RETURN(Value now, s.Call("VDI.snapshot", {Value(target_ref)}));
    bitmap = s.Call("VDI.list_changed_blocks", {*snap, now});
    (void)s.Call("VDI.destroy", {now});
  }
  if (!bitmap.ok()) {
    *reason = "the server cannot list the blocks changed since the point (" +
              bitmap.status().message() + ")";
    return std::vector<bool>();
  }
  CBT_ASSIGN_OR_RETURN(std::string bits, xapi::DecodeCbtBitmap(bitmap->str()));
  if (bits.size() != xapi::CbtBitmapBytes(size)) {
    *reason = "the changed-block bitmap has the wrong length";
    return std::vector<bool>();
  }
  return xapi::BlocksFromBitmap(bits, size);
}

void Log(const Options& opt, const std::string& line) {
  if (opt.log) opt.log(line);
}

// Checks the options, then picks the disks of the point to restore.
Result<std::vector<repo::DiskRecord>> ChooseDisks(const repo::Repository& repo,
                                                  const Options& opt) {
  if (opt.format != "vhd" && opt.format != "raw") {
    return Status::InvalidArgument("--format must be vhd or raw");
  }
  if (!opt.from_file.empty() && opt.disk.empty()) {
    return Status::InvalidArgument("--from-file restores one disk: give --disk VDI-UUID too");
  }
  if (opt.onto_vdi.empty() && opt.sr.empty()) {
    return Status::InvalidArgument("--sr SR-UUID is required to create the restored VDIs");
  }
  CBT_ASSIGN_OR_RETURN(repo::Manifest m, repo.ReadManifest(opt.vm, opt.point));
  std::vector<repo::DiskRecord> disks;
  if (!opt.disk.empty()) {
    const repo::DiskRecord* d = m.FindDisk(opt.disk);
    if (d == nullptr) return Status::NotFound("point " + opt.point + " has no disk " + opt.disk);
    disks.push_back(*d);
  } else if (!opt.onto_vdi.empty()) {
    if (m.disks.size() != 1) {
      return Status::InvalidArgument("the point has " + std::to_string(m.disks.size()) +
                                     " disks: say which one with --disk");
    }
    disks = m.disks;
  } else {
    disks = m.disks;
  }
  if (disks.empty()) return Status::InvalidArgument("the point holds no disks");
  return disks;
}

// Where new VDIs go and where disk uploads are sent.
struct Destination {
  std::string sr_ref;  // --sr, empty without it
  // The --host to stream the disks to; without it, null and each disk goes
  // to a host that sees its target's SR.
  std::unique_ptr<xapi::HttpClient> upload_http;
};

Result<Destination> FindDestination(Session& s, const Options& opt) {
  Destination dest;
  if (!opt.sr.empty()) {
    auto sr = s.Call("SR.get_by_uuid", {Value(opt.sr)});
    if (!sr.ok()) return Status::NotFound("the server has no SR " + opt.sr);
    dest.sr_ref = sr->str();
  }
  // Disk uploads go to the chosen host (one that sees the SR), else to the
  // pool master; the session is valid on every host of the pool.
  if (!opt.host.empty()) {
    auto host = s.Call("host.get_by_uuid", {Value(opt.host)});
    if (!host.ok()) return Status::NotFound("the server has no host " + opt.host);
    CBT_ASSIGN_OR_RETURN(Value address, s.Call("host.get_address", {*host}));
    CBT_ASSIGN_OR_RETURN(dest.upload_http, s.http().ForHost(address.str()));
  }
  return dest;
}

// The bytes of disk `d`: the point's composed image (which the source
// keeps open), or --from-file, which must have the disk's size.
Result<std::unique_ptr<DiskSource>> OpenSource(const repo::Repository& repo, const Options& opt,
                                               const repo::DiskRecord& d) {
  if (opt.from_file.empty()) {
    CBT_ASSIGN_OR_RETURN(auto img, image::ComposedImage::Open(repo, opt.vm, opt.point, d.vdi_uuid));
    return stream::SourceFromImage(img);
  }
  CBT_ASSIGN_OR_RETURN(auto src, stream::SourceFromFile(opt.from_file));
  if (src->size() != d.virtual_size) {
    return Status::InvalidArgument(opt.from_file + " has " + std::to_string(src->size()) +
                                   " bytes, the disk " + std::to_string(d.virtual_size));
  }
  return src;
}

// The VDI a disk is written to.
struct Target {
  std::string ref;
  Value record;      // VDI.get_record
  int64_t size = 0;  // its virtual_size, at least the disk's
  bool is_new = false;
};

// Creates a VDI of `size` bytes on --sr (recorded in `created` at once), or
// finds --onto-vdi; either must hold at least `size` bytes.
Result<Target> CreateOrFindTarget(Session& s, const Options& opt, const repo::DiskRecord& d,
                                  const std::string& sr_ref, uint64_t size, Created& created,
                                  DiskResult* r) {
  Target t;
  t.is_new = opt.onto_vdi.empty();
  if (t.is_new) {
    Value rec = Value::Struct(
        {{"SR", Value(sr_ref)},
         {"virtual_size", Value::Int(static_cast<int64_t>(size))},
         {"type", Value("user")},
         {"sharable", Value::Bool(false)},
         {"read_only", Value::Bool(false)},
         {"other_config", Value::Struct()},
         {"name_label", Value(d.name.empty() ? "restored disk" : d.name)},
         {"name_description", Value("restored by cbt-backup from point " + opt.point)}});
    CBT_ASSIGN_OR_RETURN(Value ref, s.Call("VDI.create", {rec}));
    t.ref = ref.str();
    created.vdis.push_back(t.ref);
  } else {
    CBT_ASSIGN_OR_RETURN(Value ref, VdiByUuid(s, opt.onto_vdi, "--onto-vdi"));
    t.ref = ref.str();
  }
  CBT_ASSIGN_OR_RETURN(t.record, s.Call("VDI.get_record", {Value(t.ref)}));
  r->target_uuid = t.record.GetString("uuid");
  CBT_ASSIGN_OR_RETURN(t.size, t.record.GetInt("virtual_size"));
  // The server may round a new VDI up (2 MiB on VHD SRs); smaller is fatal.
  if (static_cast<uint64_t>(t.size) < size) {
    return Status::InvalidArgument("VDI " + r->target_uuid + " has " + std::to_string(t.size) +
                                   " bytes, the disk needs " + std::to_string(size));
  }
  return t;
}

// The blocks to carry (see the design notes), with the mode in `r` and,
// when changed blocks cannot be used, the reason.
Result<std::vector<bool>> ChooseBlocks(Session& s, const Options& opt, const repo::DiskRecord& d,
                                       const DiskSource& src, const Target& t, DiskResult* r) {
  const uint64_t size = src.size();
  const uint64_t nblocks = repo::BlockCount(size);
  std::vector<bool> carry(nblocks, true);
  r->mode = "full";
  if (t.is_new) {
    for (uint64_t b = 0; b < nblocks; ++b) carry[b] = src.MayHoldData(b);
  } else if (opt.onto_vdi == d.vdi_uuid) {
    std::string reason;
    CBT_ASSIGN_OR_RETURN(auto changed, ChangedSincePoint(s, d, t.ref, size, &reason));
    if (reason.empty()) {
      carry = std::move(changed);
      r->mode = "changed-blocks";
    } else {
      r->reason = reason;
      Log(opt, "disk " + d.vdi_uuid + ": full write: " + reason);
    }
  } else {
    r->reason = "the target is not the VDI the point was taken from";
  }
  return carry;
}

// --verify: the server's MD5 of the written VDI against the source's.
Status VerifyDisk(Session& s, const repo::DiskRecord& d, const DiskSource& src, const Target& t,
                  DiskResult* r) {
  if (!t.is_new && static_cast<uint64_t>(t.size) != src.size()) {
    r->verify = "skipped: the target VDI is larger than the disk";
    return Status::Ok();
  }
  auto remote = s.CallAsync("VDI.checksum", {Value(t.ref)});
  if (!remote.ok()) return remote.status().WithContext("verify");
  CBT_ASSIGN_OR_RETURN(std::string local, Md5Of(src, static_cast<uint64_t>(t.size)));
  if (local != remote->str()) {
    return Status::Corruption("verify failed for disk " + d.vdi_uuid + ": server MD5 " +
                              remote->str() + ", point MD5 " + local);
  }
  r->verify = "ok";
  return Status::Ok();
}

// One disk of the point, from its source into its target VDI.
Result<DiskResult> RestoreDisk(Session& s, const repo::Repository& repo, const Options& opt,
                               const repo::DiskRecord& d, const Destination& dest,
                               Created& created) {
  const double td = MonotonicSeconds();
  DiskResult r;
  r.vdi_uuid = d.vdi_uuid;
  CBT_ASSIGN_OR_RETURN(std::unique_ptr<DiskSource> src, OpenSource(repo, opt, d));
  CBT_ASSIGN_OR_RETURN(Target target,
                       CreateOrFindTarget(s, opt, d, dest.sr_ref, src->size(), created, &r));
  CBT_ASSIGN_OR_RETURN(std::vector<bool> carry, ChooseBlocks(s, opt, d, *src, target, &r));
  // Changed blocks travel as a VHD (whole 2 MiB blocks, only the changed
  // sectors' bits set), or with --format raw in xapi's chunked framing
  // (exactly the changed 64 KiB blocks).
  const std::string format =
      r.mode == "changed-blocks" ? (opt.format == "raw" ? "raw-chunked" : "vhd") : opt.format;
  Log(opt, "restoring disk " + d.vdi_uuid + " into VDI " + r.target_uuid + " (" + r.mode + ", " +
               format + ")");
  // Without --host, the disk goes to a host that sees the target's SR.
  std::unique_ptr<xapi::HttpClient> sr_http;
  if (!dest.upload_http) {
    CBT_ASSIGN_OR_RETURN(sr_http, UploadClientForSr(s, target.record.GetString("SR")));
  }
  xapi::HttpClient& to = dest.upload_http ? *dest.upload_http : sr_http ? *sr_http : s.http();
  CBT_RETURN_IF_ERROR(Upload(s, to, opt, target.ref, *src, carry, format, d.vdi_uuid, &r));
  if (opt.verify) {
    CBT_RETURN_IF_ERROR(VerifyDisk(s, d, *src, target, &r));
  }
  r.seconds = MonotonicSeconds() - td;
  return r;
}

// The point's VM metadata as it is imported: a point taken while the VM was
// suspended is rewritten to a halted VM (vm_metadata.h), with a note.
Result<std::string> MetadataToImport(const repo::Repository& repo, const Options& opt,
                                     Report* report) {
  CBT_ASSIGN_OR_RETURN(std::string stored,
                       ReadFile(JoinPath(repo.PointPath(opt.vm, opt.point), repo::kMetadataFile)));
  if (stored.empty()) {
    return Status::InvalidArgument("point " + opt.point +
                                   " holds no VM metadata; restore its disks with --disk");
  }
  CBT_ASSIGN_OR_RETURN(HaltedMetadata halted, MakeHalted(stored));
  if (halted.was_suspended) {
    report->notes.push_back(
        "the point was taken while the VM was suspended: it is restored "
        "halted (a point holds no memory image), and boots from its disks");
    Log(opt, report->notes.back());
  }
  return std::move(halted.archive);
}

// Recreates the VM with PUT /import_metadata, its disks mapped to the VDIs
// of report->disks; the new VM is recorded in `created`.
Status ImportVm(Session& s, const repo::Repository& repo, const Options& opt, Created& created,
                Report* report) {
  CBT_ASSIGN_OR_RETURN(const std::string metadata, MetadataToImport(repo, opt, report));
  CBT_ASSIGN_OR_RETURN(Value task, s.Call("task.create", {Value("cbt-backup restore"),
                                                          Value("import of VM metadata")}));
  std::string path = "/import_metadata?session_id=" + xapi::UrlEncode(s.ref()) +
                     "&task_id=" + xapi::UrlEncode(task.str());
  for (const auto& r : report->disks) path += "&vdi:" + r.vdi_uuid + "=" + r.target_uuid;
  size_t pos = 0;
  auto resp = s.http().Put(path, metadata.size(), [&](char* buf, size_t max) -> int64_t {
    size_t n = std::min(max, metadata.size() - pos);
    std::memcpy(buf, metadata.data() + pos, n);
    pos += n;
    return static_cast<int64_t>(n);
  });
  auto result = resp.ok() && resp->status == 200 ? s.WaitTask(task.str())
                                                 : s.WaitTaskFor(task.str(), kOrphanTaskSeconds);
  (void)s.Call("task.destroy", {Value(task.str())});
  if (!resp.ok()) return resp.status().WithContext("import_metadata");
  if (!result.ok()) return result.status().WithContext("import_metadata");
  if (result->items().empty()) return Status::Remote("import_metadata created no VM");
  created.vm = result->items()[0].str();
  CBT_ASSIGN_OR_RETURN(Value uuid, s.Call("VM.get_uuid", {Value(created.vm)}));
  report->new_vm_uuid = uuid.str();
  return Status::Ok();
}

}  // namespace

Result<Report> Run(Session& s, const repo::Repository& repo, const Options& opt) {
  const double t0 = MonotonicSeconds();
  const bool whole_vm = opt.disk.empty() && opt.onto_vdi.empty();
  CBT_ASSIGN_OR_RETURN(std::vector<repo::DiskRecord> disks, ChooseDisks(repo, opt));
  CBT_ASSIGN_OR_RETURN(Destination dest, FindDestination(s, opt));

  Report report;
  Created created{s, {}, "", false};
  for (const auto& d : disks) {
    CBT_ASSIGN_OR_RETURN(DiskResult r, RestoreDisk(s, repo, opt, d, dest, created));
    report.disks.push_back(std::move(r));
  }
  if (whole_vm) {
    CBT_RETURN_IF_ERROR(ImportVm(s, repo, opt, created, &report));
  }
  created.keep = true;
  report.seconds = MonotonicSeconds() - t0;
  return report;
}

}  // namespace cbt::restore
