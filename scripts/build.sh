#!/usr/bin/env bash
# Configures and builds one configuration: release (build/) or asan
# (build-asan/, ASan+UBSan).  Usage: scripts/build.sh [release|asan]
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-release}
case "$kind" in
  release) dir=build; extra=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  asan) dir=build-asan; extra=(-DCMAKE_BUILD_TYPE=Debug -DCBT_SANITIZE=address,undefined) ;;
  *) echo "usage: $0 [release|asan]" >&2; exit 2 ;;
esac
cmake -S . -B "$dir" -DCBT_WERROR=ON "${extra[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)"
