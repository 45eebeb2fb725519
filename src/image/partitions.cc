// SPDX-License-Identifier: Apache-2.0
//
// MBR and GPT parsing for image/partitions.h.  The tables are parsed here
// rather than with libblkid or libfdisk: both probe a block device (or at
// least a file descriptor), and inside cbtfs a disk exists only as a
// composed image in memory; attaching it as a device is exactly what this
// feature avoids.  The formats are small and stable; every offset is checked
// against the disk size before reading, and the parser is fuzzed
// (fuzz/fuzz_partitions.cc).  The integration tests use sfdisk and sgdisk as
// the oracle.  Checksums are Boost.CRC's; partition names are decoded by
// the C library's iconv.
#include "image/partitions.h"

#include <boost/crc.hpp>

#include <iconv.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>
#include <utility>

namespace cbt::image {

namespace {

constexpr uint64_t kSector = kSectorSize;

// The CRC-32 of UEFI (the one of zlib and Ethernet).
uint32_t Crc32(const unsigned char* p, size_t n) {
  boost::crc_32_type crc;
  crc.process_bytes(p, n);
  return crc.checksum();
}

std::string Hex2(unsigned v) {
  static const char* d = "0123456789abcdef";
  return std::string("0x") + d[(v >> 4) & 15] + d[v & 15];
}

std::string Guid(const unsigned char* g) {
  // Mixed-endian text form of a GPT GUID.
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", LoadLe32(g),
                g[4] | g[5] << 8, g[6] | g[7] << 8, g[8], g[9], g[10], g[11], g[12], g[13], g[14],
                g[15]);
  return buf;
}

// Writes to `o` the 3-byte encoding of a UTF-16 code unit that iconv
// refused (an unpaired surrogate), as WTF-8 does.  Not valid UTF-8, but it
// keeps names that differ only there apart, and it is what these names have
// always decoded to; Printable escapes it wherever a name is shown.
void PutUnpaired(uint32_t c, char* o) {
  o[0] = static_cast<char>(0xe0 | c >> 12);
  o[1] = static_cast<char>(0x80 | ((c >> 6) & 0x3f));
  o[2] = static_cast<char>(0x80 | (c & 0x3f));
}

// Decodes GPT partition names (UTF-16LE, NUL-terminated unless they fill
// their 72 bytes) with one iconv descriptor: a descriptor is not safe to
// share between threads, so each ReadPartitionTable call opens its own.
class Utf16Names {
 public:
  Utf16Names() : cd_(::iconv_open("UTF-8", "UTF-16LE")) {}
  ~Utf16Names() {
    if (ok()) ::iconv_close(cd_);
  }
  Utf16Names(const Utf16Names&) = delete;
  Utf16Names& operator=(const Utf16Names&) = delete;

  // False if the C library has no UTF-16LE converter (its gconv modules
  // are missing); Decode then returns "".
  bool ok() const { return cd_ != reinterpret_cast<iconv_t>(-1); }

  std::string Decode(const unsigned char* p, size_t bytes) const {
    size_t units = 0;
    while (units * 2 + 1 < bytes && (p[units * 2] | p[units * 2 + 1]) != 0) ++units;
    if (!ok() || units == 0) return "";
    // At most 3 bytes of output per unit (an unpaired one included); a
    // surrogate pair gives 4.
    std::string buf(units * 3, '\0');
    ::iconv(cd_, nullptr, nullptr, nullptr, nullptr);
    char* in = const_cast<char*>(reinterpret_cast<const char*>(p));
    size_t in_left = units * 2;
    char* o = buf.data();
    size_t o_left = buf.size();
    while (in_left > 0) {
      if (::iconv(cd_, &in, &in_left, &o, &o_left) != static_cast<size_t>(-1)) break;
      // EILSEQ: an unpaired surrogate at `in`; EINVAL: a high surrogate in
      // the last unit.  Keep it (see PutUnpaired) and go on after it.
      if ((errno != EILSEQ && errno != EINVAL) || in_left < 2 || o_left < 3) break;
      const auto* u = reinterpret_cast<const unsigned char*>(in);
      PutUnpaired(u[0] | u[1] << 8, o);
      o += 3;
      o_left -= 3;
      in += 2;
      in_left -= 2;
    }
    buf.resize(buf.size() - o_left);
    return buf;
  }

