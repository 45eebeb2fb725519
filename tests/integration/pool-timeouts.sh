#!/usr/bin/env bash
# Bounded waits and interruptions.  --task-timeout cancels a server task
# that makes no progress, --nbd-timeout fails NBD reads that hang,
# --http-timeout fails an upload that stalls; SIGINT and SIGTERM clean up
# like a failure and exit 130 / 143.  Every failure leaves nothing behind:
# no snapshot VM or snapshot VDI with data, no temporary or new point, no
# VDI of a failed restore, no pending task, and no session of ours valid.
source "$(dirname "$0")/../functions.sh"
start_sim
SR=$(json_get "$XAPISIM_READY" sr_cbt)

head -c $((16 << 20)) /dev/urandom >"$WORK/d1.img"
create_vm slow --disk "$WORK/d1.img"

count_vdis() { "$SIMCTL" vdis | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
count_vms() { "$SIMCTL" vms | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Tasks are not shown by the control interface; xapi_py reads them, in
# sessions named after this test.
export XAPI_ORIGINATOR="pool-timeouts test"
# no_pending_tasks WHEN: no task is pending or being cancelled.
no_pending_tasks() {
  xapi_py '
busy = [(t["name_label"], t["status"]) for t in call("task.get_all_records").values()
        if t["status"] in ("pending", "cancelling")]
assert not busy, (args[0], "tasks left running", busy)' "$1"
}
# all_clean WHEN: no leftovers, no pending task and no valid session of ours.
all_clean() {
  no_leftovers "$1"
  no_pending_tasks "$1"
  no_valid_sessions "$1"
}
# timed_error PATTERN CMD...: CMD fails with one error line matching
# PATTERN; TOOK is how long it took (ms).
timed_error() {
  local pat=$1
  shift
  local t0 ms out msg rc=0
  t0=$(now_ms)
  out=$("$@" 2>&1) || rc=$?
  ms=$(($(now_ms) - t0))
  [ "$rc" -ne 0 ] || fail "expected failure: $*"
  msg=$(echo "$out" | grep '^cbt-backup' || true)
  [ "$(echo "$msg" | grep -c .)" = 1 ] || fail "not one error line: $out"
  echo "$msg" | grep -qi -- "$pat" || fail "expected '$pat', got: $msg"
  echo "  failed after $((ms / 1000)).$((ms % 1000 / 100)) s: $msg"
  TOOK=$ms
}
# took_under S WHAT: the last timed_error took less than S seconds.
took_under() { [ "$TOOK" -lt $(($1 * 1000)) ] || fail "$2 took $TOOK ms, more than $1 s"; }

echo "first backup"
P=$(cbt backup --vm "$VM" --json | json_get - point)
no_valid_sessions "first backup"

echo "task_stuck: backup --verify with --task-timeout 3"
"$SIMCTL" write-pattern "$V1" 0 65536 31 >/dev/null
sleep 1
before=$(points)
with_fault task_stuck timed_error "task" cbt --task-timeout 3 backup --vm "$VM" --verify
took_under 20 "backup --verify with a stuck task"
[ "$(points)" = "$before" ] || fail "a backup whose verify timed out committed a point"
all_clean "task_stuck backup"

echo "task_stuck: restore --verify with --task-timeout 3"
vdis=$(count_vdis)
with_fault task_stuck timed_error "task" \
  cbt --task-timeout 3 restore --vm "$VM" --point "$P" --disk "$V1" --sr "$SR" --verify
took_under 20 "restore --verify with a stuck task"
[ "$(count_vdis)" = "$vdis" ] || fail "a restore whose verify timed out left its VDI"
all_clean "task_stuck restore"

echo "nbd_stall: backup with --nbd-timeout 2"
before=$(points)
with_fault nbd_stall timed_error "nbd" cbt --nbd-timeout 2 backup --vm "$VM" --full
took_under 60 "backup with hanging NBD reads"
[ "$(points)" = "$before" ] || fail "a backup with hanging NBD reads committed a point"
all_clean "nbd_stall"

# expect_exit CODE WHAT: the background command exits CODE.
expect_exit() {
  local rc=0
  wait "$BG" || rc=$?
  [ "$rc" = "$1" ] || fail "$2: exit $rc, expected $1: $(cat "$WORK/bg.err")"
  echo "  exit $rc: $(grep '^cbt-backup' "$WORK/bg.err" || true)"
}

for sig in INT TERM; do
  echo "SIG$sig during a backup's NBD reads"
  "$SIMCTL" write-pattern "$V1" 0 $((4 << 20)) $((RANDOM % 200 + 1)) >/dev/null
  "$SIMCTL" fault nbd_delay_ms 2000 >/dev/null
  sleep 1
  before=$(points)
  cbt_bg "$WORK/repo" /dev/null backup --vm "$VM"
  wait_nbd_active "$BG"
  "$SIMCTL" vms >"$WORK/vms.json"
  grep -q '"is_a_snapshot": true' "$WORK/vms.json" || fail "no snapshot taken yet"
  kill -"$sig" "$BG"
  [ $sig = INT ] && code=130 || code=143
  expect_exit "$code" "backup interrupted by SIG$sig"
  "$SIMCTL" fault nbd_delay_ms 0 >/dev/null
  [ "$(points)" = "$before" ] || fail "an interrupted backup committed a point"
  all_clean "SIG$sig backup"
done

for sig in TERM INT; do
  echo "SIG$sig during a whole-VM restore whose upload stalls"
  vdis=$(count_vdis)
  vms=$(count_vms)
  "$SIMCTL" fault http_stall on >/dev/null
  cbt_bg "$WORK/repo" /dev/null restore --vm "$VM" --point "$P" --sr "$SR"
  for _ in $(seq 100); do
    [ "$(count_vdis)" -gt "$vdis" ] && break
    kill -0 "$BG" 2>/dev/null || fail "the restore ended before it could be interrupted: $(cat "$WORK/bg.err")"
    sleep 0.1
  done
  [ "$(count_vdis)" -gt "$vdis" ] || fail "the restore created no VDI"
  sleep 1
  kill -"$sig" "$BG"
  [ $sig = INT ] && code=130 || code=143
  expect_exit "$code" "restore interrupted by SIG$sig"
  "$SIMCTL" fault http_stall off >/dev/null
  [ "$(count_vdis)" = "$vdis" ] || fail "an interrupted restore left its VDI"
  [ "$(count_vms)" = "$vms" ] || fail "an interrupted restore left its VM"
  all_clean "SIG$sig restore"
done

echo "http_stall: disk restore with --http-timeout 3"
vdis=$(count_vdis)
with_fault http_stall timed_error "timeout\|progress" \
  cbt --http-timeout 3 restore --vm "$VM" --point "$P" --disk "$V1" --sr "$SR"
[ "$(count_vdis)" = "$vdis" ] || fail "a restore whose upload stalled left its VDI"
all_clean "http_stall"
took_under 20 "restore with a stalled upload and --http-timeout 3"

echo "the repository reads back"
"$CBT_BACKUP" verify --repo "$WORK/repo" -q
no_valid_sessions "the end"
echo PASS
