#!/usr/bin/env bash
# A suspended VM: its point records the power state, and a whole-VM restore
# gives a new halted VM without a suspend image (a point holds no memory),
# with a note saying so, and disks equal to the point; the original VM and
# its suspend image are left as they were.
source "$(dirname "$0")/../functions.sh"
start_sim
SR=$(json_get "$XAPISIM_READY" sr_cbt)

head -c 6M /dev/urandom >"$WORK/d1.img"
head -c $((2 * 65536 + 512)) /dev/urandom >"$WORK/d2.img"
"$SIMCTL" create-vm sleepy --disk "$WORK/d1.img" --disk "$WORK/d2.img" --cd --suspended >"$WORK/vm.json"
VM=$(json_get "$WORK/vm.json" uuid)
V1=$(json_get "$WORK/vm.json" vdis.0.uuid)
V2=$(json_get "$WORK/vm.json" vdis.1.uuid)
SUSP=$(json_get "$WORK/vm.json" suspend_vdi)
[ "$SUSP" != None ] || fail "simulator: the suspended VM has no suspend image"
SUSP_FILE=$("$SIMCTL" vdi "$SUSP" | json_get - path)
SUSP_SUM=$(md5sum <"$SUSP_FILE")

# vm_field UUID FIELD: one field of a VM in simctl vms.
vm_field() {
  "$SIMCTL" vms | python3 -c '
import json, sys
vm = [v for v in json.load(sys.stdin) if v["uuid"] == sys.argv[1]][0]
print(vm[sys.argv[2]])' "$1" "$2"
}
# original_intact WHEN: still suspended on the same, unchanged suspend image.
original_intact() {
  [ "$(vm_field "$VM" power_state)" = Suspended ] || fail "original VM no longer suspended ($1)"
  [ "$(vm_field "$VM" suspend_vdi)" = "$SUSP" ] || fail "original VM lost its suspend image ($1)"
  [ "$("$SIMCTL" vdi "$SUSP" | json_get - exists)" = True ] || fail "suspend image deleted ($1)"
  [ "$(md5sum <"$SUSP_FILE")" = "$SUSP_SUM" ] || fail "suspend image changed ($1)"
}

echo "backup of a suspended VM"
"$SIMCTL" copy-disk "$V1" "$WORK/ref1.img" >/dev/null
"$SIMCTL" copy-disk "$V2" "$WORK/ref2.img" >/dev/null
cbt backup --vm "$VM" --json >"$WORK/b.json"
P=$(json_get "$WORK/b.json" point)
[ "$(json_get "$WORK/repo/$VM/$P/manifest.json" power_state)" = Suspended ] ||
  fail "manifest power_state: $(cat "$WORK/repo/$VM/$P/manifest.json")"
python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert sorted(x["vdi"] for x in d["disks"]) == sorted(sys.argv[2:4]), d["disks"]
assert d["skipped_disks"] == [], d' "$WORK/b.json" "$V1" "$V2" || fail "backup: $(cat "$WORK/b.json")"
# The suspend image is not a disk of the point.
[ ! -e "$WORK/repo/$VM/$P/$SUSP.cbd" ] || fail "the suspend image was backed up as a disk"
"$SIMCTL" vdis | python3 -c '
import json, sys
assert not [v for v in json.load(sys.stdin) if v["snapshot_of"] == sys.argv[1]]' "$SUSP" ||
  fail "the suspend image was snapshotted"
original_intact "after the backup"

echo "whole-VM restore: a halted VM"
cbt restore --vm "$VM" --point "$P" --sr "$SR" >"$WORK/r1.out" 2>"$WORK/r1.err" ||
  fail "restore failed: $(cat "$WORK/r1.err")"
grep -q "restored halted" "$WORK/r1.out" "$WORK/r1.err" || fail "no note: $(cat "$WORK/r1.err")"
NEW1=$(tail -n 1 "$WORK/r1.out")
cbt restore --vm "$VM" --point "$P" --sr "$SR" --json >"$WORK/r2.json" || fail "restore --json failed"
NEW2=$(json_get "$WORK/r2.json" vm)
python3 -c '
import json, sys
notes = json.load(open(sys.argv[1]))["notes"]
assert any("restored halted" in n for n in notes), notes' "$WORK/r2.json" ||
  fail "no note in JSON: $(cat "$WORK/r2.json")"
original_intact "after the restores"

disk_path() { "$SIMCTL" vdi "$1" | json_get - path; }
for new in "$NEW1" "$NEW2"; do
  [ "$new" != "$VM" ] || fail "restore reused the VM's UUID"
  "$SIMCTL" vms | python3 -c '
import json, sys
vms = json.load(sys.stdin)
vm = [v for v in vms if v["uuid"] == sys.argv[1]][0]
assert vm["power_state"] == "Halted", vm
assert vm["suspend_vdi"] is None, vm
assert vm["name_label"] == "sleepy", vm
disks = sorted((d["userdevice"], d["vdi"]) for d in vm["disks"] if d["type"] == "Disk")
assert len(disks) == 2, vm
assert not {d[1] for d in disks} & set(sys.argv[2:]), ("restored VM uses the original disks", disks)
for d in disks:
    print(d[1])' "$new" "$V1" "$V2" "$SUSP" >"$WORK/newdisks" || fail "restored VM $new is wrong"
  mapfile -t nd <"$WORK/newdisks"
  cmp <(head -c $((6 << 20)) "$(disk_path "${nd[0]}")") "$WORK/ref1.img" || fail "restored disk 0 differs"
  cmp <(head -c $((2 * 65536 + 512)) "$(disk_path "${nd[1]}")") "$WORK/ref2.img" || fail "restored disk 1 differs"
done
echo "  $NEW1 and $NEW2: Halted, no suspend image, disks equal to the point"

echo "the restored VM starts from its disks; the original still resumes"
xsim_power() { "$SIMCTL" power "$1" "$2" >/dev/null || fail "power $2 of $1"; }
xsim_power "$NEW1" Running
[ "$(vm_field "$NEW1" power_state)" = Running ] || fail "restored VM did not start"
original_intact "after starting the restored VM"
xsim_power "$VM" Running
[ "$(vm_field "$VM" power_state)" = Running ] || fail "original VM did not resume"
echo PASS
