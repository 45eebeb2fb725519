# shellcheck shell=bash
# Shared by the benchmarks that run against the XAPI simulator: a work
# directory removed at exit, a simulator in it, and small helpers.
# Sourced after `cd` to the source tree; sets W, BIN, SIMCTL.
scripts/setup-deps.sh
[ -x build/tools/cbt-backup ] || scripts/build.sh release
BIN=$PWD/build
SIMCTL=$PWD/scripts/xapi-sim/simctl
W=$(mktemp -d "${TMPDIR:-/var/tmp}/cbt-bench.XXXXXX")
SIM_PID=""
_bench_cleanup() {
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null || true
  umount "$W/xfs" 2>/dev/null || true
  [ -n "${LOOPDEV:-}" ] && losetup -d "$LOOPDEV" 2>/dev/null || true
  rm -rf "$W"
}
trap _bench_cleanup EXIT

json() {
  python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$1"
}
now() { date +%s.%N; }
# min BEST SECS: the smaller of two timings (BEST may be empty: none yet)
min() { if [ -z "$1" ] || [ "$(echo "$2 < $1" | bc)" = 1 ]; then echo "$2"; else echo "$1"; fi; }

# make_disk PATH GIB DATA_MIB PERIOD_MIB: a GIB disk holding DATA_MIB of
# random data at the start of every PERIOD_MIB, holes elsewhere.
make_disk() {
  python3 - "$@" <<'PY'
import os, sys
path, gib, data, period = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with open(path, "wb") as f:
    f.truncate(gib << 30)
    for off in range(0, gib << 30, period << 20):
        f.seek(off)
        f.write(os.urandom(data << 20))
PY
}

# The simulator's disks live on an XFS filesystem with reflinks, so that its
# snapshots (cp --reflink=auto) cost what XenServer's metadata-only VHD
# snapshots cost: nearly nothing.  On ext4 each snapshot would copy the whole
# disk and dominate every backup's time.  Sets D, the directory to put disk
# images in.
command -v mkfs.xfs >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xfsprogs >/dev/null
truncate -s 64G "$W/xfs.img"
mkfs.xfs -q -m reflink=1 "$W/xfs.img"
mkdir -p "$W/xfs"
# LOOP_DIRECT_IO=on (set by a benchmark before sourcing this): direct I/O
# on the loop device.  Otherwise one kernel worker reads the image file
# through the page cache, one request after the other, so the simulator's
# disks answer random reads (a backup's) far slower than a storage
# repository would.  Writes (a restore's) are faster buffered.
LOOPDEV=$(losetup --direct-io="${LOOP_DIRECT_IO:-off}" -f --show "$W/xfs.img")
mount "$LOOPDEV" "$W/xfs"
D=$W/xfs

# start_sim: starts the simulator in $D/sim; sets URL, CA, XAPISIM_READY and
# a password file $W/pw.
start_sim() {
  python3 scripts/xapi-sim/xapisim.py --state "$D/sim" --port 0 --https-port 0 >"$W/sim.log" 2>&1 &
  SIM_PID=$!
  "$SIMCTL" wait-ready "$D/sim/ready.json" >/dev/null
  export XAPISIM_READY=$D/sim/ready.json
  URL=$(json https_url <"$XAPISIM_READY")
  CA=$(json ca_cert <"$XAPISIM_READY")
  echo xenroot >"$W/pw"
  chmod 600 "$W/pw"
}

cbt() { "$BIN/tools/cbt-backup" --server "$URL" --ca-cert "$CA" --password-file "$W/pw" --repo "$W/repo" "$@"; }
