#!/usr/bin/env bash
# A busy SR (another operation holds it, so xapi empties its
# allowed_operations) does not turn an incremental backup into a full one:
# CBT support comes from the SR driver's features; the backup waits for the
# SR like xapi's own calls do, then reads only the changed blocks.
source "$(dirname "$0")/../functions.sh"
start_sim
SR=$(json_get "$XAPISIM_READY" sr_cbt)

head -c 8M /dev/urandom >"$WORK/d.img"
"$SIMCTL" create-vm busy --disk "$WORK/d.img@cbt" >"$WORK/vm.json"
VM=$(json_get "$WORK/vm.json" uuid)
V=$(json_get "$WORK/vm.json" vdis.0.uuid)
[ "$("$SIMCTL" vdi "$V" | json_get - sr)" = "$SR" ] || fail "the disk is not on the CBT SR"

# sr_state FIELD: one field of the CBT SR in simctl srs, as JSON.
sr_state() {
  "$SIMCTL" srs | python3 -c '
import json, sys
sr = [s for s in json.load(sys.stdin) if s["uuid"] == sys.argv[1]][0]
print(json.dumps(sr[sys.argv[2]]))' "$SR" "$1"
}

echo "first backup: full"
cbt backup --vm "$VM" --json >"$WORK/b1.json"
[ "$(json_get "$WORK/b1.json" disks.0.mode)" = full ] || fail "first backup not full"
[[ $(sr_state allowed_operations) == *vdi_list_changed_blocks* ]] || fail "SR not idle: $(sr_state allowed_operations)"

"$SIMCTL" write-pattern "$V" $((1 << 20)) 65536 3 >/dev/null
"$SIMCTL" write-pattern "$V" $((5 << 20)) 100000 4 >/dev/null
"$SIMCTL" copy-disk "$V" "$WORK/ref2.img" >/dev/null
changed=$((3 * 65536))
sleep 1

echo "second backup while the SR is busy"
"$SIMCTL" fault sr_busy "$SR" on >/dev/null
[ "$(sr_state allowed_operations)" = "[]" ] || fail "busy SR still allows: $(sr_state allowed_operations)"
[ "$(sr_state current_operations)" != "{}" ] || fail "busy SR has no current operation"
"$SIMCTL" nbd-reset >/dev/null
cbt backup --vm "$VM" --json >"$WORK/b2.json" 2>"$WORK/b2.err" &
pid=$!
sleep 2
kill -0 $pid 2>/dev/null || fail "the backup did not wait for the busy SR: $(cat "$WORK/b2.err")"
[ "$(sr_state allowed_operations)" = "[]" ] || fail "SR allowed operations while busy: $(sr_state allowed_operations)"
[ "$(ls "$WORK/repo/$VM" | grep -c '^2')" = 1 ] || fail "a point was committed while the SR was busy"
"$SIMCTL" fault sr_busy "$SR" off >/dev/null
wait $pid || fail "backup after the SR was released failed: $(cat "$WORK/b2.err")"
[[ $(sr_state allowed_operations) == *vdi_list_changed_blocks* ]] || fail "SR still busy"

python3 - "$WORK/b2.json" "$changed" <<'PY' || fail "second backup: $(cat "$WORK/b2.json")"
import json, sys
d = json.load(open(sys.argv[1]))["disks"][0]
assert d["mode"] == "incremental", d
assert d["reason"] == "", d
assert d["blocks_read"] == 3, d
print("  %s, %d blocks read" % (d["mode"], d["blocks_read"]))
PY
read=$("$SIMCTL" nbd-stats | json_get - bytes_read)
[ "$read" -ge "$changed" ] && [ "$read" -le $((changed * 105 / 100)) ] ||
  fail "read $read bytes over NBD for $changed changed bytes"
grep -qi "does not support CBT" "$WORK/b2.err" && fail "claimed the SR has no CBT: $(cat "$WORK/b2.err")"

"$CBT_BACKUP" verify --repo "$WORK/repo" -q
p=$(json_get "$WORK/b2.json" point)
cbt export --vm "$VM" --point "$p" --disk "$V" --format raw --output "$WORK/e.raw" -q
cmp "$WORK/e.raw" "$WORK/ref2.img" || fail "incremental point differs from the disk"
echo PASS
