// SPDX-License-Identifier: Apache-2.0
//
// Design notes.  Partition tables and LVM2 metadata are parsed here rather
// than with libblkid or the LVM tools: both need a block device (or at least
// a file descriptor) to probe, and inside cbtfs a disk exists only as a
// composed image in memory; attaching it as a device is exactly what this
// feature avoids.  The formats are small and stable (MBR, UEFI GPT, the LVM2
// label, metadata area and text format); the parsers check every offset
// against the device size before reading, and are fuzzed.  The tests use the
// real tools (sfdisk, sgdisk, pvcreate, lvcreate, blkid) as the oracle.
#include "image/volumes.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <optional>
#include <set>

namespace cbt::image {

namespace {

constexpr uint64_t kSector = 512;

uint32_t Le32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}
uint64_t Le64(const unsigned char* p) {
  return static_cast<uint64_t>(Le32(p)) | static_cast<uint64_t>(Le32(p + 4)) << 32;
}

uint32_t Crc32(const unsigned char* p, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

// Reads [off, off+len) if it lies inside a device of `size` bytes.
bool ReadIn(const ReadAt& read, uint64_t size, uint64_t off, void* buf, size_t len) {
  if (off > size || len > size - off) return false;
  return read(off, buf, len).ok();
}

std::string Hex2(unsigned v) {
  static const char* d = "0123456789abcdef";
  return std::string("0x") + d[(v >> 4) & 15] + d[v & 15];
}

std::string Guid(const unsigned char* g) {
  // Mixed-endian text form of a GPT GUID.
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", Le32(g),
                g[4] | g[5] << 8, g[6] | g[7] << 8, g[8], g[9], g[10], g[11], g[12], g[13], g[14],
                g[15]);
  return buf;
}

std::string Utf16Name(const unsigned char* p, size_t bytes) {
  std::string out;
  for (size_t i = 0; i + 1 < bytes; i += 2) {
    uint32_t c = p[i] | p[i + 1] << 8;
    if (c == 0) break;
    if (c >= 0xd800 && c < 0xdc00 && i + 3 < bytes) {
      uint32_t lo = p[i + 2] | p[i + 3] << 8;
      if (lo >= 0xdc00 && lo < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
        i += 2;
      }
    }
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (c < 0x800) {
      out += static_cast<char>(0xc0 | c >> 6);
      out += static_cast<char>(0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
      out += static_cast<char>(0xe0 | c >> 12);
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (c & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | c >> 18);
      out += static_cast<char>(0x80 | ((c >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (c & 0x3f));
    }
  }
  return out;
}

// GPT at header LBA `lba`; nullopt if the header or its entries are damaged.
std::optional<std::vector<Partition>> ReadGpt(const ReadAt& read, uint64_t size, uint64_t lba,
                                              std::string* why) {
  unsigned char h[kSector];
  if (!ReadIn(read, size, lba * kSector, h, sizeof h)) {
    *why = "GPT header unreadable";
    return std::nullopt;
  }
  if (std::memcmp(h, "EFI PART", 8) != 0) {
    *why = "no GPT header at sector " + std::to_string(lba);
    return std::nullopt;
  }
  const uint32_t header_size = Le32(h + 12);
  if (header_size < 92 || header_size > kSector) {
    *why = "GPT header size invalid";
    return std::nullopt;
  }
  unsigned char copy[kSector];
  std::memcpy(copy, h, header_size);
  std::memset(copy + 16, 0, 4);
  if (Crc32(copy, header_size) != Le32(h + 16)) {
    *why = "GPT header checksum mismatch at sector " + std::to_string(lba);
    return std::nullopt;
  }
  const uint64_t first_usable = Le64(h + 40), last_usable = Le64(h + 48);
  const uint64_t entries_lba = Le64(h + 72);
  const uint32_t count = Le32(h + 80), entry_size = Le32(h + 84), entries_crc = Le32(h + 88);
  if (entry_size < 128 || entry_size % 8 != 0 || entry_size > 4096 || count > 4096) {
    *why = "GPT entry array geometry invalid";
    return std::nullopt;
  }
  std::vector<unsigned char> arr(static_cast<size_t>(count) * entry_size);
  if (entries_lba > size / kSector ||
      !ReadIn(read, size, entries_lba * kSector, arr.data(), arr.size())) {
    *why = "GPT entry array outside the disk";
    return std::nullopt;
  }
  if (Crc32(arr.data(), arr.size()) != entries_crc) {
    *why = "GPT entry array checksum mismatch";
    return std::nullopt;
  }
  std::vector<Partition> parts;
  static const unsigned char kZero[16] = {};
  for (uint32_t i = 0; i < count; ++i) {
    const unsigned char* e = arr.data() + static_cast<size_t>(i) * entry_size;
    if (std::memcmp(e, kZero, 16) == 0) continue;
    const uint64_t first = Le64(e + 32), last = Le64(e + 40);
    if (first > last || first < first_usable || last > last_usable || last >= size / kSector) {
      *why = "GPT entry " + std::to_string(i + 1) + " lies outside the disk";
      return std::nullopt;
    }
    Partition p;
    p.number = static_cast<int>(i) + 1;
    p.offset = first * kSector;
    p.length = (last - first + 1) * kSector;
    p.type = Guid(e);
    p.label = Utf16Name(e + 56, std::min<size_t>(72, entry_size - 56));
    parts.push_back(std::move(p));
  }
  return parts;
}

bool IsExtended(unsigned type) { return type == 0x05 || type == 0x0f || type == 0x85; }

}  // namespace

uint64_t Volume::size() const {
  uint64_t s = 0;
  for (const auto& g : segments) s += g.length;
  return s;
}

PartitionTable ReadPartitionTable(const ReadAt& read, uint64_t disk_size) {
  PartitionTable t;
  unsigned char mbr[kSector];
  if (!ReadIn(read, disk_size, 0, mbr, sizeof mbr)) return t;
  if (mbr[510] != 0x55 || mbr[511] != 0xaa) {
    // No MBR signature: a GPT still needs its protective MBR, so there is
    // no partition table.
    return t;
  }
  bool protective = false;
  for (int i = 0; i < 4; ++i) protective |= mbr[446 + 16 * i + 4] == 0xee;
  if (protective) {
    t.scheme = "gpt";
    std::string why;
    auto parts = ReadGpt(read, disk_size, 1, &why);
    if (!parts) {
      const std::string primary = why;
      parts = ReadGpt(read, disk_size, disk_size / kSector - 1, &why);
      if (parts) {
        t.notes.push_back("primary GPT damaged (" + primary + "); used the backup GPT");
      } else {
        t.notes.push_back("GPT damaged: " + primary + "; backup: " + why);
        return t;
      }
    }
    t.partitions = std::move(*parts);
    return t;
  }
  // A FAT or NTFS boot sector also ends in 55 AA; its "entries" then fail
  // the checks below and the disk is treated as unpartitioned.
  const uint64_t sectors = disk_size / kSector;
  std::vector<Partition> parts;
  uint64_t ext_start = 0, ext_len = 0;
  for (int i = 0; i < 4; ++i) {
    const unsigned char* e = mbr + 446 + 16 * i;
    const unsigned type = e[4];
    const uint64_t start = Le32(e + 8), count = Le32(e + 12);
    if (type == 0 || count == 0) continue;
    if ((e[0] != 0 && e[0] != 0x80) || start == 0 || start + count > sectors) {
      t.notes.push_back("MBR entry " + std::to_string(i + 1) +
                        " is invalid; partition table ignored");
      return t;
    }
    if (IsExtended(type)) {
      if (ext_len != 0) {
        t.notes.push_back("MBR has two extended partitions; logical partitions ignored");
        continue;
      }
      ext_start = start;
      ext_len = count;
      continue;
    }
    parts.push_back({i + 1, start * kSector, count * kSector, "", Hex2(type)});
  }
  t.scheme = "dos";
  // Logical partitions: a chain of EBRs inside the extended partition.
  uint64_t ebr = ext_start;
  std::set<uint64_t> seen;
  for (int n = 5; ext_len != 0 && n < 5 + 256; ++n) {
    unsigned char b[kSector];
    if (!seen.insert(ebr).second || ebr < ext_start || ebr >= ext_start + ext_len ||
        !ReadIn(read, disk_size, ebr * kSector, b, sizeof b) || b[510] != 0x55 || b[511] != 0xaa) {
      t.notes.push_back("extended partition chain damaged at logical partition " +
                        std::to_string(n) + "; later logical partitions ignored");
      break;
    }
    const unsigned char* e = b + 446;
    const uint64_t start = ebr + Le32(e + 8), count = Le32(e + 12);
    if (e[4] != 0 && count != 0) {
      if (start + count > ext_start + ext_len || start <= ebr) {
        t.notes.push_back("logical partition " + std::to_string(n) +
                          " lies outside its extended partition; ignored");
      } else {
        parts.push_back({n, start * kSector, count * kSector, "", Hex2(e[4])});
      }
    }
    const unsigned char* next = b + 446 + 16;
    if (next[4] == 0 || Le32(next + 12) == 0) break;
    ebr = ext_start + Le32(next + 8);
  }
  t.partitions = std::move(parts);
  return t;
}

// ---- LVM2 text metadata ---------------------------------------------------

namespace {

struct CfgValue {
  enum Kind { kString, kNumber, kArray } kind = kString;
  std::string str;
  int64_t num = 0;
  std::vector<CfgValue> items;
};

struct CfgSection;

struct CfgNode {
  std::map<std::string, CfgValue> values;
  std::vector<CfgSection> sections;  // in file order
  const CfgNode* Section(const std::string& name) const;
};

struct CfgSection {
  std::string name;
  CfgNode node;
};

const CfgNode* CfgNode::Section(const std::string& name) const {
  for (const auto& s : sections) {
    if (s.name == name) return &s.node;
  }
  return nullptr;
}

class CfgParser {
 public:
  explicit CfgParser(const std::string& text) : t_(text) {}

  Result<CfgNode> Parse() {
    CfgNode root;
    CBT_RETURN_IF_ERROR(Body(&root, 0));
    if (pos_ < t_.size()) return Error("unexpected '}'");
    return root;
  }

 private:
  Status Error(const std::string& what) const {
    int line =
        1 + static_cast<int>(std::count(
                t_.begin(), t_.begin() + static_cast<long>(std::min(pos_, t_.size())), '\n'));
    return Status::Corruption("LVM metadata line " + std::to_string(line) + ": " + what);
  }
  void Skip() {
    while (pos_ < t_.size()) {
      char c = t_[pos_];
      if (c == '#') {
        while (pos_ < t_.size() && t_[pos_] != '\n') ++pos_;
      } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\0') {
        ++pos_;
      } else {
        break;
      }
    }
  }
  static bool IdentChar(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-' ||
           c == '+' || c == '/';
  }
  Status Body(CfgNode* node, int depth) {
    if (depth > 32) return Error("nested too deeply");
    while (true) {
      Skip();
      if (pos_ >= t_.size() || t_[pos_] == '}') return Status::Ok();
      size_t start = pos_;
      while (pos_ < t_.size() && IdentChar(t_[pos_])) ++pos_;
      if (pos_ == start) return Error("expected a name");
      std::string name = t_.substr(start, pos_ - start);
      Skip();
      if (pos_ >= t_.size()) return Error("unexpected end");
      if (t_[pos_] == '{') {
        ++pos_;
        CfgNode child;
        CBT_RETURN_IF_ERROR(Body(&child, depth + 1));
        if (pos_ >= t_.size() || t_[pos_] != '}') return Error("missing '}'");
        ++pos_;
        node->sections.push_back(CfgSection{std::move(name), std::move(child)});
      } else if (t_[pos_] == '=') {
        ++pos_;
        CfgValue v;
        CBT_RETURN_IF_ERROR(Value(&v, true));
        node->values[name] = std::move(v);
      } else {
        return Error("expected '=' or '{' after " + name);
      }
    }
  }
  Status Value(CfgValue* v, bool allow_array) {
    Skip();
    if (pos_ >= t_.size()) return Error("missing value");
    char c = t_[pos_];
    if (c == '"') {
      ++pos_;
      v->kind = CfgValue::kString;
      while (pos_ < t_.size() && t_[pos_] != '"') {
        if (t_[pos_] == '\\' && pos_ + 1 < t_.size()) ++pos_;
        v->str += t_[pos_++];
      }
      if (pos_ >= t_.size()) return Error("unterminated string");
      ++pos_;
      return Status::Ok();
    }
    if (c == '[' && allow_array) {
      ++pos_;
      v->kind = CfgValue::kArray;
      Skip();
      if (pos_ < t_.size() && t_[pos_] == ']') {
        ++pos_;
        return Status::Ok();
      }
      while (true) {
        CfgValue item;
        CBT_RETURN_IF_ERROR(Value(&item, false));
        v->items.push_back(std::move(item));
        if (v->items.size() > 100000) return Error("array too long");
        Skip();
        if (pos_ < t_.size() && t_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < t_.size() && t_[pos_] == ']') {
          ++pos_;
          return Status::Ok();
        }
        return Error("expected ',' or ']'");
      }
    }
    if (c == '-' || std::isdigit(static_cast<unsigned char>(c))) {
      size_t start = pos_;
      ++pos_;
      while (pos_ < t_.size() &&
             (std::isdigit(static_cast<unsigned char>(t_[pos_])) || t_[pos_] == '.'))
        ++pos_;
      std::string num = t_.substr(start, pos_ - start);
      v->kind = CfgValue::kNumber;
      if (num.find('.') != std::string::npos) return Status::Ok();  // floats: unused here
      // from_chars, not stoll: a number out of range is damage, not an exception.
      auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), v->num);
      if (ec != std::errc() || end != num.data() + num.size()) return Error("bad number " + num);
      return Status::Ok();
    }
    return Error("bad value");
  }

  const std::string& t_;
  size_t pos_ = 0;
};

Result<uint64_t> Count(const CfgNode& n, const std::string& key, const std::string& where) {
  auto it = n.values.find(key);
  if (it == n.values.end() || it->second.kind != CfgValue::kNumber || it->second.num < 0) {
    return Status::Corruption("LVM metadata: " + where + " has no valid " + key);
  }
  return static_cast<uint64_t>(it->second.num);
}

std::string Str(const CfgNode& n, const std::string& key) {
  auto it = n.values.find(key);
  return it != n.values.end() && it->second.kind == CfgValue::kString ? it->second.str : "";
}

}  // namespace

