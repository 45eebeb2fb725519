#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): sequential read of the newest
# point of chains of depth 1, 10 and 100 through cbtfs, cold and warm,
# against qemu-img reading an equivalent qcow2 backing chain and against
# qemu-storage-daemon's FUSE export of that chain.
#
# A SIZE disk (default 4 GiB) about half full of data; each later point
# rewrites 1% of the disk's blocks, chosen at random.  Both chains hold the
# same bytes (checked with cmp at the end).  Run as root (drop_caches, FUSE).
#   scripts/bench/composed-read.sh [--size GIB] [--depth N] [--dir DIR] [--repeat R]
#                                  [--rewrite data|anywhere]
# With --dir the data set is kept in DIR and reused by later runs.
#
# --rewrite data (the default) picks the blocks among those holding data, as
# a guest overwriting its files does: the disk stays half full, so every
# depth reads the same amount of data and the comparison measures the chain.
# --rewrite anywhere picks them over the whole disk: rewrites then fill
# holes, and the newest point at depth 100 holds about 81% of the disk as
# data against the base's 50%, so it reads more bytes from the device
# whatever the format.  Either way the newest point's bytes are also stored
# as a single base (a second VM), and depth 100 is reported against that
# too: the cost of the chain itself.
#
# Every cold figure is the best of R runs (default 5): on a shared machine
# the slowest runs measure the neighbours, not the reader.  The cbtfs and
# qemu-img runs take turns across the depths, so that each depth sees the
# same stretch of the machine's drift, and the depth ratios are also given
# as the median of each round's own ratio (runs seconds apart, so drift
# cancels).
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_GIB=4
MAX_DEPTH=100
KEEP_DIR=""
REPEAT=5
REWRITE=data
while [ $# -gt 0 ]; do
  case "$1" in
    --rewrite) REWRITE=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --size) SIZE_GIB=$2; shift 2 ;;
    --depth) MAX_DEPTH=$2; shift 2 ;;
    --dir) KEEP_DIR=$2; shift 2 ;;
    *) echo "usage: $0 [--size GIB] [--depth N] [--dir DIR] [--repeat R] [--rewrite data|anywhere]" >&2; exit 2 ;;
  esac
done
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "--repeat takes a whole number of at least 1" >&2; exit 2; }
case "$REWRITE" in data|anywhere) ;; *) echo "--rewrite takes data or anywhere" >&2; exit 2 ;; esac
scripts/setup-deps.sh
command -v qemu-storage-daemon >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-common >/dev/null
}
[ -x build/tools/cbt-backup ] || scripts/build.sh release
BIN=$PWD/build
if [ -n "$KEEP_DIR" ]; then
  mkdir -p "$KEEP_DIR"
  W=$(cd "$KEEP_DIR" && pwd)
else
  W=$(mktemp -d "${TMPDIR:-/var/tmp}/cbt-bench.XXXXXX")
fi
QSD_PID=""
cleanup() {
  fusermount3 -u "$W/mnt" 2>/dev/null || true
  [ -n "$QSD_PID" ] && kill "$QSD_PID" 2>/dev/null || true
  sleep 0.3
  [ -n "$KEEP_DIR" ] || rm -rf "$W"
}
trap cleanup EXIT

BS=65536
NBLOCKS=$((SIZE_GIB * 1024 * 1024 * 1024 / BS))
CHANGED=$((NBLOCKS / 100))
REPO=$W/repo
ts() { printf '2026%02d%02dT%02d0000Z' $((1 + $1 / 600)) $((1 + ($1 / 24) % 25)) $(($1 % 24)); }
if [ -f "$W/ready" ] && [ "$(cat "$W/ready")" = "$SIZE_GIB $MAX_DEPTH $REWRITE" ]; then
  read -r VM VDI <"$W/ids"
  echo "reusing the data set in $W"
