// SPDX-License-Identifier: Apache-2.0
//
// Copying one snapshot disk from the server into a new disk file of the
// repository: the NBD endpoints from VDI.get_nbd_info (every host of the
// pool that sees the SR), the chosen extents read over NBD on several
// connections, each 64 KiB block checked for zeros and checksummed on the
// reader threads, and the writes to the disk file serialised.
//
// Thread-safety: one copy per writer; the copy runs its own threads.
#ifndef CBT_BACKUP_NBD_COPY_H_
#define CBT_BACKUP_NBD_COPY_H_

#include "backup/backup.h"
#include "nbd/nbd_reader.h"
#include "repo/disk_file.h"
#include "util/status.h"
#include "xapi/session.h"

#include <cstdint>
#include <string>
#include <vector>

namespace cbt::backup {

// Reads `extents` (block-aligned, inside the disk) of snapshot VDI
// `snapshot_ref` into `w`.  For an `overlay`, blocks read as zeros are
// recorded as zero blocks (they hide the parent's data); in a base file
// they stay holes.  `vdi_uuid` and `virtual_size` are the disk's, for
// messages, the size check and options.progress.  *bytes_read is what NBD
// delivered, also on failure once connected.  NotSupported when the server
// offers no NBD; Corruption when the export is smaller than the disk.
Status CopyOverNbd(xapi::Session& s, const Options& options, const std::string& snapshot_ref,
                   const std::string& vdi_uuid, uint64_t virtual_size,
                   const std::vector<nbd::Extent>& extents, bool overlay, repo::DiskFileWriter* w,
                   uint64_t* bytes_read);

}  // namespace cbt::backup

#endif  // CBT_BACKUP_NBD_COPY_H_
