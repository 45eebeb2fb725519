#!/usr/bin/env bash
# One backup command over a whole pool: twelve VMs backed up four at a
# time within a budget of 8 NBD connections per host (each disk asking for
# 4), every point equal to its disk and the simulator never serving more
# than 8 connections at once; a VM whose NBD reads fail is reported failed
# while the others commit;
# --tag and --exclude select the right VMs (--dry-run changes nothing); and
# Ctrl-C in the middle of a run stops every backup cleanly.
source "$(dirname "$0")/../functions.sh"
start_sim

declare -A VDI UUID
for i in $(seq 1 12); do
  head -c $(((1 + i % 4) << 20)) /dev/urandom >"$WORK/d$i.img"
  create_vm "vm$i" --disk "$WORK/d$i.img"
  UUID[vm$i]=$VM
  VDI[vm$i]=$V1
done

# check_points JSON: every VM of the report is ok and its point equals the
# disk image it was created from (the disks are not written to).
check_points() {
  python3 - "$1" <<'PY' >"$WORK/points.txt"
import json, sys
for r in json.load(open(sys.argv[1])):
    assert r["result"] == "ok", r
    assert len(r["disks"]) == 1, r
    print(r["vm_name"], r["vm"], r["point"], r["disks"][0]["vdi"])
PY
  local name uuid point vdi
  while read -r name uuid point vdi; do
    [ "$uuid" = "${UUID[$name]}" ] && [ "$vdi" = "${VDI[$name]}" ] || fail "$name: wrong VM or disk"
    cbt export --vm "$uuid" --point "$point" --disk "$vdi" --format raw \
      --output "$WORK/export.raw" -q
    cmp "$WORK/export.raw" "$WORK/d${name#vm}.img" || fail "$name: point $point differs"
  done <"$WORK/points.txt"
}

# 1. The whole pool, four at a time, 8 connections per host.  Slowed reads
# make the backups overlap on NBD, so the budget is what holds them back.
"$SIMCTL" nbd-reset >/dev/null
"$SIMCTL" fault nbd_delay_ms 300 >/dev/null
cbt backup --all --jobs 4 --host-connections 8 --connections 4 --json >"$WORK/run1.json"
"$SIMCTL" fault nbd_delay_ms 0 >/dev/null
[ "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/run1.json")" = 12 ] ||
  fail "not 12 VMs in the report"
check_points "$WORK/run1.json"
"$SIMCTL" nbd-stats | python3 -c '
import json, sys
s = json.load(sys.stdin)
peaks = {h: v["max_active"] for h, v in s["per_host"].items()}
print("NBD peak connections per host:", peaks)
assert peaks and max(peaks.values()) <= 8, peaks
assert max(peaks.values()) > 4, ("no two VMs read at once", peaks)'

# 2. One VM's NBD reads fail (EIO on its disk and on every snapshot of it):
# the others commit, the table says which failed, stderr names it, exit 1,
# and it leaves no snapshot and no partial point.
sleep 1  # points are named by the second
"$SIMCTL" write-pattern "${VDI[vm5]}" 0 65536 7 >/dev/null  # something to read
"$SIMCTL" fault nbd_read_errors on --vm vm5 >/dev/null
rc=0
cbt backup --all --jobs 4 --host-connections 8 >"$WORK/run2.txt" 2>"$WORK/run2.err" || rc=$?
"$SIMCTL" fault nbd_read_errors off >/dev/null
VM=${UUID[vm5]} no_leftovers "vm5 failed"
[ "$rc" = 1 ] || fail "exit status $rc with one VM failed: $(cat "$WORK/run2.err")"
grep "^cbt-backup: VM" "$WORK/run2.err" >"$WORK/failed.txt" || true
[ "$(grep -c . "$WORK/failed.txt")" = 1 ] && grep -q "vm5 (${UUID[vm5]})" "$WORK/failed.txt" ||
  fail "stderr does not name vm5 alone: $(cat "$WORK/run2.err")"
