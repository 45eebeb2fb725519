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

# cbt_in REPO ARGS...: cbt-backup against the simulator and REPO.
cbt_in() {
  local repo=$1
  shift
  "$CBT_BACKUP" --server "$SIM_URL" --ca-cert "$SIM_CA" --password-file "$WORK/pw" \
    --repo "$repo" "$@"
}

# cbt ARGS...: cbt-backup against the simulator and $WORK/repo.
cbt() { cbt_in "$WORK/repo" "$@"; }

# cbt_bg REPO OUT ARGS...: starts cbt-backup against the simulator and REPO
# in the background, stdout to OUT and stderr to $WORK/bg.err; sets BG to its
# pid.  BG is cbt-backup itself, not a subshell, so signals sent to it (kill
# -9 included) reach the program.
cbt_bg() {
  local repo=$1 out=$2
  shift 2
  "$CBT_BACKUP" --server "$SIM_URL" --ca-cert "$SIM_CA" --password-file "$WORK/pw" \
    --repo "$repo" "$@" >"$out" 2>"$WORK/bg.err" &
  BG=$!
}

# wait_nbd_active PID: waits (at most 20 s) until the simulator has an NBD
# connection open, as the command PID reads a disk; fails if PID ends first.
wait_nbd_active() {
  local _
  for _ in $(seq 200); do
    [ "$("$SIMCTL" nbd-stats | json_get - active_connections)" != 0 ] && return 0
    kill -0 "$1" 2>/dev/null ||
      fail "the command ended before it read over NBD: $(cat "$WORK/bg.err" 2>/dev/null)"
    sleep 0.1
  done
  fail "no NBD connection opened"
}

# with_fault FAULT CMD...: runs CMD with the simulator's fault FAULT on, and
# turns FAULT off again once CMD succeeded.
with_fault() {
  local fault=$1
  shift
  "$SIMCTL" fault "$fault" on >/dev/null
  "$@"
  "$SIMCTL" fault "$fault" off >/dev/null
}

# expect_error PATTERN CMD...: CMD fails with exactly one error line of
# cbt-backup, and that line matches PATTERN (case-insensitive).
expect_error() {
  local pat=$1
  shift
  local msg
  msg=$(expect_fail "$@" | grep '^cbt-backup' || true)
  [ "$(echo "$msg" | grep -c .)" = 1 ] || fail "not one error line: $msg"
  echo "$msg" | grep -qi -- "$pat" || fail "expected '$pat', got: $msg"
  echo "  ok: $msg"
}

