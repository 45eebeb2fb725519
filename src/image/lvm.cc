// SPDX-License-Identifier: Apache-2.0
//
// The LVM2 label reader and text metadata parser of image/lvm.h.  They are
// written here rather than taken from liblvm2 or the LVM tools, which work on
// block devices and activate what they find; the formats (label, metadata
// area header, the text format of /etc/lvm/backup) are small and stable.
// Every offset is checked against the device size before reading, and both
// parts are fuzzed (fuzz/fuzz_partitions.cc, fuzz/fuzz_lvm_metadata.cc).
// The integration tests use pvcreate and lvcreate as the oracle.
#include "image/lvm.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <utility>

namespace cbt::image {

namespace {

constexpr uint64_t kSector = kSectorSize;

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
    if (!ReadInside(read, size, s * kSector, b, sizeof b)) return std::nullopt;
    if (std::memcmp(b, "LABELONE", 8) != 0 || std::memcmp(b + 24, "LVM2 001", 8) != 0) continue;
    const uint32_t off = LoadLe32(b + 20);
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
      *a = LoadLe64(b + p);
      *l = LoadLe64(b + p + 8);
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
      if (!ReadInside(read, size, mda_off, h, sizeof h) ||
          std::memcmp(h + 4, " LVM2 x[5A%r0N*>", 16) != 0) {
        notes->push_back("LVM metadata area damaged on " + where);
        continue;
      }
      const uint64_t start = LoadLe64(h + 24), len = LoadLe64(h + 32);
      if (start != mda_off || len != mda_len || len < 2 * kSector) {
        notes->push_back("LVM metadata area header inconsistent on " + where);
        continue;
      }
      const uint64_t text_off = LoadLe64(h + 40), text_len = LoadLe64(h + 48);
      if (text_len == 0 || text_len > (16u << 20) || text_off < kSector || text_off >= len ||
          text_len > len - kSector) {
        notes->push_back("LVM metadata location invalid on " + where);
        continue;
      }
      std::string text(text_len, '\0');
      const uint64_t first = std::min(text_len, len - text_off);
      bool ok = ReadInside(read, size, start + text_off, text.data(), first);
      // The metadata area is a ring after its 512-byte header.
      if (ok && first < text_len) {
        ok = ReadInside(read, size, start + kSector, text.data() + first, text_len - first);
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

}  // namespace cbt::image
