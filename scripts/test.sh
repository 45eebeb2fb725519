#!/usr/bin/env bash
# The test command: installs dependencies, checks formatting and the
# layering of includes, builds the release and the sanitizer (ASan+UBSan)
# configurations, and runs every test (unit, integration, crash) on the
# release build and the unit and "asan" tests on the sanitizer build.  Needs
# root for loop devices and FUSE.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh
scripts/check-format.sh
scripts/check-layers.sh
scripts/build.sh release
(cd build && ctest --output-on-failure -j1)
if [ "${CBT_SKIP_ASAN:-0}" != 1 ]; then
  scripts/build.sh asan
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  (cd build-asan && ctest --output-on-failure -j1 -L "unit|asan")
fi
