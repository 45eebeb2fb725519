#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): repositories on S3-compatible
# object storage, against restic and against the endpoint's own ceiling, in
# the same run, on a single-node Ceph RADOS Gateway (one monitor, one OSD on
# memstore) that the script starts itself (tests/rgw.sh).
#
# The data set: a SIZE disk image (default 4 GiB) holding 1 MiB of random
# (incompressible) data at the start of every 2 MiB, holes elsewhere, as
# scripts/bench/backup.sh builds it.  Changes write random data over 64 KiB
# blocks at random positions (a fixed seed per step).
#
# Measured, the image in the page cache before every store (each tool reads
# the same warm source, so the figures are about the path to the store):
#   ceiling  SIZE/2 bytes of the image (what the full backup stores) as
#            16 MiB objects, PUT by JOBS parallel curls (default 8), then
#            GET back in parallel to /dev/null: MiB/s each way;
#   full     `cbt-backup import-image` of the image as a base point into
#            s3://BUCKET/PREFIX, and `restic backup` of the same file into
#            another bucket (repository version 2, --compression auto, when
#            this restic has it): time, MiB/s of the virtual size and of the
#            bytes stored; the time the PUT ceiling needs for those bytes;
#   1%       1% of the blocks changed, imported with --changed-blocks (what
#            a backup with Changed Block Tracking reads), and restic backup
#            of the changed file (restic reads and chunks all of it): time;
#   chain    28 more points, each changing 0.5% of the blocks, imported with
#            --changed-blocks: a chain of depth 30 (base, 1%, 28 points);
#   reads    cold reads (page cache dropped, cbtfs mounted afresh with an
#            empty working copy, so every pack byte comes from the gateway)
#            with dd bs=4M of the newest point (depth 30) and of the base
#            (depth 1); `restic dump` of restic's snapshot of the final image
#            with an empty restic cache; the GET ceiling for the bytes the
#            newest point reads (the repository's stored bytes).
# The OSD keeps everything in 4 GiB of memory, so the phases take turns:
# each bucket is purged (and the gateway's garbage collected) once measured.
# restic's final image therefore goes into a fresh repository of its own;
# a dump from a repository holding only that snapshot reads fewer packs than
# one with history would: it favours restic.
# The summary gives the ratios against the targets: full backup at least
# 0.8x the PUT ceiling and faster than restic; the newest point of a
# depth-30 chain read at least 2x as fast as restic dump; depth 30 vs 1.
#
# Run as root (drop_caches, FUSE) with Ceph (mon, osd, radosgw), restic and
# fuse3 installed.  About 3x SIZE of free space in TMPDIR (default /var/tmp).
#   scripts/bench/s3.sh [--size GIB] [--jobs N]
# --size 1 is a quick try.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
SIZE_GIB=4
JOBS=8
while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZE_GIB=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    *) echo "usage: $0 [--size GIB] [--jobs N]" >&2; exit 2 ;;
  esac
done
[[ "$SIZE_GIB" =~ ^[1-4]$ ]] || { echo "--size takes 1 to 4 (GiB; the OSD holds 4 GiB in memory)" >&2; exit 2; }
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "--jobs takes a whole number of at least 1" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root (drop_caches, FUSE)" >&2; exit 2; }
[ -x "$SRC/build/tools/cbt-backup" ] || "$SRC/scripts/build.sh" release
TMPDIR=${TMPDIR:-/var/tmp}
source "$SRC/tests/functions.sh"  # WORK (removed at exit), cleanup_fn, fail, mount_cbtfs
source "$SRC/tests/rgw.sh"
requires_rgw
requires_fuse
requires restic bc
W=$WORK
CBT=$SRC/build/tools/cbt-backup
VM=5b3a0000-0000-4000-8000-0000000000a1
VDI=5b3a0000-0000-4000-8000-0000000000d1
REPO=s3://cbt-bench/pool
DEPTH=30
SIZE=$((SIZE_GIB << 30))
MIBS=$((SIZE >> 20))
export RESTIC_PASSWORD=restic-bench
mkdir -p "$W/vm" "$W/chunks" "$W/mnt"