# create_vm NAME [create-vm options...]: creates a VM on the simulator, its
# record in $WORK/vm.json, and sets VM to its uuid and V1 and V2 to those of
# its first two disks (empty when it has fewer).
create_vm() {
  "$SIMCTL" create-vm "$@" >"$WORK/vm.json"
  read -r VM V1 V2 < <(python3 -c '
import json, sys
vm = json.load(open(sys.argv[1]))
print(vm["uuid"], *[d["uuid"] for d in vm["vdis"][:2]])' "$WORK/vm.json")
}

# create_vms COUNT [create-vms options...]: creates COUNT VMs on the
# simulator in one call (simctl create-vms: names PREFIX-01..., generated
# disk content), their records in $WORK/vms.json, one line per disk
# "NAME VM-UUID VDI-UUID FILE" in $WORK/vms.txt (FILE: the disk's content,
# which a point of it must equal until the disk is written to), and sets the
# array VMS to the VMs' uuids, in order.
create_vms() {
  local count=$1
  shift
  "$SIMCTL" create-vms --count "$count" "$@" >"$WORK/vms.json"
  python3 -c '
import json, sys
for vm in json.load(open(sys.argv[1])):
    for d in vm["vdis"]:
        print(vm["name_label"], vm["uuid"], d["uuid"], d["path"])' "$WORK/vms.json" >"$WORK/vms.txt"
  mapfile -t VMS < <(python3 -c '
import json, sys
for vm in json.load(open(sys.argv[1])):
    print(vm["uuid"])' "$WORK/vms.json")
}

# create_demo_vm: a VM "demo" on the simulator with two disks and an empty CD
# drive: a 64 MiB ext4 disk and a raw disk of random bytes whose size is not
# a multiple of 64 KiB.  Sets VM, V1, V2.
create_demo_vm() {
  truncate -s 64M "$WORK/d1.img"
  mkfs.ext4 -q -F "$WORK/d1.img"
  head -c $((3 * 65536 + 1024)) /dev/urandom >"$WORK/d2.img"
  create_vm demo --disk "$WORK/d1.img" --disk "$WORK/d2.img" --cd
}

# points: how many points of $VM are committed in $WORK/repo.
points() { ls "$WORK/repo/$VM" 2>/dev/null | grep -c '^2' || true; }

# no_leftovers WHEN: nothing of a failed or interrupted command is left: no
# temporary point of $VM in $WORK/repo, no snapshot VM on the simulator, and
# no snapshot VDI there that is more than CBT metadata.
no_leftovers() {
  ls -a "$WORK/repo/$VM" 2>/dev/null | grep -q '^\.tmp-' && fail "temporary point left: $1"
  "$SIMCTL" vms | python3 -c '
import json, sys
snaps = [v["uuid"] for v in json.load(sys.stdin) if v.get("is_a_snapshot")]
assert not snaps, (sys.argv[1], "snapshot VMs left", snaps)' "$1"
  "$SIMCTL" vdis | python3 -c '
import json, sys
full = [v["uuid"] for v in json.load(sys.stdin) if v.get("is_a_snapshot") and v["type"] != "cbt_metadata"]
assert not full, (sys.argv[1], "snapshot VDIs with data left", full)' "$1"
}

# no_valid_sessions WHEN: cbt-backup opened sessions on the simulator and
# logged every one of them out.
no_valid_sessions() {
  "$SIMCTL" sessions | python3 -c '
import json, sys
s = json.load(sys.stdin)
ours = [x for x in s if x["originator"] == "cbt-backup"]
assert ours, "no session with originator cbt-backup: %r" % s
left = [x["ref"] for x in ours if x["valid"]]
assert not left, (sys.argv[1], "sessions of cbt-backup still valid", left)' "$1"
}

# xapi_py CODE [ARG...]: runs the python CODE against the simulator's XenAPI
# (https, checked with its CA) in a session of root with the password in
# $WORK/pw, logged out afterwards.  In CODE, call(METHOD, *PARAMS) calls
# METHOD with that session and returns its value (a XenAPI error ends the
# script with status 1), and `args` is the list of ARGs.  With
# XAPI_ORIGINATOR set, the login names that originator (API version 1.0);
# without it, the session is anonymous.
xapi_py() {
  [ -f "$WORK/xapi.py" ] || cat >"$WORK/xapi.py" <<'PY'
import json, os, ssl, sys, xmlrpc.client
ready = json.load(open(os.environ["XAPISIM_READY"]))
ctx = ssl.create_default_context(cafile=ready["ca_cert"])
px = xmlrpc.client.ServerProxy(ready["https_url"], context=ctx)
def unwrap(r):
    if r["Status"] != "Success":
        sys.exit("XenAPI error: %r" % (r["ErrorDescription"],))
    return r["Value"]
login = ["root", open(sys.argv[1]).read().strip()]
if os.environ.get("XAPI_ORIGINATOR"):
    login += ["1.0", os.environ["XAPI_ORIGINATOR"]]
session = unwrap(px.session.login_with_password(*login))
def call(method, *a):
    return unwrap(getattr(px, method)(session, *a))
args = sys.argv[3:]
try:
    exec(sys.argv[2])
finally:
    px.session.logout(session)
PY
  XAPI_ORIGINATOR=${XAPI_ORIGINATOR:-} python3 "$WORK/xapi.py" "$WORK/pw" "$@"
}

# stored_block REPO FILE [SKIP]: where a block of disk file FILE (version 2)
# is kept in the block store, as "PACK OFFSET SIZE DISK-OFFSET": the data
# entry after SKIP others (default 0) whose stored block no other entry of
# the repository names, so that damaging it damages that one block of that
# one point (docs/FORMAT.md, disk files of version 2 and packs).
stored_block() {
  python3 - "$@" <<'PY'
import glob, os, struct, sys
repo, target = sys.argv[1], os.path.realpath(sys.argv[2])
skip = int(sys.argv[3]) if len(sys.argv) > 3 else 0
def entries(path):
    b = open(path, "rb").read()
    if len(b) < 4096 or b[:8] != b"CBTDISK\0" or struct.unpack_from("<I", b, 8)[0] != 2:
        return []
    count, index = struct.unpack_from("<Q", b, 48)[0], struct.unpack_from("<Q", b, 64)[0]
    out = []
    for i in range(count):
        blk, kind, size, pack, off, _ = struct.unpack_from("<QIIQQQ", b, index + 48 * i)
        if kind == 1:
            out.append((blk, size, pack, off))
    return out
uses = {}
for f in glob.glob(os.path.join(repo, "*", "*", "*.cbd")):
    for blk, size, pack, off in entries(f):
        uses[(pack, off)] = uses.get((pack, off), 0) + 1
for blk, size, pack, off in entries(target):
    if uses[(pack, off)] != 1:
        continue
    if skip > 0:
        skip -= 1
        continue
    h = "%016x" % pack
    print(os.path.join(repo, "packs", h[:2], h + ".pack"), off, size, blk * 65536)
    sys.exit(0)
sys.exit("no block of %s is stored for it alone" % target)
PY
}
