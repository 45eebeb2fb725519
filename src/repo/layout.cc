// SPDX-License-Identifier: Apache-2.0
#include "repo/layout.h"

#include "util/file.h"

#include <sys/random.h>

#include <cerrno>
#include <charconv>
#include <cstdio>

namespace cbt::repo {

namespace {
bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
int Num(std::string_view s, size_t pos, size_t len) {
  int v = 0;
  for (size_t i = 0; i < len; ++i) v = v * 10 + (s[pos + i] - '0');
  return v;
}
}  // namespace

bool IsUuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !IsLowerHex(s[i])) return false;
  }
  return true;
}

Status RandomBytes(void* buf, size_t len) {
  auto* b = static_cast<unsigned char*>(buf);
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::getrandom(b + got, len - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "getrandom");
    }
    got += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<std::string> NewUuid() {
  unsigned char b[16];
  CBT_RETURN_IF_ERROR(RandomBytes(b, sizeof b));
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  char out[37];
  std::snprintf(out, sizeof out,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return std::string(out);
}

std::optional<std::time_t> ParseTimestamp(std::string_view s) {
  if (s.size() != 16 || s[8] != 'T' || s[15] != 'Z') return std::nullopt;
  for (size_t i = 0; i < 15; ++i) {
    if (i != 8 && !IsDigit(s[i])) return std::nullopt;
  }
  struct tm tm = {};
  tm.tm_year = Num(s, 0, 4) - 1900;
  tm.tm_mon = Num(s, 4, 2) - 1;
  tm.tm_mday = Num(s, 6, 2);
  tm.tm_hour = Num(s, 9, 2);
  tm.tm_min = Num(s, 11, 2);
  tm.tm_sec = Num(s, 13, 2);
  std::time_t t = timegm(&tm);
  // Round-tripping rejects dates such as 20260231 that timegm normalises.
  if (t == static_cast<std::time_t>(-1) || FormatTimestamp(t) != s) return std::nullopt;
  return t;
}

bool IsTimestamp(std::string_view s) { return ParseTimestamp(s).has_value(); }

std::string FormatTimestamp(std::time_t t) {
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::string VmDir(const std::string& repo, const std::string& vm) { return JoinPath(repo, vm); }

std::string PointDir(const std::string& repo, const std::string& vm, const std::string& point) {
  return JoinPath(VmDir(repo, vm), point);
}

std::string TempPointName(const std::string& point, long pid) {
  return std::string(kTempPrefix) + point + "-" + std::to_string(pid);
}

std::optional<long> ParseTempPointName(std::string_view name) {
  std::string_view prefix = kTempPrefix;
  if (name.substr(0, prefix.size()) != prefix) return std::nullopt;
  name.remove_prefix(prefix.size());
  if (name.size() < 18 || !IsTimestamp(name.substr(0, 16)) || name[16] != '-') return std::nullopt;
  std::string_view pid_text = name.substr(17);
  long pid = 0;
  auto [end, ec] = std::from_chars(pid_text.data(), pid_text.data() + pid_text.size(), pid);
  if (ec != std::errc() || end != pid_text.data() + pid_text.size() || pid <= 0) {
    return std::nullopt;
  }
  return pid;
}

std::string DiskFileName(const std::string& vdi_uuid) { return vdi_uuid + kDiskFileSuffix; }

std::string LayerFileName(const std::string& vdi_uuid, const std::string& origin) {
  return vdi_uuid + "." + origin + kDiskFileSuffix;
}

std::string DeletingDirName(const std::string& point) { return kDeletingPrefix + point; }

std::optional<std::string> ParseDeletingDirName(std::string_view name) {
  std::string_view prefix = kDeletingPrefix;
  if (name.substr(0, prefix.size()) != prefix) return std::nullopt;
  name.remove_prefix(prefix.size());
  if (!IsTimestamp(name)) return std::nullopt;
  return std::string(name);
}

}  // namespace cbt::repo
