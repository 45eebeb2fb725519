#!/usr/bin/env bash
# kill -9 of prune and of delete at random moments, on a chain where the
# killed operation folds the base and a middle point.  Afterwards the next
# command has finished the operation (or it had not started): the points
# are exactly those before or those after, verify is clean, and every
# remaining point's checksum equals the one taken before.
source "$(dirname "$0")/../functions.sh"
requires python3 sha256sum
ROUNDS=${CBT_CRASH_ROUNDS:-20}

VM=$(new_uuid)
VDI=$(new_uuid)
TEMPLATE=$WORK/template
REPO=$WORK/repo
run() { "$CBT_BACKUP" --repo "$REPO" "$@"; }

# Twelve points of a 16 MiB disk, each rewriting 16 scattered blocks.
head -c 16M /dev/urandom >"$WORK/disk.img"
for i in $(seq 10 21); do
  ts=202604${i}T000000Z
  if [ "$i" -gt 10 ]; then
    for j in $(seq 16); do
      dd if=/dev/urandom of="$WORK/disk.img" bs=64k seek=$((RANDOM % 256)) count=1 conv=notrunc status=none
    done
  fi
  "$CBT_BACKUP" --repo "$TEMPLATE" -q import-image --vm "$VM" --disk "$VDI" --point "$ts" "$WORK/disk.img"
  sha256sum <"$WORK/disk.img" | cut -d' ' -f1 >"$WORK/$ts.sum"
done
all_points=$(ls "$TEMPLATE/$VM" | grep -E '^[0-9]{8}T' | tr '\n' ' ')

points_now() { ls "$REPO/$VM" | grep -E '^[0-9]{8}T' | tr '\n' ' ' || true; }

# check STATE...: after the next command the points are one of the STATEs
# (the operation finished or had not started: never half done).
check() {
  # Readers leave an interrupted delete alone; the next writer of the VM
  # finishes it first (a prune that keeps everything only does that).
  run -q list >/dev/null || fail "list failed after a kill"
  run -q prune --vm "$VM" --keep-last 1000 >/dev/null || fail "prune failed after a kill"
  local now ok=0 want
  now=$(points_now)
  for want in "$@"; do [ "$now" = "$want" ] && ok=1; done
  [ $ok = 1 ] || fail "after a kill the points are '$now'; want one of: $*"
  ls -A "$REPO/$VM" | grep -qE '^(journal\.json|\.del-|\.tmp-)' && fail "leftovers: $(ls -A "$REPO/$VM")"
  run -q verify || fail "verify found damage after a kill"
  local ts
  for ts in $now; do
    [ "$(run export --vm "$VM" --disk "$VDI" --point "$ts" --output - | sha256sum | cut -d' ' -f1)" = \
      "$(cat "$WORK/$ts.sum")" ] || fail "point $ts reads back different after a kill"
  done
}

# The deletes here are killed, not the garbage collection that prune and
# delete end with (kill9-dedup kills that): while this shell holds the store
# lock shared, the collection is skipped, so the timed span and the kills
# cover the deletes alone.  The commands inherit the descriptor; all of
# them are gone when it is closed.
hold_store() {
  exec 9<"$REPO/store.lock"
  flock -s 9
}
release_store() { exec 9<&-; }

# The fastest of three timed runs of each operation bounds the random kill
# delay: one slow run (a busy machine) would put most kills after the end.
span_of() {
  local t0 ms best=""
  for _ in 1 2 3; do
    rm -rf "$REPO"
    cp -a "$TEMPLATE" "$REPO"
    hold_store
    t0=$(date +%s%N)
    "$@"
    ms=$((($(date +%s%N) - t0) / 1000000))
    release_store
    [ -n "$best" ] && [ "$best" -le "$ms" ] || best=$ms
  done
  echo "$best"
}
# Each operation runs in its own session, so one kill reaches all of it.
B="$CBT_BACKUP --repo $REPO -q"
prune_cmd="$B prune --vm $VM --keep-last 3 --keep-weekly 1"
# delete of the base, then of a middle point: two commands, one kill.
delete_cmd="$B delete --vm $VM --point 20260410T000000Z && $B delete --vm $VM --point 20260415T000000Z"
prune_span=$(span_of bash -c "$prune_cmd")
prune_after=$(points_now)
delete_span=$(span_of bash -c "$delete_cmd")
delete_after=$(points_now)
delete_half=${all_points/20260410T000000Z /}
echo "prune takes ${prune_span} ms (leaves: $prune_after); delete pair ${delete_span} ms"
case "$prune_after" in *20260410T000000Z*) fail "prune should fold the base" ;; esac

for op in prune delete; do
  span_var=${op}_span
  span=${!span_var}
  inside=0
  # A delete pair takes a few milliseconds, about what starting the shell
  # takes: on a busy machine twenty random kills all landed outside it
  # once.  So rounds go on, up to four times as many, until one lands
  # inside; every round still checks what its kill left.
  r=0
  while [ "$r" -lt "$ROUNDS" ] || { [ "$inside" = 0 ] && [ "$r" -lt $((4 * ROUNDS)) ]; }; do
    r=$((r + 1))
    rm -rf "$REPO"
    cp -a "$TEMPLATE" "$REPO"
    hold_store
    cmd_var=${op}_cmd
    setsid bash -c "${!cmd_var}" &
    pid=$!
    delay=$((RANDOM % (span + 1)))
    sleep "$((delay / 1000)).$(printf '%03d' $((delay % 1000)))"
    # Kill the whole session (setsid made $pid its leader), and wait until
    # all of it is gone: a process killed inside fsync holds its lock until
    # the call returns.
    kill -9 -- -$pid 2>/dev/null || true
    wait $pid 2>/dev/null || true
    while pgrep -s $pid >/dev/null; do sleep 0.01; done
    release_store
    [ -e "$REPO/$VM/journal.json" ] && inside=$((inside + 1))
    if [ "$op" = prune ]; then
      check "$all_points" "$prune_after"
    else
      check "$all_points" "$delete_half" "$delete_after"
    fi
  done
  echo "$op: $r kill rounds, $inside killed inside the operation (journal left)"
  [ "$inside" -gt 0 ] || fail "no $op was killed inside its work"
done
echo PASS
