#!/bin/sh
# Self-test of the XAPI simulator (about 25 seconds).  Needs python3, nbdkit
# and openssl; uses qemu-img and nbdcopy when they are installed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
for tool in python3 nbdkit openssl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "selftest: $tool is required" >&2; exit 2; }
done
exec timeout 90 python3 "$here/selftest.py"
