// SPDX-License-Identifier: Apache-2.0
//
// Every name in the repository is built and parsed here, and nowhere else
// (docs/FORMAT.md, "Repository layout", is the grammar these follow).
//
//   REPO/config.json                       repository config (format version)
//   REPO/id                                repository id (a UUID), made by the first backup
//   REPO/store.lock                        the store lock (repository.h, StoreLock)
//   REPO/packs/<2 hex>/<16 hex>.pack       packs of the block store (pack.h)
//   REPO/index/<16 hex>.idx                index files of the block store (block_store.h)
//   REPO/<vm-uuid>/                        one directory per VM
//   REPO/<vm-uuid>/lock                    per-VM lock (present while held)
//   REPO/<vm-uuid>/<timestamp>/            a committed point
//   REPO/<vm-uuid>/.tmp-<timestamp>-<pid>/ a point being written
//   REPO/<vm-uuid>/journal.json            a delete/prune in progress
//   REPO/<vm-uuid>/.del-<timestamp>/       a point being removed by it
//   <point>/manifest.json, <point>/VM_metadata, <point>/<vdi-uuid>.cbd
//   <point>/<vdi-uuid>.<timestamp>.cbd     a layer taken over from a deleted
//                                          point (its origin timestamp)
//
// Thread-safety: pure functions.
#ifndef CBT_REPO_LAYOUT_H_
#define CBT_REPO_LAYOUT_H_

#include "util/status.h"

#include <cstdint>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>

namespace cbt::repo {

inline constexpr char kConfigFile[] = "config.json";
inline constexpr char kIdFile[] = "id";
inline constexpr char kLockFile[] = "lock";
inline constexpr char kStoreLockFile[] = "store.lock";
inline constexpr char kManifestFile[] = "manifest.json";
inline constexpr char kMetadataFile[] = "VM_metadata";
inline constexpr char kTempPrefix[] = ".tmp-";
inline constexpr char kDiskFileSuffix[] = ".cbd";
inline constexpr char kJournalFile[] = "journal.json";
inline constexpr char kDeletingPrefix[] = ".del-";

// True for a lower-case 8-4-4-4-12 hexadecimal UUID.
bool IsUuid(std::string_view s);
// Fills `len` bytes at `buf` from the kernel's random source.
Status RandomBytes(void* buf, size_t len);
// A random (version 4) lower-case UUID; IoError if the kernel gives no
// random bytes.
Result<std::string> NewUuid();
// True for an ISO 8601 basic UTC timestamp "YYYYMMDDTHHMMSSZ" naming a real
// date and time.
bool IsTimestamp(std::string_view s);
// Formats a UNIX time as a point timestamp.
std::string FormatTimestamp(std::time_t t);
// Parses a point timestamp into UNIX time; nullopt if not a timestamp.
std::optional<std::time_t> ParseTimestamp(std::string_view s);

std::string VmDir(const std::string& repo, const std::string& vm);
std::string PointDir(const std::string& repo, const std::string& vm, const std::string& point);
std::string TempPointName(const std::string& point, long pid);
// Parses ".tmp-<timestamp>-<pid>"; returns the pid or nullopt.
std::optional<long> ParseTempPointName(std::string_view name);
std::string DiskFileName(const std::string& vdi_uuid);
// "<vdi-uuid>.<origin>.cbd": the file that point `origin` wrote for the disk,
// kept by a later point after `origin` was deleted.
std::string LayerFileName(const std::string& vdi_uuid, const std::string& origin);
std::string DeletingDirName(const std::string& point);
// Parses ".del-<timestamp>"; returns the timestamp or nullopt.
std::optional<std::string> ParseDeletingDirName(std::string_view name);

}  // namespace cbt::repo

#endif  // CBT_REPO_LAYOUT_H_
