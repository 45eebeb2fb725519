// SPDX-License-Identifier: Apache-2.0
//
// The one clock for measuring how long something took (reports, progress
// rates): the monotonic clock, which neither NTP steps nor an administrator
// setting the date can move backwards.  Not a time of day: point names and
// file times use the wall clock.
//
// Thread-safety: thread-safe.
#ifndef CBT_UTIL_CLOCK_H_
#define CBT_UTIL_CLOCK_H_

#include <chrono>

namespace cbt {

// Seconds since an arbitrary fixed origin; only differences mean anything.
inline double MonotonicSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace cbt

#endif  // CBT_UTIL_CLOCK_H_