Result<LvmVg> ParseLvmMetadata(const std::string& text) {
  CBT_ASSIGN_OR_RETURN(CfgNode root, CfgParser(text).Parse());
  const CfgNode* vgn = nullptr;
  LvmVg vg;
  for (const auto& [name, sec] : root.sections) {
    if (sec.Section("physical_volumes") != nullptr || sec.values.count("extent_size")) {
      vg.name = name;
      vgn = &sec;
      break;
    }
  }
  if (vgn == nullptr) return Status::Corruption("LVM metadata: no volume group");
  vg.id = Str(*vgn, "id");
  CBT_ASSIGN_OR_RETURN(vg.seqno, Count(*vgn, "seqno", "VG " + vg.name));
  CBT_ASSIGN_OR_RETURN(vg.extent_size, Count(*vgn, "extent_size", "VG " + vg.name));
  if (vg.extent_size == 0) return Status::Corruption("LVM metadata: extent_size is 0");
  if (const CfgNode* pvs = vgn->Section("physical_volumes")) {
    for (const auto& [name, pvn] : pvs->sections) {
      LvmVg::Pv pv;
      for (char c : Str(pvn, "id")) {
        if (c != '-') pv.id += c;
      }
      CBT_ASSIGN_OR_RETURN(pv.pe_start, Count(pvn, "pe_start", "PV " + name));
      vg.pvs[name] = pv;
    }
  }
  if (const CfgNode* lvs = vgn->Section("logical_volumes")) {
    for (const auto& [name, lvn] : lvs->sections) {
      LvmVg::Lv lv;
      lv.name = name;
      auto st = lvn.values.find("status");
      if (st != lvn.values.end()) {
        for (const auto& f : st->second.items) lv.visible |= f.str == "VISIBLE";
      }
      for (const auto& [sname, seg] : lvn.sections) {
        if (sname.rfind("segment", 0) != 0) continue;
        LvmVg::LvSegment s;
        CBT_ASSIGN_OR_RETURN(s.start_extent, Count(seg, "start_extent", "LV " + name));
        CBT_ASSIGN_OR_RETURN(s.extent_count, Count(seg, "extent_count", "LV " + name));
        s.type = Str(seg, "type");
        auto sc = seg.values.find("stripe_count");
        s.stripe_count =
            sc != seg.values.end() && sc->second.kind == CfgValue::kNumber && sc->second.num > 0
                ? static_cast<uint64_t>(sc->second.num)
                : 0;
        auto stripes = seg.values.find("stripes");
        if (stripes != seg.values.end() && stripes->second.items.size() >= 2 &&
            stripes->second.items[0].kind == CfgValue::kString &&
            stripes->second.items[1].kind == CfgValue::kNumber &&
            stripes->second.items[1].num >= 0) {
          s.pv = stripes->second.items[0].str;
          s.pv_start_extent = static_cast<uint64_t>(stripes->second.items[1].num);
        }
        lv.segments.push_back(std::move(s));
      }
      std::sort(lv.segments.begin(), lv.segments.end(),
                [](const auto& a, const auto& b) { return a.start_extent < b.start_extent; });
      vg.lvs.push_back(std::move(lv));
    }
  }
  return vg;
}

