#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): repositories on S3-compatible
# object storage against restic and against the endpoint's own ceiling, in
# the same run, on a single-node Ceph RADOS Gateway (one monitor, one OSD on
# memstore) that the script starts itself (tests/rgw.sh).
#
# The disk: a SIZE image (default 4 GiB) holding 1 MiB of random data at the
# start of every 2 MiB, holes elsewhere, as in scripts/bench/backup.sh; a
# change writes random data over 64 KiB blocks at random places (fixed
# seeds).  The image is in the page cache before every store, so that all
# tools read the same warm source and the figures are about the store.
#   ceiling  SIZE/2 bytes of the image (what the full backup stores) as
#            16 MiB objects, PUT by JOBS parallel curls (default 8), then
#            GET back the same way to /dev/null;
#   full     `cbt-backup import-image` of the image as a base point, and
#            `restic backup` of the file into another bucket (repository
#            version 2, --compression auto, when this restic has them):
#            time, MiB/s of the virtual size and of the bytes stored; the
#            time the PUT ceiling needs for cbt-backup's stored bytes;
#   1%       1% of the blocks changed, imported with --changed-blocks (what a
#            backup with Changed Block Tracking reads); restic backup of the
#            changed file (it reads and chunks all of it);
#   chain    28 more points of 0.5% each, imported with --changed-blocks: a
#            chain of depth 30 (base, 1%, 28 points);
#   reads    cold (page cache dropped; cbtfs mounted afresh on an empty
#            working copy, so every byte comes from the gateway): dd bs=4M
#            of the newest point (depth 30) and of the base (depth 1);
#            `restic dump` of restic's snapshot of the final image, with an
#            empty cache; the GET ceiling for the newest point's data.
# The OSD holds at most 4 GiB in memory: the phases take turns, each bucket
# is purged once measured, and restic's final image goes into a repository
# of its own (a dump from a lone snapshot reads fewer packs than from one
# with history: that favours restic).  The gateway runs with tcp_nodelay=1
# on its beast frontend (tests/rgw.sh): without it every request after the
# first on a kept-alive connection waits 40 ms for the client's delayed
# ACK, a cost of the set-up, not of the tools.  It serves HTTPS (a CA made
# for the run, trusted by every tool), as an object store across a network
# should; --http measures plain HTTP, where cbt-backup also sends each
# pack's MD5 (a second pass over it) since no TLS protects the body.  The
# summary gives the ratios
# against the targets: full backup at least 0.8x the PUT ceiling and faster
# than restic; the depth-30 point read at least 2x as fast as restic dump.
#
# Run as root (drop_caches, FUSE) with Ceph (mon, osd, radosgw), restic and
# fuse3; it needs about 3x SIZE of free space in TMPDIR (default /var/tmp).
#   scripts/bench/s3.sh [--size GIB] [--jobs N] [--http]    (--size 1: a quick try)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
SIZE_GIB=4 JOBS=8 PLAIN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZE_GIB=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --http) PLAIN=1; shift ;;
    *) echo "usage: $0 [--size GIB] [--jobs N] [--http]" >&2; exit 2 ;;
  esac
done
[[ "$SIZE_GIB" =~ ^[1-4]$ ]] || { echo "--size takes 1 to 4 (GiB; the OSD holds 4 GiB in memory)" >&2; exit 2; }
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "--jobs takes a whole number of at least 1" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root (drop_caches, FUSE)" >&2; exit 2; }
[ -x "$SRC/build/tools/cbt-backup" ] || "$SRC/scripts/build.sh" release
TMPDIR=${TMPDIR:-/var/tmp}
# shellcheck source=SCRIPTDIR/../../tests/functions.sh
source "$SRC/tests/functions.sh"  # WORK (removed at exit), fail, mount_cbtfs
# shellcheck source=SCRIPTDIR/../../tests/rgw.sh
source "$SRC/tests/rgw.sh"
requires_rgw && requires_fuse && requires restic bc
W=$WORK CBT=$SRC/build/tools/cbt-backup REPO=s3://cbt-bench/pool DEPTH=30
VM=5b3a0000-0000-4000-8000-0000000000a1 VDI=5b3a0000-0000-4000-8000-0000000000d1
SIZE=$((SIZE_GIB << 30)) MIBS=$((SIZE_GIB << 10))
export RESTIC_PASSWORD=restic-bench
mkdir -p "$W/vm" "$W/chunks" "$W/mnt"

