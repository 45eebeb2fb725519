// SPDX-License-Identifier: Apache-2.0
//
// Restore: a point (or a raw image file) streamed back to XenServer with
// PUT /import_raw_vdi, as a sparse VHD built on the fly (holes and zero
// blocks never travel) or as raw bytes.  A whole VM is recreated with
// PUT /import_metadata and the vdi:<original>=<new> map; one disk can go to
// a new VDI or over an existing one; over the very VDI the point came from,
// only the blocks changed since the point are sent when the server still
// has the point's CBT metadata.
//
// Failure leaves nothing behind: VDIs and the VM this restore created are
// destroyed; the repository is only read.
//
// Thread-safety: one restore per session at a time.
#ifndef CBT_RESTORE_RESTORE_H_
#define CBT_RESTORE_RESTORE_H_

#include "repo/repository.h"
#include "util/status.h"
#include "xapi/session.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace cbt::restore {

struct Options {
  std::string vm;
  std::string point;
  std::string sr;         // SR UUID for new VDIs
  std::string host;       // host UUID to stream the disks to (default: the master)
  std::string disk;       // restore only this disk (original VDI UUID)
  std::string onto_vdi;   // write over this existing VDI
  std::string from_file;  // raw image to send instead of the repository's point
  std::string format = "vhd";
  bool verify = false;
  std::function<void(const std::string&)> log;
  std::function<void(const std::string& vdi, uint64_t done, uint64_t total)> progress;
};

struct DiskResult {
  std::string vdi_uuid;      // original VDI of the point
  std::string target_uuid;   // VDI written
  std::string mode;          // "full" or "changed-blocks"
  std::string reason;        // why not changed-blocks, when it was asked for
  uint64_t bytes_sent = 0;   // HTTP body bytes
  uint64_t blocks_sent = 0;  // 64 KiB blocks carried
  double seconds = 0;
  double upload_seconds = 0;  // the HTTP upload and import task alone
  std::string verify;         // "", "ok", or why it was skipped
};

struct Report {
  std::string new_vm_uuid;  // whole-VM restore only
  std::vector<DiskResult> disks;
  std::vector<std::string> notes;  // things the user should know (e.g. restored halted)
  double seconds = 0;
};

Result<Report> Run(xapi::Session& session, const repo::Repository& repo, const Options& options);

}  // namespace cbt::restore

#endif  // CBT_RESTORE_RESTORE_H_
