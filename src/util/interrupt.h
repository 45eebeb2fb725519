// SPDX-License-Identifier: Apache-2.0
//
// SIGINT and SIGTERM as a request to stop, not a kill: the first one sets a
// flag that long operations (NBD reads, HTTP transfers, task waits, the
// loop over disks) check, so the command unwinds through its ordinary error
// path and cleans up as after any failure (the snapshot removed, created
// VDIs destroyed, no partial point).  A second signal kills the process at
// once with the default action; whatever it leaves, the next run cleans up.
//
// Thread-safety: Interrupted() may be called from any thread.
#ifndef CBT_UTIL_INTERRUPT_H_
#define CBT_UTIL_INTERRUPT_H_

#include "util/status.h"

namespace cbt {

// Installs the handlers for SIGINT and SIGTERM.  Call once, early in main,
// before any thread starts.
void InstallInterruptHandlers();
// True once SIGINT or SIGTERM has arrived.
bool Interrupted();
// Aborted("interrupted by SIGINT"/"...SIGTERM") once interrupted, else OK.
Status CheckInterrupted();
// The signal that interrupted, 0 if none.  The exit status of an
// interrupted command is 128 + this, as a shell reports a killed one.
int InterruptSignal();

}  // namespace cbt

#endif  // CBT_UTIL_INTERRUPT_H_
