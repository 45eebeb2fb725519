#!/usr/bin/env bash
# Snapshot clean-up on a pool: the ISO in a VM's CD drive, which VM.snapshot
# leaves in the snapshot's CD drive, survives backups of halted and running
# VMs; only snapshot disks are removed or reduced to CBT metadata; snapshot
# disks orphaned by a killed run (its snapshot VM destroyed by hand) are
# removed by the next backup; two repositories backing up one VM never
# remove each other's snapshots.
source "$(dirname "$0")/../functions.sh"
start_sim

ISO=$(json_get "$XAPISIM_READY" iso_vdi)
ISO_FILE=$("$SIMCTL" vdi "$ISO" | json_get - path)
ISO_SUM=$(md5sum <"$ISO_FILE")

# kill_hard PID: kill -9 a background backup and wait until it is gone
# (disowned first, so the shell does not report the kill).
kill_hard() {
  disown "$1"
  kill -9 "$1"
  while kill -0 "$1" 2>/dev/null; do sleep 0.05; done
}

# iso_intact VM WHEN: the ISO VDI and its file are there, unchanged, and the
# VM's CD drive still holds it.
iso_intact() {
  "$SIMCTL" vdi "$ISO" >"$WORK/iso.json" 2>&1 || fail "ISO VDI gone ($2): $(cat "$WORK/iso.json")"
  [ "$(json_get "$WORK/iso.json" exists)" = True ] || fail "ISO file deleted ($2)"
  [ -f "$ISO_FILE" ] && [ "$(md5sum <"$ISO_FILE")" = "$ISO_SUM" ] || fail "ISO file changed ($2)"
  "$SIMCTL" vms | python3 -c '
import json, sys
vm = [v for v in json.load(sys.stdin) if v["uuid"] == sys.argv[1]][0]
cds = [d for d in vm["disks"] if d["type"] == "CD"]
assert len(cds) == 1 and not cds[0]["empty"] and cds[0]["vdi"] == sys.argv[2], (sys.argv[3], cds)
' "$1" "$ISO" "$2" || fail "the CD drive of $1 no longer holds the ISO ($2)"
}

# server_clean VM N WHEN: no snapshot VM of VM, and exactly N snapshot VDIs
# of its disks, all reduced to CBT metadata.
server_clean() {
  "$SIMCTL" vms | python3 -c '
import json, sys
snaps = [v["uuid"] for v in json.load(sys.stdin) if v.get("snapshot_of") == sys.argv[1]]
assert not snaps, ("snapshot VM left", sys.argv[2], snaps)' "$1" "$3" || fail "snapshot VM left ($3)"
  "$SIMCTL" vms >"$WORK/vms.json"
  "$SIMCTL" vdis | python3 -c '
import json, sys
vm = [v for v in json.load(open(sys.argv[1])) if v["uuid"] == sys.argv[2]][0]
disks = {d["vdi"] for d in vm["disks"] if d["type"] == "Disk"}
snaps = [v for v in json.load(sys.stdin) if v["is_a_snapshot"] and v["snapshot_of"] in disks]
assert len(snaps) == int(sys.argv[3]), ("snapshot VDIs", sys.argv[4], len(snaps), snaps)
bad = [(v["uuid"], v["type"], v["exists"]) for v in snaps if v["type"] != "cbt_metadata" or v["exists"]]
assert not bad, ("snapshot data left", sys.argv[4], bad)' "$WORK/vms.json" "$1" "$2" "$3" ||
    fail "snapshot disks not reduced to CBT metadata ($3)"
}

# snapshot_vms VM: uuids of the snapshot VMs of VM, one a line.
snapshot_vms() {
  "$SIMCTL" vms | python3 -c '
import json, sys
for v in json.load(sys.stdin):
    if v.get("snapshot_of") == sys.argv[1]:
        print(v["uuid"])' "$1"
}

