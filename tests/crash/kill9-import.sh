#!/usr/bin/env bash
# kill -9 of import-legacy at random moments: afterwards every committed point
# reads back equal to its source, no partial point is visible, and the next
# import completes.
source "$(dirname "$0")/../functions.sh"
requires_fuse
requires python3
ROUNDS=${CBT_CRASH_ROUNDS:-12}

VM=$(new_uuid)
D1=$(new_uuid)
SRC=$WORK/legacy
REPO=$WORK/repo
MNT=$WORK/mnt
mkdir -p "$SRC"

# Five points of a 96 MiB disk, each changing 8 MiB of scattered blocks, so an
# import takes long enough to be killed inside its work.
head -c 96M /dev/urandom >"$WORK/disk.img"
points=()
for i in 1 2 3 4 5; do
  ts=2026020${i}T120000Z
  if [ $i -gt 1 ]; then
    for j in $(seq 32); do
      dd if=/dev/urandom of="$WORK/disk.img" bs=64k seek=$((RANDOM % 1536)) count=4 conv=notrunc status=none
    done
    dd if=/dev/zero of="$WORK/disk.img" bs=64k seek=$((i * 100)) count=3 conv=notrunc status=none
  fi
  save_legacy_point "$SRC" "$VM" "$ts" "$WORK/disk.img" "$D1"
  cp "$WORK/disk.img" "$WORK/$ts.img"
  points+=("$ts")
done

check_committed() {
  local committed
  committed=$("$CBT_BACKUP" list --repo "$REPO" --json 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(" ".join(p["point"] for v in d["vms"] for p in v["points"]))') || committed=""
  # No temporary is ever listed or mounted as a point.
  ls "$REPO/$VM" 2>/dev/null | grep -v -E '^(lock.*|\.tmp-.*|[0-9]{8}T[0-9]{6}Z)$' && fail "unexpected entry"
  [ -n "$committed" ] || return 0
  "$CBT_BACKUP" verify --repo "$REPO" -q || fail "verify failed after a kill"
  mount_cbtfs "$REPO" "$MNT"
  local ts
  for ts in $committed; do
    cmp "$MNT/$VM/$ts/$D1.raw" "$WORK/$ts.img" || fail "committed point $ts differs after a kill"
  done
  umount_cbtfs "$MNT"
}

# The fastest of three timed imports bounds the random kill delay: one slow
# run (a busy machine) would put most kills after the end.  The source files
# are made durable first: an import syncs the filesystem of its packs, and
# would otherwise write out all of them in the first timed run only.
sync
span_ms=""
for _ in 1 2 3; do
  rm -rf "$WORK/timing"
  t0=$(date +%s%N)
  "$CBT_BACKUP" import-legacy "$SRC" --repo "$WORK/timing" -q
  ms=$((($(date +%s%N) - t0) / 1000000))
  [ -n "$span_ms" ] && [ "$span_ms" -le "$ms" ] || span_ms=$ms
done
rm -rf "$WORK/timing"
echo "one import takes ${span_ms} ms"

killed=0
for r in $(seq "$ROUNDS"); do
  "$CBT_BACKUP" import-legacy "$SRC" --repo "$REPO" -q &
  pid=$!
  delay=$((RANDOM % (span_ms + 1)))
  sleep "$((delay / 1000)).$(printf '%03d' $((delay % 1000)))"
  finished=1
  if kill -9 $pid 2>/dev/null; then
    killed=$((killed + 1))
    finished=0
  fi
  wait $pid 2>/dev/null || true
  check_committed
  # Start over now and then so kills land in early points too, and after an
  # import that finished: the next would find every point there and end at
  # once, out of reach of any kill.
  if [ $((r % 4)) = 0 ] || [ $finished = 1 ]; then rm -rf "$REPO"; fi
done
echo "killed $killed of $ROUNDS imports"
[ "$killed" -gt 0 ] || fail "no import was killed mid-run"

"$CBT_BACKUP" import-legacy "$SRC" --repo "$REPO" -q
ls "$REPO/$VM" | grep -q '^\.tmp-' && fail "temporary left after a completed import"
[ -e "$REPO/$VM/lock" ] && fail "lock left after a completed import"
check_committed
n=$("$CBT_BACKUP" list --repo "$REPO" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["vms"][0]["points"]))')
[ "$n" = 5 ] || fail "expected 5 points after the final import, got $n"
echo PASS