now() { date +%s.%N; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
warm() { cat "$1" >/dev/null; }
secs() { local t; t=$(now); "$@" >/dev/null || fail "failed: $*"; echo "$(now) - $t" | bc; }  # CMD's seconds
mib() { echo "scale=1; $1 / 1048576" | bc | sed 's/^\./0./'; }
ratio() { echo "scale=2; $1 / $2" | bc | sed 's/^\./0./'; }
rate() { echo "scale=0; $1 / ($2 * 1048576)" | bc; }  # MiB/s of BYTES in SECS
f1() { printf '%.1f' "$1"; }
cbt() { CBT_CACHE_DIR=$W/wc "$CBT" --repo "$REPO" "$@"; }
pyjson() { python3 -c "import json, sys; v = json.load(sys.stdin); print($1)"; }
bucket_bytes() { timeout 60 radosgw-admin bucket stats --bucket="$1" | pyjson 'sum(u["size"] for u in v["usage"].values())'; }
PEAK=0; note_peak() { [ "$1" -le "$PEAK" ] || PEAK=$1; }
purge() {  # purge BUCKET: its objects and itself, the space given back at once
  timeout 600 radosgw-admin bucket rm --bucket="$1" --purge-objects --bypass-gc >/dev/null 2>&1 || fail "cannot purge $1"
  timeout 600 radosgw-admin gc process --include-all >/dev/null 2>&1 || true
}
# img make IMAGE BYTES: the disk; img change IMAGE PCT SEED LIST: random data
# over PCT% of the 64 KiB blocks, their numbers into LIST; img data IMAGE:
# the bytes of its blocks that are not zeros
img() {
  python3 - "$@" <<'PY'
import os, random, sys
mode, path, B = sys.argv[1], sys.argv[2], 65536
if mode == "make":
    with open(path, "wb") as f:
        f.truncate(int(sys.argv[3]))
        for off in range(0, int(sys.argv[3]), 2 << 20):
            f.seek(off), f.write(os.urandom(1 << 20))
elif mode == "change":
    n = os.path.getsize(path) // B
    blocks = sorted(random.Random(int(sys.argv[4])).sample(range(n), max(1, int(n * float(sys.argv[3]) / 100))))
    with open(path, "r+b") as f:
        for b in blocks:
            f.seek(b * B), f.write(os.urandom(B))
    with open(sys.argv[5], "w") as f:
        f.writelines(f"{b}\n" for b in blocks)
else:
    n, zero = 0, bytes(B)
    with open(path, "rb") as f:
        while b := f.read(B):
            n += b != zero[:len(b)]
    print(n * B)
PY
}
point() { date -u -d "@$((1767225600 + $1 * 3600))" +%Y%m%dT%H%M%SZ; }  # 2026-01-01, hourly
cbt_import() {  # cbt_import POINT [LIST]
  local args=(import-image --vm "$VM" --disk "$VDI" --point "$1")
  [ -z "${2:-}" ] || args+=(--changed-blocks "$2")
  cbt -q "${args[@]}" "$W/vm/disk.img"
}
# stored POINT: the bytes its import added (list --json; the packs included)
stored() { cbt list --json | pyjson "sum(d['stored_bytes'] for p in v['vms'][0]['points'] if p['point'] == '$1' for d in p['disks'])"; }

# --- the data set and the gateway ----------------------------------------------
img make "$W/base.img" "$SIZE"
[ "$PLAIN" = 1 ] || export RGW_TLS=1
start_rgw cbt-bench 2> >(grep -v -e 'Falling back to public interface' -e log_to_monitors -e '^$' >&2)
RESTIC_CA=()
if [ -n "${RGW_CA:-}" ]; then
  export RGW_CA AWS_CA_BUNDLE=$RGW_CA
  RESTIC_CA=(--cacert "$RGW_CA")
fi
restic() { command restic "${RESTIC_CA[@]}" "$@"; }
echo "endpoint: $RGW_URL"
echo "disk: $SIZE_GIB GiB, 1 MiB of random data every 2 MiB, holes elsewhere; $JOBS parallel transfers for the ceiling"
echo "$(ceph --version | awk '{print "ceph", $3}') RADOS Gateway on memstore (tcp_nodelay=1); $(restic version | awk '{print $1, $2}')"

# --- the ceiling: plain PUTs and GETs of as many bytes as the full backup stores ---
s3_curl -f -X PUT "$RGW_URL/ceiling" -o /dev/null || fail "cannot create bucket ceiling"
head -c $((SIZE / 2)) "$W/base.img" | split -b 16M -a 4 - "$W/chunks/c."
CHUNK_BYTES=$((SIZE / 2))
put1() { s3_curl -f -o /dev/null -T "$W/chunks/$1" "$RGW_URL/ceiling/$1"; }
get1() { s3_curl -f -o /dev/null "$RGW_URL/ceiling/$1"; }
export -f s3_curl put1 get1 && export RGW_URL W
chunks() { find "$W/chunks" -type f -printf '%f\n'; }
each() { chunks | xargs -P "$JOBS" -I{} bash -c "$1 {}"; }  # each put1|get1: all chunks, JOBS at once
cat "$W/chunks"/* >/dev/null
PUT_T=$(secs each put1)
GET_T=$(secs each get1)
echo "ceiling: $(mib "$CHUNK_BYTES") MiB in $(chunks | wc -l) objects: PUT $(f1 "$PUT_T") s ($(rate "$CHUNK_BYTES" "$PUT_T") MiB/s), GET $(f1 "$GET_T") s ($(rate "$CHUNK_BYTES" "$GET_T") MiB/s)"
purge ceiling
rm -rf "$W/chunks"

# --- cbt-backup: full, 1%, then the chain -----------------------------------------
cp --sparse=always "$W/base.img" "$W/vm/disk.img" && warm "$W/vm/disk.img"
CBT_FULL_T=$(secs cbt_import "$(point 0)")
CBT_FULL_B=$(stored "$(point 0)")
echo "cbt-backup full: $(f1 "$CBT_FULL_T") s, $(mib "$CBT_FULL_B") MiB stored ($(mib "$(bucket_bytes cbt-bench)") MiB of objects)"
img change "$W/vm/disk.img" 1 1 "$W/list1"
cp --sparse=always "$W/vm/disk.img" "$W/inc.img" && warm "$W/vm/disk.img"
CBT_INC_T=$(secs cbt_import "$(point 1)" "$W/list1")
CBT_INC_B=$(stored "$(point 1)")
echo "cbt-backup 1% ($(wc -l <"$W/list1") blocks): $(f1 "$CBT_INC_T") s, $(mib "$CBT_INC_B") MiB stored"
CHAIN_T=0
for i in $(seq 2 $((DEPTH - 1))); do
  img change "$W/vm/disk.img" 0.5 "$i" "$W/list"
  CHAIN_T=$(echo "$CHAIN_T + $(secs cbt_import "$(point "$i")" "$W/list")" | bc)
done
NEWEST=$(point $((DEPTH - 1)))
NPOINTS=$(cbt list --json | pyjson 'len(v["vms"][0]["points"])')
CBT_ALL_OBJ=$(bucket_bytes cbt-bench)
note_peak "$CBT_ALL_OBJ"
echo "chain: $NPOINTS points, $((DEPTH - 2)) imports of 0.5% in $(f1 "$CHAIN_T") s ($(f1 "$(echo "$CHAIN_T / ($DEPTH - 2)" | bc -l)") s each); $(mib "$CBT_ALL_OBJ") MiB of objects"

# cold_read POINT IMAGE: mounts afresh on an empty working copy; sets MNT_T
# (until the point's file shows) and READ_T (dd of it); compares with IMAGE
cold_read() {
  local t raw=$W/mnt/$VM/$1/$VDI.raw
  rm -rf "$W/rc"; drop; t=$(now)
  CBT_CACHE_DIR=$W/rc mount_cbtfs "$REPO" "$W/mnt"
  for _ in $(seq 100); do [ -e "$raw" ] && break; sleep 0.05; done
  MNT_T=$(echo "$(now) - $t" | bc)
  READ_T=$(secs dd if="$raw" of=/dev/null bs=4M status=none)
  cmp "$raw" "$2" || fail "cbtfs: point $1 differs from its image"
  umount_cbtfs "$W/mnt"
}
cold_read "$NEWEST" "$W/vm/disk.img"; MNT30=$MNT_T READ30=$READ_T
cold_read "$(point 0)" "$W/base.img"; MNT1=$MNT_T READ1=$READ_T
echo "cbtfs cold read: depth $DEPTH $(f1 "$READ30") s (mount $(f1 "$MNT30") s), depth 1 $(f1 "$READ1") s (mount $(f1 "$MNT1") s); both read back byte for byte"
purge cbt-bench
NEWEST_B=$(img data "$W/vm/disk.img")
mv "$W/vm/disk.img" "$W/final.img"

# --- restic: full and 1% in one repository, the final image in another -------------
restic_init() {
  restic -r "$1" init -q --repository-version 2 >/dev/null 2>&1 || restic -r "$1" init -q >/dev/null
  restic -r "$1" cat config | pyjson 'v["version"]'
}
put_disk() { rm -f "$W/vm/disk.img"; mv "$1" "$W/vm/disk.img"; warm "$W/vm/disk.img"; }
rbackup() { secs restic -r "$1" backup -q "${RFLAGS[@]}" "$W/vm/disk.img"; }
RA=s3:$RGW_URL/restic-a/r RB=s3:$RGW_URL/restic-b/r
export RESTIC_CACHE_DIR=$W/restic-cache
RVERSION=$(restic_init "$RA")
RFLAGS=()
[ "$RVERSION" -lt 2 ] || RFLAGS=(--compression auto)
put_disk "$W/base.img"
R_FULL_T=$(rbackup "$RA")
R_FULL_B=$(bucket_bytes restic-a)
put_disk "$W/inc.img"
R_INC_T=$(rbackup "$RA")
R_INC_B=$(($(bucket_bytes restic-a) - R_FULL_B))
note_peak $((R_FULL_B + R_INC_B))
echo "restic (repository version $RVERSION${RFLAGS[*]:+, ${RFLAGS[*]}}): full $(f1 "$R_FULL_T") s, $(mib "$R_FULL_B") MiB; 1% $(f1 "$R_INC_T") s, +$(mib "$R_INC_B") MiB"
purge restic-a
put_disk "$W/final.img"
restic_init "$RB" >/dev/null
R_FINAL_T=$(rbackup "$RB")
R_FINAL_B=$(bucket_bytes restic-b)
note_peak "$R_FINAL_B"
rm -rf "$RESTIC_CACHE_DIR"; drop
DUMP_T=$(secs restic -r "$RB" dump latest "$W/vm/disk.img")
echo "restic, the final image into a fresh repository: $(f1 "$R_FINAL_T") s, $(mib "$R_FINAL_B") MiB; cold dump $(f1 "$DUMP_T") s"

# --- summary ----------------------------------------------------------------------
CEIL_PUT_T=$(echo "scale=3; $CBT_FULL_B * $PUT_T / $CHUNK_BYTES" | bc)  # the ceiling's time for these bytes
CEIL_GET_T=$(echo "scale=3; $NEWEST_B * $GET_T / $CHUNK_BYTES" | bc)
echo
echo "store of the $MIBS MiB disk: s; MiB/s of the virtual size and of the bytes stored"
printf '%-26s %8s %10s %12s %11s\n' "" seconds "virt MiB/s" "stored MiB/s" "stored MiB"
row() { printf '%-26s %8s %10s %12s %11s\n' "$1" "$(f1 "$2")" "$(rate "$SIZE" "$2")" "$(rate "$3" "$2")" "$(mib "$3")"; }
row "PUT ceiling, same bytes" "$CEIL_PUT_T" "$CBT_FULL_B"
row "cbt-backup full" "$CBT_FULL_T" "$CBT_FULL_B"
row "restic full" "$R_FULL_T" "$R_FULL_B"
row "cbt-backup 1%, CBT list" "$CBT_INC_T" "$CBT_INC_B"
row "restic 1%" "$R_INC_T" "$R_INC_B"
echo
echo "cold read of the $MIBS MiB disk: s (MiB/s of the virtual size)"
cell() { printf '%s (%s)' "$(f1 "$1")" "$(rate "$SIZE" "$1")"; }
printf '%-48s %14s\n' "GET ceiling, the newest point's $(mib "$NEWEST_B") MiB" "$(cell "$CEIL_GET_T")"
printf '%-48s %14s\n' "cbtfs, newest point (depth $DEPTH)" "$(cell "$READ30")"
printf '%-48s %14s\n' "cbtfs, base point (depth 1, $(mib $((SIZE / 2))) MiB of data)" "$(cell "$READ1")"
printf '%-48s %14s\n' "restic dump, the final image" "$(cell "$DUMP_T")"
echo
echo "summary (at most $(mib "$PEAK") MiB of objects in the gateway at once)"
printf '%-50s %6sx  (target >= 0.8)\n' "full backup vs PUT ceiling (ceiling s / s)" "$(ratio "$CEIL_PUT_T" "$CBT_FULL_T")"
printf '%-50s %6sx  (target > 1)\n' "full backup vs restic (restic s / s)" "$(ratio "$R_FULL_T" "$CBT_FULL_T")"
printf '%-50s %6sx\n' "1% incremental vs restic (restic s / s)" "$(ratio "$R_INC_T" "$CBT_INC_T")"
printf '%-50s %6sx  (target >= 2)\n' "depth-$DEPTH read vs restic dump (dump s / s)" "$(ratio "$DUMP_T" "$READ30")"
printf '%-50s %6sx\n' "depth-$DEPTH read vs depth-1 read (depth-1 s / s)" "$(ratio "$READ1" "$READ30")"
printf '%-50s %6sx\n' "depth-$DEPTH read vs GET ceiling (ceiling s / s)" "$(ratio "$CEIL_GET_T" "$READ30")"
