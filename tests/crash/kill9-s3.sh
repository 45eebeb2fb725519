#!/usr/bin/env bash
# kill -9 at random moments of imports and prunes into a repository on a
# real Ceph RADOS Gateway.  After each kill (and the lease of the dead
# command's lock objects, shortened here to 3 s, has run out): every point
# the store lists reads back as the image it was made from, a killed import
# left either its whole point or nothing, verify finds no damage, and the
# next command runs (it finishes a delete the kill interrupted).
source "$(dirname "$0")/../functions.sh"
source "$(dirname "$0")/../rgw.sh"
requires_rgw
requires python3 sha256sum
ROUNDS=${CBT_CRASH_ROUNDS:-8}
start_rgw cbt-crash
export CBT_CACHE_DIR=$WORK/cache CBT_S3_LEASE_SECONDS=3
R=s3://cbt-crash/r
VM=$(new_uuid) VDI=$(new_uuid)
run() { "$CBT_BACKUP" --repo "$R" "$@"; }
head -c $((24 << 20)) /dev/urandom >"$WORK/disk.img"

# check: every listed point exports to the sum recorded for it, verify is clean.
check() {
  local p n=0
  for p in $(run list --json | python3 -c '
import json, sys
for v in json.load(sys.stdin)["vms"]:
    for p in v["points"]: print(p["point"])'); do
    [ -f "$WORK/$p.sum" ] || fail "round $1: point $p was never made"
    [ "$(run export --vm "$VM" --point "$p" --disk "$VDI" --output - | sha256sum | cut -d' ' -f1)" = \
      "$(cat "$WORK/$p.sum")" ] || fail "round $1: point $p reads differently"
    n=$((n + 1))
  done
  run verify -q || fail "round $1: verify found damage"
  echo "round $1: $n point(s) intact"
}

# killed CMD...: runs CMD, kills it -9 after a random 0-1.5 s, waits out the leases.
killed() {
  "$@" >/dev/null 2>&1 &
  local pid=$!
  sleep "$(python3 -c 'import random; print(random.uniform(0, 1.5))')"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sleep 4
}

run -q import-image --vm "$VM" --disk "$VDI" --point 20260801T000000Z "$WORK/disk.img"
sha256sum <"$WORK/disk.img" | cut -d' ' -f1 >"$WORK/20260801T000000Z.sum"

for i in $(seq "$ROUNDS"); do
  for _ in 1 2 3 4 5 6 7 8; do
    dd if=/dev/urandom of="$WORK/disk.img" bs=64k seek=$((RANDOM % 384)) count=8 conv=notrunc status=none
  done
  p=$(printf '202608%02dT000000Z' $((i + 1)))
  sha256sum <"$WORK/disk.img" | cut -d' ' -f1 >"$WORK/$p.sum"
  killed run -q import-image --vm "$VM" --disk "$VDI" --point "$p" "$WORK/disk.img"
  check "import $i"
done
for i in $(seq $((ROUNDS / 2))); do
  killed run -q prune --vm "$VM" --keep-last $((ROUNDS - 2 * i + 1))
  check "prune $i"
done
# One more, not killed, finishes whatever was interrupted.
run -q prune --vm "$VM" --keep-last 2
check final
echo "kill9-s3: ok"
