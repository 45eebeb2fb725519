// SPDX-License-Identifier: Apache-2.0
//
// Full or incremental, per disk: the rule that says whether a disk can be
// read as only the blocks changed since its newest point, and if not, why
// (the reason is printed and recorded in the manifest).  An incremental
// needs an unbroken CBT chain: a parent point taken from this server, CBT
// on the whole time, a disk of the same size, the parent's snapshot still
// on the server with its CBT log, and a well-formed changed-block bitmap
// from VDI.list_changed_blocks.  Anything else means full.
//
// The rule is a pure function of plain data so every reason can be tested
// without a server; backup.cc asks the server and fills in the answers.
//
// Thread-safety: pure functions.
#ifndef CBT_BACKUP_DECISION_H_
#define CBT_BACKUP_DECISION_H_

#include "nbd/nbd_reader.h"
#include "util/status.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cbt::backup {

// The newest committed point holding the disk: what an incremental would
// build on.
struct ParentPoint {
  std::string point;
  std::string snapshot_vdi_uuid;  // its server snapshot; empty if not taken from a server
  uint64_t virtual_size = 0;
};

// What the server said about the parent's snapshot.  Asked only when
// NeedsServerLookup, in this order: VDI.get_by_uuid, then (if found)
// VDI.get_cbt_enabled and VDI.list_changed_blocks.
struct ServerLookup {
  bool previous_found = false;  // VDI.get_by_uuid found the parent's snapshot
  // VDI.get_cbt_enabled of it; nullopt when that call failed or gave no
  // boolean (then the list_changed_blocks answer decides).
  std::optional<bool> previous_cbt_enabled;
  // VDI.list_changed_blocks from it to the new snapshot: OK and the base64
  // bitmap, or the error.
  Status changed_blocks_status;
  std::string changed_blocks_base64;
};

struct DecisionInput {
  bool full_requested = false;  // --full
  std::optional<ParentPoint> parent;
  // CBT works for the disk: its SR supports it and it is enabled (false
  // too when VDI.enable_cbt failed).
  bool cbt_capable = false;
  bool cbt_was_off = false;           // CBT was off before this run enabled it
  bool snapshot_cbt_enabled = false;  // the new snapshot has CBT
  uint64_t virtual_size = 0;          // the new snapshot's
  std::optional<ServerLookup> lookup;
};

struct Decision {
  bool incremental = false;
  std::string reason;                // why full; empty for an incremental
  std::vector<nbd::Extent> extents;  // what to read: the changed blocks, or the whole disk
};

// True when nothing known locally rules out an incremental, so the server
// must be asked (DecisionInput::lookup) before Decide can answer.
bool NeedsServerLookup(const DecisionInput& in);

// The decision.  A lookup that NeedsServerLookup wanted but `in` lacks
// counts as the parent's snapshot not found.
Decision Decide(const DecisionInput& in);

}  // namespace cbt::backup

#endif  // CBT_BACKUP_DECISION_H_
