// SPDX-License-Identifier: Apache-2.0
//
// FindVolumes, VolumeImage and the file names of image/volumes.h: turns the
// partition tables (image/partitions.h) and LVM2 physical volumes
// (image/lvm.h) of a point's disks into the files cbtfs shows, and reads
// them through the composed disks.  Of the LVs only linear ones (single-
// stripe segments, contiguous, on PVs of this point) are shown; thin,
// striped, mirrored and incomplete ones are a note in point.txt instead.
#include "image/volumes.h"

#include "image/lvm.h"
#include "image/partitions.h"
#include "image/read_at.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <set>
#include <utility>

namespace cbt::image {

namespace {

std::string SafeName(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    out += (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '+') ? static_cast<char>(c)
                                                                             : '_';
  }
  while (!out.empty() && out[0] == '.') out.erase(0, 1);
  return out.substr(0, 64);
}

}  // namespace

std::string DiskFileName(const std::string& vdi) { return vdi + kRawSuffix; }

std::string PartitionFileName(const std::string& vdi, int number, const std::string& label) {
  std::string path = vdi + ".part" + std::to_string(number);
  const std::string safe = SafeName(label);
  if (!safe.empty()) path += "-" + safe;
  return path + kRawSuffix;
}

std::string LvFileName(const std::string& vg_name, const std::string& vg_id, bool vg_name_shared,
                       const std::string& lv_name) {
  const std::string vg_dir =
      SafeName(vg_name) + (vg_name_shared ? "-" + SafeName(vg_id.substr(0, 6)) : "");
  return std::string(kLvmDir) + "/" + vg_dir + "/" + SafeName(lv_name) + kRawSuffix;
}

Result<std::vector<ProbeFile>> FilesToProbe(const ListPointDir& list) {
  CBT_ASSIGN_OR_RETURN(std::vector<std::string> top, list(""));
  // A disk with partition files is probed through them, not as a whole:
  // the part of a PartitionFileName before ".part" is the disk's VDI.
  std::set<std::string> partitioned;
  for (const auto& n : top) {
    const auto dot = n.find(".part");
    if (dot != std::string::npos) partitioned.insert(n.substr(0, dot));
  }
  std::vector<std::string> paths;
  for (const auto& n : top) {
    if (!n.ends_with(kRawSuffix)) continue;
    if (partitioned.count(n.substr(0, n.size() - std::strlen(kRawSuffix)))) continue;
    paths.push_back(n);
  }
  if (auto vgs = list(kLvmDir); vgs.ok()) {
    for (const auto& vg : *vgs) {
      const std::string vg_dir = std::string(kLvmDir) + "/" + vg;
      auto lvs = list(vg_dir);
      if (!lvs.ok()) continue;
      for (const auto& lv : *lvs) {
        if (lv.ends_with(kRawSuffix)) paths.push_back(vg_dir + "/" + lv);
      }
    }
  }
  std::vector<ProbeFile> out;
  for (auto& path : paths) {
    std::string stem = path.substr(0, path.size() - std::strlen(kRawSuffix));
    std::replace(stem.begin(), stem.end(), '/', '-');
    out.push_back({std::move(path), std::move(stem)});
  }
  return out;
}

uint64_t Volume::size() const {
  uint64_t s = 0;
  for (const auto& g : segments) s += g.length;
  return s;
}

