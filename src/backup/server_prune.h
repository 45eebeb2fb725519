// SPDX-License-Identifier: Apache-2.0
//
// The server's side of removing points: once prune or delete has removed
// points from the repository, the CBT metadata VDIs their snapshots were
// reduced to are the base of no later backup, and are destroyed.  Only
// VDIs of type cbt_metadata are touched: anything else the server has under
// such a UUID is not this repository's to destroy.
//
// Thread-safety: calls on one session, one at a time.
#ifndef CBT_BACKUP_SERVER_PRUNE_H_
#define CBT_BACKUP_SERVER_PRUNE_H_

#include "xapi/session.h"

#include <string>
#include <vector>

namespace cbt::backup {

// Destroys the CBT metadata VDIs named by `snapshot_vdi_uuids` (the
// released snapshots of repo::DeletePoints).  A UUID the server no longer
// knows is skipped.  Never fails: returns notes for the user, one for each
// VDI kept or not destroyed, then one with the count destroyed.
std::vector<std::string> DestroyCbtMetadata(xapi::Session& s,
                                            const std::vector<std::string>& snapshot_vdi_uuids);

}  // namespace cbt::backup

#endif  // CBT_BACKUP_SERVER_PRUNE_H_
