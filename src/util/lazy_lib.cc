// SPDX-License-Identifier: Apache-2.0
#include "util/lazy_lib.h"

#include <dlfcn.h>

namespace cbt {

Status LazyLibrary::Load() {
  std::call_once(once_, [this] {
    handle_ = ::dlopen(soname_, RTLD_NOW | RTLD_LOCAL);
    if (handle_ == nullptr) {
      const char* e = ::dlerror();
      error_ = e ? e : "unknown error";
    }
  });
  if (handle_ == nullptr) {
    return Status::NotSupported(std::string("cannot load ") + soname_ + " (" + error_ +
                                "); install it to talk to a server");
  }
  return Status::Ok();
}

void* LazyLibrary::Symbol(const char* name) const {
  return handle_ == nullptr ? nullptr : ::dlsym(handle_, name);
}

}  // namespace cbt