[ "$(grep -c ' ok ' "$WORK/run2.txt")" = 11 ] && grep -q "^vm5 .* failed " "$WORK/run2.txt" ||
  fail "table: $(cat "$WORK/run2.txt")"
for i in $(seq 1 12); do
  n=$(ls "$WORK/repo/${UUID[vm$i]}" | grep -c '^2' || true)
  want=2
  [ "$i" = 5 ] && want=1
  [ "$n" = "$want" ] || fail "vm$i has $n points, expected $want"
done
grep -q incremental "$WORK/run2.txt" || fail "second run not incremental"

# 3. Selection: --tag (repeatable), --exclude, --vm by name; --dry-run writes
# nothing and takes no snapshot.
for i in 2 3 7; do xapi_py 'call("VM.add_tags", call("VM.get_by_uuid", args[0]), "nightly")' "${UUID[vm$i]}"; done
xapi_py 'call("VM.add_tags", call("VM.get_by_uuid", args[0]), "weekly")' "${UUID[vm11]}"
before=$("$SIMCTL" vdis | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
selected() {
  cbt backup --dry-run --json "$@" | python3 -c '
import json, sys
print(" ".join(sorted(r["vm_name"] for r in json.load(sys.stdin))))'
}
[ "$(selected --tag nightly)" = "vm2 vm3 vm7" ] || fail "--tag nightly: $(selected --tag nightly)"
[ "$(selected --tag nightly --tag weekly --exclude vm3)" = "vm11 vm2 vm7" ] || fail "--tag --exclude"
[ "$(selected --vm vm4 --vm "${UUID[vm9]}" --tag weekly)" = "vm11 vm4 vm9" ] || fail "--vm --tag"
[ "$(selected --all --exclude vm1 --exclude "${UUID[vm12]}" | wc -w)" = 10 ] || fail "--all --exclude"
cbt backup --dry-run --json --vm vm4 | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert len(r) == 1 and r[0]["power_state"] == "Running" and r[0]["disks"] == 1, r'
cbt backup --dry-run --tag nightly | grep -q "^vm7 " || fail "dry-run table"
after=$("$SIMCTL" vdis | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$before" = "$after" ] || fail "--dry-run created VDIs"
[ "$(ls "$WORK/repo/${UUID[vm2]}" | grep -c '^2')" = 2 ] || fail "--dry-run wrote a point"
expect_error "no VM matches" cbt backup --tag nosuchtag
expect_error "no VM named 'nosuch'" cbt backup --vm nosuch --vm vm1

# 4. Ctrl-C in the middle of a slow run of all twelve: every running backup
# unwinds (snapshot removed, no partial point), none starts after, exit 130.
"$SIMCTL" fault nbd_delay_ms 1500 >/dev/null
cbt_bg "$WORK/repo2" "$WORK/run4.txt" backup --all --jobs 4 --full
wait_nbd_active "$BG"
sleep 0.5
kill -INT "$BG"
rc=0
wait "$BG" || rc=$?
"$SIMCTL" fault nbd_delay_ms 0 >/dev/null
[ "$rc" = 130 ] || fail "exit status $rc after SIGINT: $(cat "$WORK/bg.err")"
ls -a "$WORK"/repo2/*/ 2>/dev/null | grep -q '^\.tmp-' && fail "temporary point left"
[ -z "$(ls "$WORK"/repo2/*/ 2>/dev/null | grep '^2')" ] || fail "a point was committed after SIGINT"
"$SIMCTL" vms | python3 -c '
import json, sys
snaps = [v["uuid"] for v in json.load(sys.stdin) if v.get("is_a_snapshot")]
assert not snaps, ("snapshot VMs left", snaps)'
"$SIMCTL" vdis | python3 -c '
import json, sys
full = [v["uuid"] for v in json.load(sys.stdin) if v.get("is_a_snapshot") and v["type"] != "cbt_metadata"]
assert not full, ("snapshot VDIs with data left", full)'
echo PASS
