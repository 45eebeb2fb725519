// SPDX-License-Identifier: Apache-2.0
//
// CBT_CHECK: the one way the engine ends the process.  It is for states
// that only a bug in this program (or the kernel) can cause and in which
// carrying on would do harm, such as the kernel possibly still writing into
// memory about to be reused.  Everything a user, a file or a server can
// cause is reported as a Status instead (util/status.h).
#ifndef CBT_UTIL_CHECK_H_
#define CBT_UTIL_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <string>

namespace cbt {

// Prints "cbt: fatal internal error: <what>" as one line on stderr and
// aborts (a core dump, if enabled, shows where).  Never returns.
[[noreturn]] inline void FatalInternalError(const std::string& what) {
  std::fprintf(stderr, "cbt: fatal internal error: %s\n", what.c_str());
  std::abort();
}

}  // namespace cbt

// Ends the process through FatalInternalError(`what`) unless `cond` holds.
// `what` is evaluated only when `cond` fails.
#define CBT_CHECK(cond, what)                     \
  do {                                            \
    if (!(cond)) ::cbt::FatalInternalError(what); \
  } while (0)

#endif  // CBT_UTIL_CHECK_H_
