#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): deleting points of a long
# chain against copying the base image, which is what a tool that merges
# overlays into a new base by copying would at least pay.
#
# A SIZE disk (default 4 GiB) about half full; a chain of POINTS points
# (default 30), each rewriting 1% of the blocks.  Measured with cold caches,
# each against `cp` of the base's data file (plus sync) in the same run:
#   1. delete of the base point (its files are taken over by the next point)
#   2. delete of a middle point
#   3. prune --keep-last 10 (removes the older points at once)
# After each, verify of the newest point checks every block it reads.
#   scripts/bench/prune.sh [--size GIB] [--points N] [--dir DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_GIB=4
POINTS=30
KEEP_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZE_GIB=$2; shift 2 ;;
    --points) POINTS=$2; shift 2 ;;
    --dir) KEEP_DIR=$2; shift 2 ;;
    *) echo "usage: $0 [--size GIB] [--points N] [--dir DIR]" >&2; exit 2 ;;
  esac
done
scripts/setup-deps.sh
[ -x build/tools/cbt-backup ] || scripts/build.sh release
CBT=$PWD/build/tools/cbt-backup
if [ -n "$KEEP_DIR" ]; then
  mkdir -p "$KEEP_DIR"
  W=$(cd "$KEEP_DIR" && pwd)
else
  W=$(mktemp -d "${TMPDIR:-/var/tmp}/cbt-bench.XXXXXX")
  trap 'rm -rf "$W"' EXIT
fi

BS=65536
NBLOCKS=$((SIZE_GIB * 1024 * 1024 * 1024 / BS))
CHANGED=$((NBLOCKS / 100))
ts() { printf '202605%02dT%02d0000Z' $((1 + $1 / 24)) $(($1 % 24)); }
if [ -f "$W/ready" ] && [ "$(cat "$W/ready")" = "$SIZE_GIB $POINTS" ]; then
  read -r VM VDI <"$W/ids"
  echo "reusing the data set in $W"
else
  rm -rf "${W:?}"/*
  VM=$(cat /proc/sys/kernel/random/uuid)
  VDI=$(cat /proc/sys/kernel/random/uuid)
  echo "$VM $VDI" >"$W/ids"
  python3 - "$W/disk.img" "$SIZE_GIB" <<'PY'
import os, sys
path, gib = sys.argv[1], int(sys.argv[2])
size = gib << 30
with open(path, "wb") as f:
    f.truncate(size)
    for off in range(0, size, 2 << 20):
        f.seek(off)
        f.write(os.urandom(1 << 20))
PY
  "$CBT" --repo "$W/pristine" -q import-image --vm "$VM" --disk "$VDI" --point "$(ts 0)" "$W/disk.img"
  for k in $(seq 1 $((POINTS - 1))); do
    python3 - "$W" "$k" "$NBLOCKS" "$CHANGED" <<'PY'
import os, random, sys
w, k, nblocks, changed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
blocks = sorted(random.Random(k).sample(range(nblocks), changed))
with open(f"{w}/disk.img", "r+b") as f:
    for b in blocks:
        f.seek(b * 65536)
        f.write(os.urandom(65536))
with open(f"{w}/changed.txt", "w") as f:
    f.write("\n".join(map(str, blocks)) + "\n")
PY
    "$CBT" --repo "$W/pristine" -q import-image --vm "$VM" --disk "$VDI" --point "$(ts "$k")" \
      --changed-blocks "$W/changed.txt" "$W/disk.img"
  done
  rm -f "$W/disk.img"
  echo "$SIZE_GIB $POINTS" >"$W/ready"
fi
echo "disk ${SIZE_GIB} GiB, $POINTS points, $CHANGED blocks (1%) rewritten per point;" \
  "repository $(du -sh "$W/pristine" | cut -f1)"

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
secs() { echo "$(date +%s.%N) - $1" | bc; }
REPO=$W/repo
fresh() { rm -rf "$REPO" "$W/copy.cbd"; cp -a "$W/pristine" "$REPO"; }
BASE=$(ts 0)
MIDDLE=$(ts $((POINTS / 2)))
NEWEST=$(ts $((POINTS - 1)))

time_cp() {
  drop
  local t
  t=$(date +%s.%N)
  cp "$REPO/$VM/$BASE/$VDI.cbd" "$W/copy.cbd"
  sync
  secs "$t"
}

report() {  # name seconds cp_seconds used_before
  local used
  used=$(du -sk "$REPO" | cut -f1)
  printf '%-28s %8.3f s   cp of the base %7.2f s   ratio %6.2f%%   space %d -> %d MiB\n' \
    "$1" "$2" "$3" "$(echo "100 * $2 / $3" | bc -l)" $(($4 / 1024)) $((used / 1024))
}

# measure NAME ARGS...: on a fresh copy of the chain, `cp` of the base and
# then `cbt-backup ARGS` with cold caches; prints both and checks the newest
# point afterwards.
measure() {
  local name=$1 used cp_s t
  shift
  fresh
  used=$(du -sk "$REPO" | cut -f1)
  cp_s=$(time_cp)
  rm -f "$W/copy.cbd"
  drop
  t=$(date +%s.%N)
  "$CBT" --repo "$REPO" -q "$@"
  report "$name" "$(secs "$t")" "$cp_s" "$used"
  "$CBT" --repo "$REPO" -q verify --vm "$VM" --point "$NEWEST" && echo "  verify of the newest point: clean"
}
measure "delete base point" delete --vm "$VM" --point "$BASE"
measure "delete middle point" delete --vm "$VM" --point "$MIDDLE"
measure "prune --keep-last 10" prune --vm "$VM" --keep-last 10
rm -rf "$REPO"