wait_nbd_idle() {
  local _
  for _ in $(seq 200); do
    [ "$("$SIMCTL" nbd-stats | json_get - active_connections)" = 0 ] && return 0
    sleep 0.1
  done
  fail "NBD connections of an earlier run did not close"
}

head -c 6M /dev/urandom >"$WORK/d1.img"
head -c 2M /dev/urandom >"$WORK/d2.img"

echo "halted and running VMs with the ISO in their CD drive, backed up twice"
"$SIMCTL" create-vm halted --disk "$WORK/d1.img" --cd --halted >"$WORK/h.json"
"$SIMCTL" create-vm running --disk "$WORK/d1.img" --disk "$WORK/d2.img" --cd >"$WORK/r.json"
HVM=$(json_get "$WORK/h.json" uuid)
RVM=$(json_get "$WORK/r.json" uuid)
R1=$(json_get "$WORK/r.json" vdis.0.uuid)
iso_intact "$HVM" "before any backup"
iso_intact "$RVM" "before any backup"
for round in 1 2; do
  for vm in "$HVM" "$RVM"; do
    [ "$vm" = "$RVM" ] && "$SIMCTL" write-pattern "$R1" $((round << 20)) 65536 $((round + 20)) >/dev/null
    cbt backup --vm "$vm" --json >"$WORK/b.json" || fail "backup $round of $vm failed"
    disks=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["disks"]))' "$WORK/b.json")
    iso_intact "$HVM" "after backup $round of $vm"
    iso_intact "$RVM" "after backup $round of $vm"
    server_clean "$vm" $((round * disks)) "after backup $round of $vm"
  done
  echo "  round $round: ISO intact, only CBT metadata left"
done

