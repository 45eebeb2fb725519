// SPDX-License-Identifier: Apache-2.0
//
// Text that comes from guests (partition and volume labels) or from the
// server (VM and disk names) is untrusted: printed as it is, an escape
// sequence could rewrite the administrator's terminal or forge a line of a
// log.  Everything such a name passes through on its way to a terminal or
// a log goes through Printable first.
//
// Thread-safety: pure functions.
#ifndef CBT_UTIL_TEXT_H_
#define CBT_UTIL_TEXT_H_

#include <string>
#include <string_view>

namespace cbt {

// `s` with every control character (C0, DEL, and the C1 range of UTF-8,
// U+0080..U+009F) and every byte that is not part of valid UTF-8 written as
// \xNN, and backslashes doubled, so the result is one printable line that
// still tells different names apart.
std::string Printable(std::string_view s);

}  // namespace cbt

#endif  // CBT_UTIL_TEXT_H_
