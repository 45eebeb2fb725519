# shellcheck shell=bash
# Sourced by every integration, crash and regression test.  Gives each test a
# private work directory, cleanup hooks that run on any exit, and `requires`
# which skips (exit 77) unless CBT_TEST_STRICT=1 makes a missing part a failure.
set -euo pipefail

CBT_SOURCE_DIR=${CBT_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
CBT_BUILD_DIR=${CBT_BUILD_DIR:-$CBT_SOURCE_DIR/build}
CBT_BACKUP="$CBT_BUILD_DIR/tools/cbt-backup"
CBTFS="$CBT_BUILD_DIR/fuse/cbtfs"
export CBT_BACKUP CBTFS

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cbt-test.XXXXXX")
chmod 700 "$WORK"
_cleanup_hooks=()

cleanup_fn() { _cleanup_hooks+=("$*"); }

_run_cleanup() {
  local rc=$?
  local i
  for ((i = ${#_cleanup_hooks[@]} - 1; i >= 0; i--)); do
    eval "${_cleanup_hooks[$i]}" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
  exit $rc
}
trap _run_cleanup EXIT

skip() {
  if [ "${CBT_TEST_STRICT:-0}" = 1 ]; then
    echo "FAIL: required part missing in strict mode: $*" >&2
    exit 1
  fi
  echo "SKIP: $*"
  exit 77
}

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

requires() {
  local c
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || skip "$c not found"; done
}

requires_root() { [ "$(id -u)" = 0 ] || skip "needs root"; }
requires_fuse() { [ -c /dev/fuse ] || skip "no /dev/fuse"; requires fusermount3; }
requires_loop() { requires_root; [ -e /dev/loop-control ] || skip "no loop devices"; requires losetup; }

# mount_cbtfs REPO MOUNTPOINT: mounts and registers the unmount.
mount_cbtfs() {
  mkdir -p "$2"
  "$CBTFS" mount "$1" "$2"
  cleanup_fn "fusermount3 -u '$2'"
  local i
  for i in $(seq 100); do
    mountpoint -q "$2" && return 0
    sleep 0.05
  done
  fail "cbtfs did not mount $2"
}

umount_cbtfs() {
  local i
  for i in $(seq 50); do
    fusermount3 -u "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "could not unmount $1"
}

# loop_mount_ro IMAGE DIR: read-only loop mount, unmounted at exit.
loop_mount_ro() {
  mkdir -p "$2"
  mount -o ro,loop,noload "$1" "$2"
  cleanup_fn "umount '$2'"
}

# new_uuid: a lower-case random UUID.
new_uuid() { cat /proc/sys/kernel/random/uuid; }

# expect_fail CMD...: runs CMD, which must fail with a one-line message.
expect_fail() {
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  [ "$rc" -ne 0 ] || fail "expected failure: $*"
  echo "$out"
}

# save_legacy_point SRC VM TS IMAGE ORIGINAL_UUID [IMAGE ORIGINAL_UUID ...]:
# writes a point as the predecessor backup.py laid it out.
save_legacy_point() {
  local src=$1 vm=$2 ts=$3
  shift 3
  local dir="$src/$vm/$ts"
  mkdir -p "$dir/vdis"
  printf 'legacy metadata of %s at %s\n' "$vm" "$ts" >"$dir/VM_metadata"
  while [ $# -ge 2 ]; do
    local snap
    snap=$(new_uuid)
    mkdir -p "$dir/vdis/$snap"
    cp --sparse=always "$1" "$dir/vdis/$snap/data"
    echo "$2" >"$dir/vdis/$snap/original_uuid"
    shift 2
  done
}

# ---- XAPI simulator -------------------------------------------------------
SIMDIR="$CBT_SOURCE_DIR/scripts/xapi-sim"
SIMCTL="$SIMDIR/simctl"

# start_sim [extra xapisim options]: starts a simulator in $WORK/sim, waits
# until it is ready, and sets SIM_URL (https), SIM_HTTP_URL, SIM_CA, and
# XAPISIM_READY for simctl.  A password file is written to $WORK/pw.
start_sim() {
  requires python3 nbdkit openssl
  mkdir -p "$WORK/sim"
  python3 "$SIMDIR/xapisim.py" --state "$WORK/sim" --port 0 --https-port 0 "$@" \
    >"$WORK/sim.log" 2>&1 &
  local pid=$!
  cleanup_fn "kill $pid; wait $pid"
  "$SIMCTL" wait-ready "$WORK/sim/ready.json" --timeout 60 >/dev/null || {
    cat "$WORK/sim.log" >&2
    fail "simulator did not start"
  }
  export XAPISIM_READY="$WORK/sim/ready.json"
  SIM_URL=$(json_get "$XAPISIM_READY" https_url)
  SIM_HTTP_URL=$(json_get "$XAPISIM_READY" url)
  SIM_CA=$(json_get "$XAPISIM_READY" ca_cert)
  echo xenroot >"$WORK/pw"
  chmod 600 "$WORK/pw"
}

# json_get FILE KEY[.KEY...]: prints one value of a JSON file ("-" = stdin).
json_get() {
  python3 -c '
import json, sys
src = sys.stdin if sys.argv[1] == "-" else open(sys.argv[1])
v = json.load(src)
for k in sys.argv[2].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$1" "$2"
}

# cbt ARGS...: cbt-backup against the simulator and $WORK/repo.
cbt() {
  "$CBT_BACKUP" --server "$SIM_URL" --ca-cert "$SIM_CA" --password-file "$WORK/pw" \
    --repo "$WORK/repo" "$@"
}

# create_demo_vm: a VM "demo" on the simulator with two disks and an empty CD
# drive: a 64 MiB ext4 disk and a raw disk of random bytes whose size is not
# a multiple of 64 KiB.  Sets VM, V1, V2.
create_demo_vm() {
  truncate -s 64M "$WORK/d1.img"
  mkfs.ext4 -q -F "$WORK/d1.img"
  head -c $((3 * 65536 + 1024)) /dev/urandom >"$WORK/d2.img"
  "$SIMCTL" create-vm demo --disk "$WORK/d1.img" --disk "$WORK/d2.img" --cd >"$WORK/vm.json"
  VM=$(json_get "$WORK/vm.json" uuid)
  V1=$(json_get "$WORK/vm.json" vdis.0.uuid)
  V2=$(json_get "$WORK/vm.json" vdis.1.uuid)
}