else
rm -rf "${W:?}"/*
VM=$(cat /proc/sys/kernel/random/uuid)
VDI=$(cat /proc/sys/kernel/random/uuid)
echo "$VM $VDI" >"$W/ids"
echo "disk: ${SIZE_GIB} GiB, $NBLOCKS blocks; $CHANGED blocks (1%) rewritten per point ($REWRITE); depth up to $MAX_DEPTH"

# The base: every other 1 MiB extent holds random data (about half full).
python3 - "$W/disk.img" "$SIZE_GIB" <<'PY'
import os, sys
path, gib = sys.argv[1], int(sys.argv[2])
size = gib << 30
with open(path, "wb") as f:
    f.truncate(size)
    chunk = 1 << 20
    for off in range(0, size, 2 * chunk):
        f.seek(off)
        f.write(os.urandom(chunk))
PY

t0=$(date +%s.%N)
"$BIN/tools/cbt-backup" --repo "$REPO" -q import-image --vm "$VM" --disk "$VDI" --point "$(ts 0)" "$W/disk.img"
qemu-img convert -q -O qcow2 "$W/disk.img" "$W/q0.qcow2"
echo "base written ($(du -sh "$REPO" | cut -f1) in the repository, $(du -sh "$W/q0.qcow2" | cut -f1) qcow2) in $(echo "$(date +%s.%N) - $t0" | bc) s"

# Later points: the same random blocks rewritten with the same bytes in the
# raw image (imported with a changed-block list) and in a new qcow2 overlay.
for k in $(seq 1 $((MAX_DEPTH - 1))); do
  python3 - "$W" "$k" "$NBLOCKS" "$CHANGED" "$REWRITE" <<'PY'
import os, random, sys
w, k, nblocks, changed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(k)
# The base holds data in every other 1 MiB extent (16 blocks).
pool = range(nblocks) if sys.argv[5] == "anywhere" else [b for b in range(nblocks) if b // 16 % 2 == 0]
blocks = sorted(rng.sample(pool, changed))
data = os.urandom(65536)
with open(f"{w}/disk.img", "r+b") as f:
    for b in blocks:
        f.seek(b * 65536)
        f.write(data)
with open(f"{w}/data.bin", "wb") as f:
    f.write(data)
with open(f"{w}/changed.txt", "w") as f:
    f.write("\n".join(map(str, blocks)) + "\n")
with open(f"{w}/qemu-io.cmds", "w") as f:
    for b in blocks:
        f.write(f"write -q -s {w}/data.bin {b * 65536} 65536\n")
PY
  "$BIN/tools/cbt-backup" --repo "$REPO" -q import-image --vm "$VM" --disk "$VDI" \
    --point "$(ts "$k")" --changed-blocks "$W/changed.txt" "$W/disk.img"
  qemu-img create -q -f qcow2 -b "$W/q$((k - 1)).qcow2" -F qcow2 "$W/q$k.qcow2"
  qemu-io -f qcow2 "$W/q$k.qcow2" <"$W/qemu-io.cmds" >/dev/null
  [ -e "$W/q$k.qcow2" ] || exit 1
done
echo "repository after $MAX_DEPTH points: $(du -sh "$REPO" | cut -f1)"
echo "$SIZE_GIB $MAX_DEPTH $REWRITE" >"$W/ready"
fi
# The newest point's bytes again, as the base of a chain of depth 1.
if [ ! -s "$W/flat-vm" ]; then
  FLAT_VM=$(cat /proc/sys/kernel/random/uuid)
  "$BIN/tools/cbt-backup" --repo "$REPO" -q import-image --vm "$FLAT_VM" --disk "$VDI" \
    --point "$(ts $((MAX_DEPTH - 1)))" "$W/disk.img"
  echo "$FLAT_VM" >"$W/flat-vm"
fi
FLAT_VM=$(cat "$W/flat-vm")

mkdir -p "$W/mnt"
"$BIN/fuse/cbtfs" mount "$REPO" "$W/mnt"
sleep 0.5
CBTFS_PID=$(pgrep -n -f "cbtfs mount $REPO")

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# seconds for `dd` of a file to /dev/null with 1 MiB requests
read_secs() {
  local t
  t=$(date +%s.%N)
  dd if="$1" of=/dev/null bs=1M status=none || { echo "reading $1 failed" >&2; return 1; }
  echo "$(date +%s.%N) - $t" | bc
}
qemu_secs() {
  local t
  t=$(date +%s.%N)
  # The null-co target discards what it is given, as dd to /dev/null does.
  qemu-img convert -n --target-image-opts "$1" "driver=null-co,size=$((SIZE_GIB << 30))" || return 1
  echo "$(date +%s.%N) - $t" | bc
}
mibs() { echo "scale=0; $SIZE_GIB * 1024 / $1" | bc; }
# the smaller of two times; an empty second one does not count
keep_min() { if [ -z "${2:-}" ] || [ "$(echo "$1 < $2" | bc)" = 1 ]; then echo "$1"; else echo "$2"; fi; }
# best (smallest) of REPEAT runs of a timing command, caches dropped first
best() {
  local b="" t
  for _ in $(seq "$REPEAT"); do
    drop
    t=$("$@") || exit 1
    b=$(keep_min "$t" "$b")
  done
  echo "$b"
}

declare -A COLD WARM QEMU QSD
DEPTHS=""
for depth in 1 10 $MAX_DEPTH; do
  if [ "$depth" -le "$MAX_DEPTH" ] && [[ " $DEPTHS " != *" $depth "* ]]; then DEPTHS="$DEPTHS $depth"; fi
done
raw_of() { echo "$W/mnt/$VM/$(ts $(($1 - 1)))/$VDI.raw"; }
FLAT_RAW="$W/mnt/$FLAT_VM/$(ts $((MAX_DEPTH - 1)))/$VDI.raw"
# Cold reads through cbtfs and with qemu-img go round-robin over the depths,
# R rounds, keeping each one's best: the machine's speed drifts over
# minutes, and a depth measured only early or only late would carry that
# drift into the ratios.
FLAT=""
ROUND_RATIOS=""       # depth 1 time / depth MAX time, per round
ROUND_FLAT_RATIOS=""  # one-base time / depth MAX time, per round
for _ in $(seq "$REPEAT"); do
  declare -A T=()
  for depth in $DEPTHS; do
    drop; T[$depth]=$(read_secs "$(raw_of "$depth")") || exit 1
    COLD[$depth]=$(keep_min "${T[$depth]}" "${COLD[$depth]:-}")
    drop; t=$(qemu_secs "$W/q$((depth - 1)).qcow2") || exit 1
    QEMU[$depth]=$(keep_min "$t" "${QEMU[$depth]:-}")
  done
  drop; t=$(read_secs "$FLAT_RAW") || exit 1
  FLAT=$(keep_min "$t" "$FLAT")
  ROUND_RATIOS="$ROUND_RATIOS $(echo "scale=4; ${T[1]} / ${T[$MAX_DEPTH]}" | bc)"
  ROUND_FLAT_RATIOS="$ROUND_FLAT_RATIOS $(echo "scale=4; $t / ${T[$MAX_DEPTH]}" | bc)"
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f", m}'; }
for depth in $DEPTHS; do
  raw=$(raw_of "$depth")
  read_secs "$raw" >/dev/null || exit 1  # the cold runs dropped it: cache it again
  WARM[$depth]=$(read_secs "$raw") || exit 1
  touch "$W/qsd.raw"
  qemu-storage-daemon --blockdev "driver=qcow2,node-name=top,file.driver=file,file.filename=$W/q$((depth - 1)).qcow2" \
    --export "type=fuse,id=e,node-name=top,mountpoint=$W/qsd.raw,writable=off" &
  QSD_PID=$!
  for i in $(seq 50); do mountpoint -q "$W/qsd.raw" 2>/dev/null && break; [ "$(stat -c %s "$W/qsd.raw")" -gt 0 ] && break; sleep 0.1; done
  QSD[$depth]=$(best read_secs "$W/qsd.raw")
  if [ "$depth" = "$MAX_DEPTH" ]; then
    cmp "$raw" "$W/qsd.raw" && echo "depth $depth: cbtfs and the qcow2 chain hold the same bytes"
  fi
  kill "$QSD_PID"; wait "$QSD_PID" 2>/dev/null || true; QSD_PID=""
done
RSS=$(grep VmHWM /proc/"$CBTFS_PID"/status | awk '{print $2}')
exec 3<"$W/mnt/$VM/$(ts $((MAX_DEPTH - 1)))/$VDI.raw"
RSS_OPEN=$(grep VmRSS /proc/"$CBTFS_PID"/status | awk '{print $2}')
exec 3<&-

echo
printf '%-6s %14s %14s %14s %14s %12s\n' depth "cbtfs cold" "cbtfs warm" "qemu-img cold" "qsd FUSE cold" "cbtfs/qemu"
for depth in $DEPTHS; do
  printf '%-6s %9s MiB/s %9s MiB/s %9s MiB/s %9s MiB/s %11sx\n' "$depth" \
    "$(mibs "${COLD[$depth]}")" "$(mibs "${WARM[$depth]}")" "$(mibs "${QEMU[$depth]}")" \
    "$(mibs "${QSD[$depth]}")" "$(echo "scale=2; ${QEMU[$depth]} / ${COLD[$depth]}" | bc)"
done
echo
data_pct() {
  "$BIN/tools/cbt-backup" --repo "$REPO" list --vm "$1" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["vms"][0]["points"][0]["disks"][0]
print(d["data_blocks"] * 100 // (d["virtual_size"] // 65536))'
}
echo "data in the point read: depth 1 $(data_pct "$VM")%, depth $MAX_DEPTH $(data_pct "$FLAT_VM")% of the disk"
echo "same bytes as depth $MAX_DEPTH stored as one base: cbtfs cold $(mibs "$FLAT") MiB/s"
# shellcheck disable=SC2086  # the lists split into their numbers on purpose
echo "cbtfs cold throughput, depth $MAX_DEPTH vs depth 1 (its base): best $(echo "scale=2; ${COLD[1]} / ${COLD[$MAX_DEPTH]}" | bc)x, median of rounds $(median $ROUND_RATIOS)x"
# shellcheck disable=SC2086
echo "cbtfs cold throughput, depth $MAX_DEPTH vs the same bytes as one base: best $(echo "scale=2; $FLAT / ${COLD[$MAX_DEPTH]}" | bc)x, median of rounds $(median $ROUND_FLAT_RATIOS)x"
echo "per-round depth $MAX_DEPTH vs depth 1:$ROUND_RATIOS; vs one base:$ROUND_FLAT_RATIOS"
echo "cbtfs peak memory (VmHWM) after all reads: $((RSS / 1024)) MiB; RSS with the depth-$MAX_DEPTH image open: $((RSS_OPEN / 1024)) MiB"