echo "orphaned snapshot disks of a killed run"
wait_nbd_idle
"$SIMCTL" fault nbd_delay_ms 3000 >/dev/null
"$SIMCTL" write-pattern "$R1" 0 $((4 << 20)) 31 >/dev/null
cbt_bg "$WORK/repo" /dev/null -q backup --vm "$RVM"
pid=$BG
wait_nbd_active $pid
kill_hard $pid
REPO_ID=$(cat "$WORK/repo/id")
[ -n "$REPO_ID" ] || fail "the repository has no id"
mapfile -t left < <(snapshot_vms "$RVM")
[ ${#left[@]} = 1 ] || fail "expected one snapshot VM left by the killed run, got ${#left[@]}"
# The leftover is named and tagged for this repository, and so are its disks;
# destroy the VM only, as a run killed between VM.destroy and its disks would.
xapi_py '
vm = call("VM.get_by_uuid", args[0])
rec = call("VM.get_record", vm)
import re
assert re.fullmatch(r"cbt-backup \d{8}T\d{6}Z \[%s\]" % re.escape(args[1]), rec["name_label"]), rec["name_label"]
assert rec["other_config"].get("cbt-backup-repository") == args[1], rec["other_config"]
out = []
for vbd in rec["VBDs"]:
    v = call("VBD.get_record", vbd)
    if v["type"] != "Disk":
        continue
    vdi = call("VDI.get_record", v["VDI"])
    assert vdi["other_config"].get("cbt-backup-repository") == args[1], vdi["other_config"]
    out.append(vdi["uuid"])
call("VM.destroy", vm)
open(args[2], "w").write("\n".join(out) + "\n")
' "${left[0]}" "$REPO_ID" "$WORK/orphans" ||
  fail "the leftover snapshot is not named and tagged for this repository"
mapfile -t orphans <"$WORK/orphans"
[ ${#orphans[@]} = 2 ] || fail "expected two snapshot disks on the leftover VM: ${orphans[*]}"
[ -z "$(snapshot_vms "$RVM")" ] || fail "VM.destroy did not remove the snapshot VM"
"$SIMCTL" vdis | python3 -c '
import json, sys
by = {v["uuid"]: v for v in json.load(sys.stdin)}
for u in sys.argv[1:]:
    assert u in by and by[u]["exists"] and by[u]["type"] != "cbt_metadata", by.get(u)' "${orphans[@]}" ||
  fail "the orphaned snapshot disks are not there with their data"
"$SIMCTL" fault nbd_delay_ms 0 >/dev/null
sleep 1
cbt backup --vm "$RVM" --json >"$WORK/orphan.json" || fail "backup after the orphaning failed"
for u in "${orphans[@]}"; do
  python3 -c '
import json, sys
notes = json.load(open(sys.argv[1]))["notes"]
assert any("orphaned" in n and sys.argv[2] in n for n in notes), notes' "$WORK/orphan.json" "$u" ||
    fail "orphan $u not reported: $(json_get "$WORK/orphan.json" notes)"
done
"$SIMCTL" vdis | python3 -c '
import json, sys
have = {v["uuid"] for v in json.load(sys.stdin)}
left = [u for u in sys.argv[1:] if u in have]
assert not left, left' "${orphans[@]}" || fail "orphaned snapshot disks not removed"
iso_intact "$RVM" "after the orphan clean-up"
server_clean "$RVM" 6 "after the orphan clean-up"
echo "  removed: ${orphans[*]}"

echo "two repositories, one VM: a backup into B while one into A runs"
head -c 12M /dev/urandom >"$WORK/t.img"
"$SIMCTL" create-vm two --disk "$WORK/t.img" --cd >"$WORK/t.json"
TVM=$(json_get "$WORK/t.json" uuid)
T1=$(json_get "$WORK/t.json" vdis.0.uuid)
A="$WORK/repoA"
B="$WORK/repoB"
"$SIMCTL" copy-disk "$T1" "$WORK/t0.img" >/dev/null
wait_nbd_idle
"$SIMCTL" fault nbd_delay_ms 4000 >/dev/null
cbt_bg "$A" "$WORK/a1.json" backup --vm "$TVM" --json
apid=$BG
wait_nbd_active $apid
mapfile -t asnap < <(snapshot_vms "$TVM")
[ ${#asnap[@]} = 1 ] || fail "expected A's snapshot VM, got ${asnap[*]}"
# Exports opened from now on are not slowed; A's open ones stay slow.
"$SIMCTL" fault nbd_delay_ms 0 >/dev/null
cbt_in "$B" backup --vm "$TVM" --full --json >"$WORK/b1.json" || fail "backup into B failed while A ran"
kill -0 $apid 2>/dev/null || fail "A ended before B did: the overlap was not tested"
[ "$(json_get "$WORK/b1.json" disks.0.mode)" = full ] || fail "B's backup was not full"
[ "$(snapshot_vms "$TVM")" = "${asnap[0]}" ] || fail "B's backup removed A's running snapshot VM"
A_SNAP=$("$SIMCTL" vms | python3 -c '
import json, sys
vm = [v for v in json.load(sys.stdin) if v["uuid"] == sys.argv[1]][0]
print([d["vdi"] for d in vm["disks"] if d["type"] == "Disk"][0])' "${asnap[0]}")
"$SIMCTL" vdi "$A_SNAP" | python3 -c '
import json, sys
v = json.load(sys.stdin)
assert v["exists"] and v["type"] != "cbt_metadata", v' || fail "B's backup touched A's snapshot disk"
wait $apid || fail "backup into A failed after B's backup: $(cat "$WORK/bg.err")"
[ "$(json_get "$WORK/a1.json" disks.0.snapshot_vdi)" = "$A_SNAP" ] || fail "A read another snapshot"
[ "$(json_get "$WORK/b1.json" disks.0.snapshot_vdi)" != "$A_SNAP" ] || fail "B used A's snapshot"
[ -z "$(snapshot_vms "$TVM")" ] || fail "snapshot VM left after both backups"
for r in "$A" "$B"; do
  "$CBT_BACKUP" --repo "$r" verify -q || fail "verify of $r"
  p=$(ls "$r/$TVM" | grep '^2' | tail -n 1)
  "$CBT_BACKUP" --repo "$r" export --vm "$TVM" --point "$p" --disk "$T1" --format raw \
    --output "$WORK/e.raw" -q
  cmp "$WORK/e.raw" "$WORK/t0.img" || fail "the point in $r differs from the disk"
  rm -f "$WORK/e.raw"
done
echo "  A and B committed, both verify"

echo "a snapshot left by a killed run into A: kept by B, removed by A"
"$SIMCTL" write-pattern "$T1" $((2 << 20)) $((4 << 20)) 77 >/dev/null
wait_nbd_idle
"$SIMCTL" fault nbd_delay_ms 4000 >/dev/null
sleep 1
cbt_bg "$A" /dev/null -q backup --vm "$TVM"
apid=$BG
wait_nbd_active $apid
kill_hard $apid
"$SIMCTL" fault nbd_delay_ms 0 >/dev/null
mapfile -t asnap < <(snapshot_vms "$TVM")
[ ${#asnap[@]} = 1 ] || fail "expected the snapshot VM of the killed run, got ${asnap[*]}"
"$SIMCTL" write-pattern "$T1" 0 65536 78 >/dev/null
sleep 1
cbt_in "$B" backup --vm "$TVM" --json >"$WORK/b2.json" || fail "backup into B failed"
python3 -c '
import json, sys
notes = json.load(open(sys.argv[1]))["notes"]
assert not any(sys.argv[2] in n or "leftover" in n for n in notes), notes' "$WORK/b2.json" "${asnap[0]}" ||
  fail "B reported removing A's snapshot: $(json_get "$WORK/b2.json" notes)"
[ "$(snapshot_vms "$TVM")" = "${asnap[0]}" ] || fail "B's backup removed A's leftover snapshot VM"
"$SIMCTL" vms | python3 -c '
import json, sys
vms = json.load(sys.stdin)
vm = [v for v in vms if v["uuid"] == sys.argv[1]][0]
disks = [d["vdi"] for d in vm["disks"] if d["type"] == "Disk"]
assert len(disks) == 1, vm
print(disks[0])' "${asnap[0]}" >"$WORK/asnap-disk" || fail "A's leftover snapshot VM lost its disk"
"$SIMCTL" vdi "$(cat "$WORK/asnap-disk")" | python3 -c '
import json, sys
v = json.load(sys.stdin)
assert v["exists"] and v["type"] != "cbt_metadata", v' || fail "B's backup touched A's leftover snapshot disk"
sleep 1
cbt_in "$A" backup --vm "$TVM" --json >"$WORK/a2.json" || fail "backup into A after the kill failed"
python3 -c '
import json, sys
notes = json.load(open(sys.argv[1]))["notes"]
assert any("leftover" in n and sys.argv[2] in n for n in notes), notes' "$WORK/a2.json" "${asnap[0]}" ||
  fail "A did not report removing its leftover: $(json_get "$WORK/a2.json" notes)"
[ -z "$(snapshot_vms "$TVM")" ] || fail "A's leftover snapshot VM was not removed by A"
"$SIMCTL" vdis | python3 -c '
import json, sys
have = {v["uuid"] for v in json.load(sys.stdin)}
assert sys.argv[1] not in have' "$(cat "$WORK/asnap-disk")" || fail "A's leftover snapshot disk was not removed"
server_clean "$TVM" 4 "after both repositories"
for r in "$A" "$B"; do
  "$CBT_BACKUP" --repo "$r" verify -q || fail "verify of $r"
done
"$SIMCTL" copy-disk "$T1" "$WORK/t2.img" >/dev/null
p=$(json_get "$WORK/a2.json" point)
cbt_in "$A" export --vm "$TVM" --point "$p" --disk "$T1" --format raw --output "$WORK/e.raw" -q
cmp "$WORK/e.raw" "$WORK/t2.img" || fail "A's point after the clean-up differs from the disk"
iso_intact "$TVM" "after both repositories"
echo PASS
