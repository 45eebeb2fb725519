// SPDX-License-Identifier: Apache-2.0
//
// The checks of the full-or-incremental rule, in the order their reasons
// take precedence, and the changed-block bitmap turned into the extents to
// read.
#include "backup/decision.h"

#include "repo/disk_file.h"
#include "xapi/cbt_bitmap.h"

namespace cbt::backup {

// A bit of the server's changed-block bitmap is one block of the point.
static_assert(xapi::kCbtBlockSize == repo::kBlockSize);

namespace {

// Why the disk must be read in full, from what is known without asking the
// server; empty if nothing says so.
std::string LocalReason(const DecisionInput& in) {
  if (in.full_requested) return "--full was given";
  if (!in.parent) return "first backup of this disk";
  if (!in.cbt_capable) return "the disk's SR does not support CBT";
  if (in.cbt_was_off) {
    return "CBT was off on this disk (disabled or lost on the server); it is on again";
  }
  if (!in.snapshot_cbt_enabled) {
    return "CBT is not enabled on the new snapshot (it was disabled or lost on the server)";
  }
  if (in.parent->virtual_size != in.virtual_size) {
    return "the disk was resized since point " + in.parent->point;
  }
  if (in.parent->snapshot_vdi_uuid.empty()) {
    return "point " + in.parent->point + " was not taken from this server";
  }
  return "";
}

Decision Full(std::string reason, uint64_t size) {
  Decision d;
  d.reason = std::move(reason);
  d.extents = {{0, size}};
  return d;
}

}  // namespace

bool NeedsServerLookup(const DecisionInput& in) { return LocalReason(in).empty(); }

Decision Decide(const DecisionInput& in) {
  std::string reason = LocalReason(in);
  if (!reason.empty()) return Full(std::move(reason), in.virtual_size);
  const std::string& point = in.parent->point;
  const ServerLookup lookup = in.lookup.value_or(ServerLookup{});
  if (!lookup.previous_found) {
    return Full("the server no longer has the snapshot of point " + point, in.virtual_size);
  }
  if (lookup.previous_cbt_enabled == false) {
    return Full("the snapshot of point " + point + " has no CBT log any more", in.virtual_size);
  }
  const Status& listed = lookup.changed_blocks_status;
  if (!listed.ok()) {
    const auto& e = listed.detail();
    // SR_BACKEND_FAILURE_460 "unrelated": the CBT chain was cut.
    const std::string why = e.size() > 2 && e[0] == "SR_BACKEND_FAILURE_460"
                                ? "the CBT chain is broken: " + e[2]
                                : listed.message();
    return Full("the server cannot list the blocks changed since point " + point + " (" + why + ")",
                in.virtual_size);
  }
  auto bitmap = xapi::DecodeCbtBitmap(lookup.changed_blocks_base64);
  if (!bitmap.ok()) return Full(bitmap.status().message(), in.virtual_size);
  const uint64_t expect = xapi::CbtBitmapBytes(in.virtual_size);
  if (bitmap->size() != expect) {
    return Full("the server's changed-block bitmap has " + std::to_string(bitmap->size()) +
                    " bytes where " + std::to_string(expect) + " were expected",
                in.virtual_size);
  }
  Decision d;
  d.incremental = true;
  for (const auto& e : xapi::ExtentsFromBitmap(*bitmap, in.virtual_size)) {
    d.extents.push_back({e.offset, e.length});
  }
  return d;
}

}  // namespace cbt::backup
