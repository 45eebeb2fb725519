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
