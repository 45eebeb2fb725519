#!/usr/bin/env bash
# Fails if any C++ source differs from .clang-format.
set -euo pipefail
cd "$(dirname "$0")/.."
cf=$(command -v clang-format-14 || command -v clang-format)
git ls-files '*.cc' '*.h' | xargs "$cf" --dry-run --Werror
