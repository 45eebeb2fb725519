// SPDX-License-Identifier: Apache-2.0
//
// A shared library opened on first use (dlopen).  libcurl and libnbd, with
// their TLS, Kerberos, LDAP, SSH and HTTP/2 dependencies, are needed only
// by the commands that talk to a server; loading them at every start cost
// more than a whole local delete or list (about 40 ms from a cold cache).
//
// Thread-safety: Load and Symbol may be called from any thread.
#ifndef CBT_UTIL_LAZY_LIB_H_
#define CBT_UTIL_LAZY_LIB_H_

#include "util/status.h"

#include <mutex>
#include <string>

namespace cbt {

class LazyLibrary {
 public:
  // `soname` as the dynamic linker finds it, e.g. "libcurl.so.4".
  explicit LazyLibrary(const char* soname) : soname_(soname) {}
  LazyLibrary(const LazyLibrary&) = delete;
  LazyLibrary& operator=(const LazyLibrary&) = delete;

  // Opens the library once; NotSupported naming it if it cannot be loaded.
  Status Load();
  // Binds `*fn` to symbol `name`.  REQUIRES: Load() succeeded.  NotSupported
  // if the library lacks it (too old).
  template <typename Fn>
  Status Bind(Fn* fn, const char* name) {
    void* p = Symbol(name);
    if (p == nullptr) {
      return Status::NotSupported(std::string(soname_) + " has no " + name + " (too old?)");
    }
    *fn = reinterpret_cast<Fn>(p);
    return Status::Ok();
  }

 private:
  void* Symbol(const char* name) const;
  const char* soname_;
  std::once_flag once_;
  void* handle_ = nullptr;
  std::string error_;
};

}  // namespace cbt

#endif  // CBT_UTIL_LAZY_LIB_H_
