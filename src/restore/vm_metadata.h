// SPDX-License-Identifier: Apache-2.0
//
// The VM metadata a backup keeps (export_metadata's answer: a tar archive
// whose member ova.xml is an XML-RPC struct of the VM's objects), and the
// one change a restore makes to it.
//
// A point taken while the VM was suspended carries power_state Suspended
// and the suspend_VDI of the original VM.  import_metadata resolves that
// VDI by SR and location, finds the original's suspend image, and would
// create a suspended VM sharing it (xapi import.ml); resuming either VM
// would then corrupt the other.  A restore therefore asks for a halted VM
// without a suspend image: the memory state is not part of a point.
//
// Thread-safety: pure functions.
#ifndef CBT_RESTORE_VM_METADATA_H_
#define CBT_RESTORE_VM_METADATA_H_

#include "util/status.h"

#include <string>

namespace cbt::restore {

struct HaltedMetadata {
  std::string archive;         // the metadata to import
  bool was_suspended = false;  // a VM in it was suspended (and is now halted)
};

// Returns `archive` with every suspended VM of its ova.xml made Halted, its
// suspend_VDI cleared and that VDI's object removed; unchanged (byte for
// byte) when no VM was suspended.  Corruption if the archive or its XML
// cannot be read.
Result<HaltedMetadata> MakeHalted(const std::string& archive);

}  // namespace cbt::restore

#endif  // CBT_RESTORE_VM_METADATA_H_
