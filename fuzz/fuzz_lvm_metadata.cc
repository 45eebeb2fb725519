// SPDX-License-Identifier: Apache-2.0
//
// LVM2 text metadata comes from a guest disk, written by whatever the guest
// ran: the parser must reject garbage with an error and never crash.
#include "image/lvm.h"

#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto vg = cbt::image::ParseLvmMetadata(std::string(reinterpret_cast<const char*>(data), size));
  if (vg.ok() && vg->extent_size == 0) std::abort();
  return 0;
}