PointVolumes FindVolumes(const std::map<std::string, std::shared_ptr<const ComposedImage>>& disks) {
  PointVolumes out;
  std::vector<LvmPv> pvs;
  for (const auto& disk : disks) {
    const std::string& vdi = disk.first;
    const auto& img = disk.second;
    ReadAt whole = [img = img](uint64_t off, void* buf, size_t len) -> Status {
      CBT_ASSIGN_OR_RETURN(size_t n, img->Read(buf, len, off));
      if (n != len) return Status::Corruption("read past the end of the disk");
      return Status::Ok();
    };
    PartitionTable t = ReadPartitionTable(whole, img->size());
    for (const auto& n : t.notes) out.notes.push_back("disk " + vdi + ": " + n);
    auto scan_pv = [&](uint64_t offset, uint64_t size) {
      ReadAt sub = [whole, offset](uint64_t off, void* buf, size_t len) {
        return whole(offset + off, buf, len);
      };
      auto pv = ReadLvmPv(sub, vdi, offset, size, &out.notes);
      if (pv) pvs.push_back(std::move(*pv));
    };
    if (t.scheme.empty()) {
      scan_pv(0, img->size());
      continue;
    }
    for (const auto& p : t.partitions) {
      out.volumes.push_back({PartitionFileName(vdi, p.number, p.label),
                             t.scheme + " partition " + std::to_string(p.number) +
                                 (p.label.empty() ? "" : " \"" + p.label + "\"") + ", type " +
                                 p.type,
                             {{vdi, p.offset, p.length}}});
      scan_pv(p.offset, p.length);
    }
  }
  // Volume groups: the newest metadata (highest seqno) of each VG id.
  std::map<std::string, LvmVg> vgs;
  for (const auto& pv : pvs) {
    if (pv.metadata.empty()) continue;
    auto vg = ParseLvmMetadata(pv.metadata);
    if (!vg.ok()) {
      out.notes.push_back("disk " + pv.vdi + ": " + vg.status().message());
      continue;
    }
    auto it = vgs.find(vg->id);
    if (it == vgs.end() || it->second.seqno < vg->seqno) vgs[vg->id] = std::move(*vg);
  }
  std::map<std::string, int> name_uses;
  for (const auto& [id, vg] : vgs) ++name_uses[vg.name];
  for (const auto& [id, vg] : vgs) {
    for (const auto& lv : vg.lvs) {
      const std::string what = "LV " + vg.name + "/" + lv.name;
      if (!lv.visible) continue;  // internal volumes (pool data, mirror legs)
      Volume v{LvFileName(vg.name, id, name_uses[vg.name] > 1, lv.name), "", {}};
      std::string why;
      uint64_t expect = 0;
      for (const auto& s : lv.segments) {
        if (s.type != "striped" || s.stripe_count != 1) {
          why = "segment type " + s.type +
                (s.stripe_count > 1 ? " with " + std::to_string(s.stripe_count) + " stripes" : "");
          break;
        }
        if (s.start_extent != expect) {
          why = "segments are not contiguous";
          break;
        }
        auto pvit = vg.pvs.find(s.pv);
        const LvmPv* dev = nullptr;
        if (pvit != vg.pvs.end()) {
          for (const auto& p : pvs) {
            if (p.id == pvit->second.id) dev = &p;
          }
        }
        if (dev == nullptr) {
          why = "its physical volume " + s.pv + " is not in this point";
          break;
        }
        const uint64_t es = vg.extent_size * kSectorSize;
        const uint64_t start = pvit->second.pe_start * kSectorSize + s.pv_start_extent * es;
        const uint64_t len = s.extent_count * es;
        if (s.extent_count > (uint64_t{1} << 40) / vg.extent_size || start > dev->size ||
            len > dev->size - start) {
          why = "a segment lies outside its physical volume";
          break;
        }
        v.segments.push_back({dev->vdi, dev->offset + start, len});
        expect += s.extent_count;
      }
      if (v.segments.empty() && why.empty()) why = "it has no segments";
      if (!why.empty()) {
        out.notes.push_back(what + " not shown (unsupported: " + why + ")");
        continue;
      }
      v.description = "LVM2 linear volume " + vg.name + "/" + lv.name + ", " +
                      std::to_string(v.segments.size()) + " segment(s)";
      out.volumes.push_back(std::move(v));
    }
  }
  return out;
}

VolumeImage::VolumeImage(Volume volume,
                         std::map<std::string, std::shared_ptr<const ComposedImage>> disks)
    : volume_(std::move(volume)), disks_(std::move(disks)), size_(volume_.size()) {}

Result<size_t> VolumeImage::Read(void* buf, size_t len, uint64_t off) const {
  if (off >= size_) return size_t{0};
  const uint64_t end = std::min<uint64_t>(off + len, size_);
  auto* out = static_cast<char*>(buf);
  uint64_t seg_start = 0;
  for (const auto& s : volume_.segments) {
    const uint64_t seg_end = seg_start + s.length;
    if (off < seg_end && end > seg_start) {
      const uint64_t from = std::max(off, seg_start), to = std::min(end, seg_end);
      auto it = disks_.find(s.vdi);
      if (it == disks_.end()) return Status::NotFound("disk " + s.vdi + " of a volume is missing");
      CBT_ASSIGN_OR_RETURN(
          size_t n, it->second->Read(out + (from - off), to - from, s.offset + (from - seg_start)));
      if (n != to - from) return Status::Corruption("volume extends past its disk");
    }
    seg_start = seg_end;
  }
  return static_cast<size_t>(end - off);
}

}  // namespace cbt::image
