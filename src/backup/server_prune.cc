// SPDX-License-Identifier: Apache-2.0
//
// Looking up each released snapshot VDI, checking that it is CBT metadata,
// and destroying it.
#include "backup/server_prune.h"

namespace cbt::backup {

std::vector<std::string> DestroyCbtMetadata(xapi::Session& s,
                                            const std::vector<std::string>& snapshot_vdi_uuids) {
  std::vector<std::string> notes;
  int destroyed = 0;
  for (const auto& uuid : snapshot_vdi_uuids) {
    auto ref = s.Call("VDI.get_by_uuid", {xapi::Value(uuid)});
    if (!ref.ok()) continue;  // already gone
    auto type = s.Call("VDI.get_type", {*ref});
    if (!type.ok() || type->str() != "cbt_metadata") {
      notes.push_back("kept VDI " + uuid + " on the server: it is not CBT metadata");
      continue;
    }
    auto r = s.Call("VDI.destroy", {*ref});
    if (!r.ok()) {
      notes.push_back("destroying CBT metadata VDI " + uuid + " failed: " + r.status().message());
      continue;
    }
    ++destroyed;
  }
  notes.push_back("destroyed " + std::to_string(destroyed) +
                  " CBT metadata VDI(s) on the server that no later backup needs");
  return notes;
}

}  // namespace cbt::backup