now() { date +%s.%N; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
warm() { cat "$1" >/dev/null; }
secs() {  # seconds taken by a command (its output discarded)
  local t
  t=$(now)
  "$@" >/dev/null || fail "failed: $*"
  echo "$(now) - $t" | bc
}
mib() { echo "scale=1; $1 / 1048576" | bc | sed 's/^\./0./'; }
ratio() { echo "scale=2; $1 / $2" | bc | sed 's/^\./0./'; }
rate() { echo "scale=0; $1 / 1048576 / $2" | bc; }  # MiB/s of BYTES in SECS
f1() { printf '%.1f' "$1"; }
cbt() { CBT_CACHE_DIR=$W/wc "$CBT" --repo "$REPO" "$@"; }
pyjson() { python3 -c "import json, sys; v = json.load(sys.stdin); print($1)"; }
used() { timeout 60 ceph df -f json | pyjson 'v["stats"]["total_used_raw_bytes"]'; }
bucket_bytes() {
  timeout 60 radosgw-admin bucket stats --bucket="$1" | pyjson 'sum(u["size"] for u in v["usage"].values())'
}
PEAK=0
note_peak() { local u; u=$(used); [ "$u" -le "$PEAK" ] || PEAK=$u; }
purge() {  # purge BUCKET: its objects and itself, space given back at once
  note_peak
  timeout 600 radosgw-admin bucket rm --bucket="$1" --purge-objects --bypass-gc >/dev/null 2>&1 ||
    fail "cannot purge bucket $1"
  timeout 600 radosgw-admin gc process --include-all >/dev/null 2>&1 || true
}
# change IMAGE PCT SEED LIST: random data over PCT% of the 64 KiB blocks,
# their numbers written to LIST
change() {
  python3 - "$@" <<'PY'
import os, random, sys
path, pct, seed, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
n = os.path.getsize(path) // 65536
blocks = sorted(random.Random(seed).sample(range(n), max(1, int(n * pct / 100))))
with open(path, "r+b") as f:
    for b in blocks:
        f.seek(b * 65536)
        f.write(os.urandom(65536))
with open(out, "w") as f:
    f.writelines(f"{b}\n" for b in blocks)
PY
}
point() { date -u -d "@$((1767225600 + $1 * 3600))" +%Y%m%dT%H%M%SZ; }  # 2026-01-01, hourly
cbt_import() {  # cbt_import POINT [LIST]: prints the stored bytes
  local args=(import-image --vm "$VM" --disk "$VDI" --point "$1")
  [ -z "${2:-}" ] || args+=(--changed-blocks "$2")
  cbt --json "${args[@]}" "$W/vm/disk.img" | pyjson 'v["stored_bytes"]'
}

# --- the data set and the gateway ----------------------------------------------
python3 - "$W/base.img" "$SIZE" <<'PY'
import os, sys
path, size = sys.argv[1], int(sys.argv[2])
with open(path, "wb") as f:
    f.truncate(size)
    for off in range(0, size, 2 << 20):
        f.seek(off)
        f.write(os.urandom(1 << 20))
PY
start_rgw cbt-bench
echo "disk: $SIZE_GIB GiB, 1 MiB of random data every 2 MiB, holes elsewhere; $JOBS parallel transfers for the ceiling"
echo "$(ceph --version | awk '{print "ceph", $3}') RADOS Gateway on memstore; $(restic version | awk '{print $1, $2}')"

# --- the ceiling: plain PUTs and GETs of the same amount of bytes --------------
s3_curl -f -X PUT "$RGW_URL/ceiling" -o /dev/null || fail "cannot create bucket ceiling"
head -c $((SIZE / 2)) "$W/base.img" | split -b 16M -a 4 - "$W/chunks/c."
CHUNK_BYTES=$((SIZE / 2))
NCHUNKS=$(ls "$W/chunks" | wc -l)
export -f s3_curl
export RGW_URL
put_all() { ls "$W/chunks" | xargs -P "$JOBS" -I{} bash -c 's3_curl -f -o /dev/null -T "$1/$2" "$RGW_URL/ceiling/$2"' _ "$W/chunks" {}; }
get_all() { ls "$W/chunks" | xargs -P "$JOBS" -I{} bash -c 's3_curl -f -o /dev/null "$RGW_URL/ceiling/$1"' _ {}; }
cat "$W/chunks"/* >/dev/null
PUT_T=$(secs put_all)
GET_T=$(secs get_all)
PUT_RATE=$(echo "scale=3; $CHUNK_BYTES / $PUT_T" | bc)
GET_RATE=$(echo "scale=3; $CHUNK_BYTES / $GET_T" | bc)
purge ceiling
rm -rf "$W/chunks"
echo "ceiling: $(mib "$CHUNK_BYTES") MiB in $NCHUNKS objects of 16 MiB: PUT $(f1 "$PUT_T") s ($(rate "$CHUNK_BYTES" "$PUT_T") MiB/s), GET $(f1 "$GET_T") s ($(rate "$CHUNK_BYTES" "$GET_T") MiB/s)"

# --- cbt-backup: full, 1%, then the chain -----------------------------------------
cp --sparse=always "$W/base.img" "$W/vm/disk.img"
warm "$W/vm/disk.img"
t=$(now); CBT_FULL_B=$(cbt_import "$(point 0)"); CBT_FULL_T=$(echo "$(now) - $t" | bc)
CBT_FULL_OBJ=$(bucket_bytes cbt-bench)
echo "cbt-backup full: $(f1 "$CBT_FULL_T") s, $(mib "$CBT_FULL_B") MiB stored ($(mib "$CBT_FULL_OBJ") MiB of objects in the bucket)"
change "$W/vm/disk.img" 1 1 "$W/list1"
cp --sparse=always "$W/vm/disk.img" "$W/inc.img"
warm "$W/vm/disk.img"
t=$(now); CBT_INC_B=$(cbt_import "$(point 1)" "$W/list1"); CBT_INC_T=$(echo "$(now) - $t" | bc)
NCHANGED=$(wc -l <"$W/list1")
echo "cbt-backup 1% ($NCHANGED blocks): $(f1 "$CBT_INC_T") s, $(mib "$CBT_INC_B") MiB stored"
CHAIN_T=0
for i in $(seq 2 $((DEPTH - 1))); do
  change "$W/vm/disk.img" 0.5 "$i" "$W/list"
  t=$(now); cbt_import "$(point "$i")" "$W/list" >/dev/null; CHAIN_T=$(echo "$CHAIN_T + $(now) - $t" | bc)
done
NEWEST=$(point $((DEPTH - 1)))
NPOINTS=$(cbt list --json | pyjson '" ".join(str(len(x["points"])) for x in v["vms"])')
CBT_ALL_OBJ=$(bucket_bytes cbt-bench)
echo "chain: $NPOINTS points, $((DEPTH - 2)) imports of 0.5% in $(f1 "$CHAIN_T") s ($(f1 "$(echo "$CHAIN_T / ($DEPTH - 2)" | bc -l)") s each); $(mib "$CBT_ALL_OBJ") MiB of objects"

# cold_read POINT: mounts afresh with an empty working copy; sets MNT_T
# (mount until the point's file shows) and READ_T (dd of it)
cold_read() {
  local t
  rm -rf "$W/rc"
  drop
  t=$(now)
  CBT_CACHE_DIR=$W/rc mount_cbtfs "$REPO" "$W/mnt"
  for _ in $(seq 100); do [ -e "$W/mnt/$VM/$1/$VDI.raw" ] && break; sleep 0.05; done
  MNT_T=$(echo "$(now) - $t" | bc)
  READ_T=$(secs dd if="$W/mnt/$VM/$1/$VDI.raw" of=/dev/null bs=4M status=none)
}
cold_read "$NEWEST"; MNT30=$MNT_T READ30=$READ_T
cmp "$W/mnt/$VM/$NEWEST/$VDI.raw" "$W/vm/disk.img" || fail "cbtfs: the newest point differs from the image"
umount_cbtfs "$W/mnt"
cold_read "$(point 0)"; MNT1=$MNT_T READ1=$READ_T
cmp "$W/mnt/$VM/$(point 0)/$VDI.raw" "$W/base.img" || fail "cbtfs: the base differs from its image"
umount_cbtfs "$W/mnt"
echo "cbtfs cold read: depth $DEPTH $(f1 "$READ30") s (mount $(f1 "$MNT30") s), depth 1 $(f1 "$READ1") s (mount $(f1 "$MNT1") s); both read back byte for byte"
purge cbt-bench
mv "$W/vm/disk.img" "$W/final.img"

# --- restic: full and 1% in one repository, the final image in another -------------
restic_init() {
  if ! restic -r "$1" init -q --repository-version 2 >/dev/null 2>&1; then
    restic -r "$1" init -q >/dev/null
  fi
  restic -r "$1" cat config | pyjson 'v["version"]'
}
RA=s3:$RGW_URL/restic-a/r
RB=s3:$RGW_URL/restic-b/r
export RESTIC_CACHE_DIR=$W/restic-cache
RVERSION=$(restic_init "$RA")
RFLAGS=()
[ "$RVERSION" -lt 2 ] || RFLAGS=(--compression auto)
mv "$W/base.img" "$W/vm/disk.img"
warm "$W/vm/disk.img"
R_FULL_T=$(secs restic -r "$RA" backup -q "${RFLAGS[@]}" "$W/vm/disk.img")
R_FULL_OBJ=$(bucket_bytes restic-a)
rm "$W/vm/disk.img"; mv "$W/inc.img" "$W/vm/disk.img"
warm "$W/vm/disk.img"
R_INC_T=$(secs restic -r "$RA" backup -q "${RFLAGS[@]}" "$W/vm/disk.img")
R_INC_OBJ=$(( $(bucket_bytes restic-a) - R_FULL_OBJ ))
echo "restic (repository version $RVERSION${RFLAGS[*]:+, ${RFLAGS[*]}}): full $(f1 "$R_FULL_T") s, $(mib "$R_FULL_OBJ") MiB; 1% $(f1 "$R_INC_T") s, +$(mib "$R_INC_OBJ") MiB"
purge restic-a
rm "$W/vm/disk.img"; mv "$W/final.img" "$W/vm/disk.img"
restic_init "$RB" >/dev/null
warm "$W/vm/disk.img"
R_FINAL_T=$(secs restic -r "$RB" backup -q "${RFLAGS[@]}" "$W/vm/disk.img")
rm -rf "$RESTIC_CACHE_DIR"
drop
DUMP_T=$(secs restic -r "$RB" dump latest "$W/vm/disk.img")
echo "restic final image in a fresh repository: backup $(f1 "$R_FINAL_T") s, $(mib "$(bucket_bytes restic-b)") MiB; cold dump $(f1 "$DUMP_T") s"
note_peak

# --- summary ----------------------------------------------------------------------
CEIL_PUT_T=$(echo "scale=3; $CBT_FULL_B / $PUT_RATE" | bc)
CEIL_GET_T=$(echo "scale=3; $CBT_ALL_OBJ / $GET_RATE" | bc)
echo
echo "store ($MIBS MiB disk), s; MiB/s of the virtual size, of the bytes stored"
printf '%-24s %8s %10s %10s %12s\n' step seconds "virt MiB/s" "stored MiB/s" "stored MiB"
row() { printf '%-24s %8s %10s %10s %12s\n' "$1" "$(f1 "$2")" "$(rate "$SIZE" "$2")" "$(rate "$3" "$2")" "$(mib "$3")"; }
row "PUT ceiling (same bytes)" "$CEIL_PUT_T" "$CBT_FULL_B"
row "cbt-backup full" "$CBT_FULL_T" "$CBT_FULL_B"
row "restic full" "$R_FULL_T" "$R_FULL_OBJ"
row "cbt-backup 1% (CBT)" "$CBT_INC_T" "$CBT_INC_B"
row "restic 1%" "$R_INC_T" "$R_INC_OBJ"
echo
echo "cold read of $MIBS MiB, s (MiB/s of the virtual size)"
cell() { printf '%s (%s)' "$(f1 "$1")" "$(rate "$SIZE" "$1")"; }
printf '%-34s %16s\n' "GET ceiling ($(mib "$CBT_ALL_OBJ") MiB)" "$(cell "$CEIL_GET_T")"
printf '%-34s %16s\n' "cbtfs, newest point (depth $DEPTH)" "$(cell "$READ30")"
printf '%-34s %16s\n' "cbtfs, base point (depth 1)" "$(cell "$READ1")"
printf '%-34s %16s\n' "restic dump, final image" "$(cell "$DUMP_T")"
echo
echo "summary (cluster peak $(mib "$PEAK") MiB raw used)"
printf '%-46s %7sx  (target >= 0.8)\n' "full backup vs PUT ceiling (ceiling t / t)" "$(ratio "$CEIL_PUT_T" "$CBT_FULL_T")"
printf '%-46s %7sx  (target > 1)\n' "full backup vs restic (restic t / t)" "$(ratio "$R_FULL_T" "$CBT_FULL_T")"
printf '%-46s %7sx\n' "1% incremental vs restic (restic t / t)" "$(ratio "$R_INC_T" "$CBT_INC_T")"
printf '%-46s %7sx  (target >= 2)\n' "depth-$DEPTH read vs restic dump (dump t / t)" "$(ratio "$DUMP_T" "$READ30")"
printf '%-46s %7sx\n' "depth-$DEPTH read vs depth-1 read (t30 / t1)" "$(ratio "$READ30" "$READ1")"
printf '%-46s %7sx\n' "depth-$DEPTH read vs GET ceiling (ceiling t / t)" "$(ratio "$CEIL_GET_T" "$READ30")"