 private:
  iconv_t cd_;
};

// GPT at header LBA `lba`; nullopt if the header or its entries are damaged.
std::optional<std::vector<Partition>> ReadGpt(const ReadAt& read, uint64_t size, uint64_t lba,
                                              const Utf16Names& names, std::string* why) {
  unsigned char h[kSector];
  if (!ReadInside(read, size, lba * kSector, h, sizeof h)) {
    *why = "GPT header unreadable";
    return std::nullopt;
  }
  if (std::memcmp(h, "EFI PART", 8) != 0) {
    *why = "no GPT header at sector " + std::to_string(lba);
    return std::nullopt;
  }
  const uint32_t header_size = LoadLe32(h + 12);
  if (header_size < 92 || header_size > kSector) {
    *why = "GPT header size invalid";
    return std::nullopt;
  }
  unsigned char copy[kSector];
  std::memcpy(copy, h, header_size);
  std::memset(copy + 16, 0, 4);
  if (Crc32(copy, header_size) != LoadLe32(h + 16)) {
    *why = "GPT header checksum mismatch at sector " + std::to_string(lba);
    return std::nullopt;
  }
  const uint64_t first_usable = LoadLe64(h + 40), last_usable = LoadLe64(h + 48);
  const uint64_t entries_lba = LoadLe64(h + 72);
  const uint32_t count = LoadLe32(h + 80), entry_size = LoadLe32(h + 84),
                 entries_crc = LoadLe32(h + 88);
  if (entry_size < 128 || entry_size % 8 != 0 || entry_size > 4096 || count > 4096) {
    *why = "GPT entry array geometry invalid";
    return std::nullopt;
  }
  std::vector<unsigned char> arr(static_cast<size_t>(count) * entry_size);
  if (entries_lba > size / kSector ||
      !ReadInside(read, size, entries_lba * kSector, arr.data(), arr.size())) {
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
    const uint64_t first = LoadLe64(e + 32), last = LoadLe64(e + 40);
    if (first > last || first < first_usable || last > last_usable || last >= size / kSector) {
      *why = "GPT entry " + std::to_string(i + 1) + " lies outside the disk";
      return std::nullopt;
    }
    Partition p;
    p.number = static_cast<int>(i) + 1;
    p.offset = first * kSector;
    p.length = (last - first + 1) * kSector;
    p.type = Guid(e);
    p.label = names.Decode(e + 56, std::min<size_t>(72, entry_size - 56));
    parts.push_back(std::move(p));
  }
  return parts;
}

bool IsExtended(unsigned type) { return type == 0x05 || type == 0x0f || type == 0x85; }

}  // namespace

PartitionTable ReadPartitionTable(const ReadAt& read, uint64_t disk_size) {
  PartitionTable t;
  unsigned char mbr[kSector];
  if (!ReadInside(read, disk_size, 0, mbr, sizeof mbr)) return t;
  if (mbr[510] != 0x55 || mbr[511] != 0xaa) {
    // No MBR signature: a GPT still needs its protective MBR, so there is
    // no partition table.
    return t;
  }
  bool protective = false;
  for (int i = 0; i < 4; ++i) protective |= mbr[446 + 16 * i + 4] == 0xee;
  if (protective) {
    t.scheme = "gpt";
    const Utf16Names names;
    std::string why;
    auto parts = ReadGpt(read, disk_size, 1, names, &why);
    if (!parts) {
      const std::string primary = why;
      parts = ReadGpt(read, disk_size, disk_size / kSector - 1, names, &why);
      if (parts) {
        t.notes.push_back("primary GPT damaged (" + primary + "); used the backup GPT");
      } else {
        t.notes.push_back("GPT damaged: " + primary + "; backup: " + why);
        return t;
      }
    }
    if (!names.ok() && !parts->empty()) {
      // Only where the C library lacks its gconv modules: the partitions
      // are still shown, without their names.
      t.notes.push_back("GPT partition names not decoded (no UTF-16LE converter)");
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
    const uint64_t start = LoadLe32(e + 8), count = LoadLe32(e + 12);
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
        !ReadInside(read, disk_size, ebr * kSector, b, sizeof b) || b[510] != 0x55 ||
        b[511] != 0xaa) {
      t.notes.push_back("extended partition chain damaged at logical partition " +
                        std::to_string(n) + "; later logical partitions ignored");
      break;
    }
    const unsigned char* e = b + 446;
    const uint64_t start = ebr + LoadLe32(e + 8), count = LoadLe32(e + 12);
    if (e[4] != 0 && count != 0) {
      if (start + count > ext_start + ext_len || start <= ebr) {
        t.notes.push_back("logical partition " + std::to_string(n) +
                          " lies outside its extended partition; ignored");
      } else {
        parts.push_back({n, start * kSector, count * kSector, "", Hex2(e[4])});
      }
    }
    const unsigned char* next = b + 446 + 16;
    if (next[4] == 0 || LoadLe32(next + 12) == 0) break;
    ebr = ext_start + LoadLe32(next + 8);
  }
  t.partitions = std::move(parts);
  return t;
}

}  // namespace cbt::image
