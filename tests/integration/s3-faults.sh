#!/usr/bin/env bash
# Faults between cbt-backup and a real Ceph RADOS Gateway, injected by a
# proxy (tests/s3-fault-proxy.py): SlowDown and 500 answers, dropped
# connections and slow answers are retried and the commands succeed; a
# store that keeps refusing, or that is full, fails the command cleanly with
# nothing committed, and the same point can be written afterwards.
source "$(dirname "$0")/../functions.sh"
source "$(dirname "$0")/../rgw.sh"
requires_rgw
start_rgw cbt-faults
CTL=$WORK/faults.json
echo '{}' >"$CTL"
python3 "$(dirname "$0")/../s3-fault-proxy.py" "$RGW_PORT" "$CTL" "$WORK/proxy.port" &
cleanup_fn "kill $!"
for _ in $(seq 100); do [ -s "$WORK/proxy.port" ] && break; sleep 0.05; done
export AWS_ENDPOINT_URL=http://127.0.0.1:$(cat "$WORK/proxy.port")
export CBT_CACHE_DIR=$WORK/cache
R=s3://cbt-faults/r
VM=$(new_uuid) VDI=$(new_uuid)

faults() { echo "$1" >"$CTL"; }
served() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("served",{}).get(sys.argv[2],0))' "$CTL" "$1"; }
npoints() {
  "$CBT_BACKUP" --repo "$R" list --json |
    python3 -c 'import json,sys; print(sum(len(v["points"]) for v in json.load(sys.stdin)["vms"]))'
}
import() {
  head -c 6M /dev/urandom >"$WORK/disk.img"
  "$CBT_BACKUP" --repo "$R" import-image --vm "$VM" --disk "$VDI" --point "$1" "$WORK/disk.img" "${@:2}"
}

echo "SlowDown, 500 and dropped connections are retried"
faults '{"slowdown": 3}'
import 20260601T000000Z -q
[ "$(served slowdown)" = 3 ] || fail "SlowDown answers served: $(served slowdown)"
faults '{"internal": 2}'
import 20260602T000000Z -q
[ "$(served internal)" = 2 ] || fail "500 answers served: $(served internal)"
faults '{"drop": 2}'
import 20260603T000000Z -q
[ "$(served drop)" = 2 ] || fail "connections dropped: $(served drop)"
faults '{"delay_ms": 300}'
"$CBT_BACKUP" --repo "$R" verify -q
faults '{}'
[ "$(npoints)" = 3 ] || fail "expected 3 points"

echo "a store that keeps refusing: clean failure, nothing committed"
faults '{"slowdown": 1000}'
msg=$(AWS_MAX_ATTEMPTS=3 expect_fail import 20260604T000000Z)
echo "  $msg"
grep -q "SlowDown" <<<"$msg" || fail "no SlowDown in: $msg"
grep -q "after 3 attempts\|HTTP 503" <<<"$msg" || fail "no attempt count in: $msg"
faults '{}'
[ "$(npoints)" = 3 ] || fail "a failed import committed a point"

echo "a full store: clean failure, nothing committed, the point can be written later"
faults '{"full": 1000}'
msg=$(expect_fail import 20260604T000000Z)
echo "  $msg"
grep -q "full" <<<"$msg" || fail "no 'full' in: $msg"
[ "$(grep -c '^cbt-backup' <<<"$msg")" = 1 ] || fail "not one error line: $msg"
faults '{}'
[ "$(npoints)" = 3 ] || fail "a failed import committed a point"
import 20260604T000000Z -q
"$CBT_BACKUP" --repo "$R" export --vm "$VM" --point 20260604T000000Z --disk "$VDI" --output "$WORK/e.img" -q
cmp "$WORK/e.img" "$WORK/disk.img" || fail "point written after the failures differs"
"$CBT_BACKUP" --repo "$R" verify -q
echo "s3-faults: ok"