std::optional<LvmPv> ReadLvmPv(const ReadAt& read, const std::string& vdi, uint64_t offset,
                               uint64_t size, std::vector<std::string>* notes) {
  const std::string where = "disk " + vdi + " at offset " + std::to_string(offset);
  for (uint64_t s = 0; s < 4; ++s) {
    unsigned char b[kSector];
    if (!ReadIn(read, size, s * kSector, b, sizeof b)) return std::nullopt;
    if (std::memcmp(b, "LABELONE", 8) != 0 || std::memcmp(b + 24, "LVM2 001", 8) != 0) continue;
    const uint32_t off = Le32(b + 20);
    if (off < 32 || off > kSector - 40) {  // no uint32 overflow: off comes from the disk
      notes->push_back("LVM label damaged on " + where);
      return std::nullopt;
    }
    LvmPv pv;
    pv.id.assign(reinterpret_cast<const char*>(b + off), 32);
    pv.vdi = vdi;
    pv.offset = offset;
    pv.size = size;
    // Data areas, then metadata areas, each list ended by a zero entry.
    size_t p = off + 40;
    auto next = [&](uint64_t* a, uint64_t* l) {
      if (p + 16 > kSector) return false;
      *a = Le64(b + p);
      *l = Le64(b + p + 8);
      p += 16;
      return *a != 0 || *l != 0;
    };
    uint64_t a = 0, l = 0;
    while (next(&a, &l)) {
    }
    std::vector<std::pair<uint64_t, uint64_t>> mdas;
    while (next(&a, &l)) mdas.emplace_back(a, l);
    for (const auto& [mda_off, mda_len] : mdas) {
      unsigned char h[kSector];
      if (!ReadIn(read, size, mda_off, h, sizeof h) ||
          std::memcmp(h + 4, " LVM2 x[5A%r0N*>", 16) != 0) {
        notes->push_back("LVM metadata area damaged on " + where);
        continue;
      }
      const uint64_t start = Le64(h + 24), len = Le64(h + 32);
      if (start != mda_off || len != mda_len || len < 2 * kSector) {
        notes->push_back("LVM metadata area header inconsistent on " + where);
        continue;
      }
      const uint64_t text_off = Le64(h + 40), text_len = Le64(h + 48);
      if (text_len == 0 || text_len > (16u << 20) || text_off < kSector || text_off >= len ||
          text_len > len - kSector) {
        notes->push_back("LVM metadata location invalid on " + where);
        continue;
      }
      std::string text(text_len, '\0');
      const uint64_t first = std::min(text_len, len - text_off);
      bool ok = ReadIn(read, size, start + text_off, text.data(), first);
      // The metadata area is a ring after its 512-byte header.
      if (ok && first < text_len) {
        ok = ReadIn(read, size, start + kSector, text.data() + first, text_len - first);
      }
      if (!ok) {
        notes->push_back("LVM metadata unreadable on " + where);
        continue;
      }
      pv.metadata = text.c_str();  // stop at a NUL terminator
      break;
    }
    return pv;
  }
  return std::nullopt;
}

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
      std::string path = vdi + ".part" + std::to_string(p.number);
      const std::string label = SafeName(p.label);
      if (!label.empty()) path += "-" + label;
      out.volumes.push_back({path + ".raw",
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
    // Two VGs of one name (from two cloned guests): tell them apart by id.
    const std::string dir = "lvm/" + SafeName(vg.name) +
                            (name_uses[vg.name] > 1 ? "-" + SafeName(id.substr(0, 6)) : "");
    for (const auto& lv : vg.lvs) {
      const std::string what = "LV " + vg.name + "/" + lv.name;
      if (!lv.visible) continue;  // internal volumes (pool data, mirror legs)
      Volume v{dir + "/" + SafeName(lv.name) + ".raw", "", {}};
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
        const uint64_t es = vg.extent_size * kSector;
        const uint64_t start = pvit->second.pe_start * kSector + s.pv_start_extent * es;
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
