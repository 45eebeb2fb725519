#!/usr/bin/env bash
# LABELS: asan
# Restore against the simulator: every point of a two-disk VM as a whole VM
# (disks equal to the backed-up ones, VM from the original metadata), one
# disk to a new VDI (vhd and raw), from a file under a cbtfs mount, over an
# existing VDI, a changed-blocks restore that sends only what changed, VHD
# and raw export checked with qemu-img, and an upload cut halfway that leaves
# no VDI behind.
source "$(dirname "$0")/../functions.sh"
requires_fuse
requires qemu-img
start_sim
SR=$(json_get "$XAPISIM_READY" sr_cbt)

create_demo_vm

for n in 0 1 2; do
  if [ $n -gt 0 ]; then
    "$SIMCTL" write-pattern "$V1" $((n << 20)) 300000 $((n + 40)) >/dev/null
    "$SIMCTL" write-pattern "$V2" $((n * 65536)) 1000 $((n + 50)) >/dev/null
    sleep 1
  fi
  "$SIMCTL" copy-disk "$V1" "$WORK/ref$n-1.img" >/dev/null
  "$SIMCTL" copy-disk "$V2" "$WORK/ref$n-2.img" >/dev/null
  cbt -q backup --vm demo
done
mapfile -t POINTS < <(ls "$WORK/repo/$VM" | grep '^2')
[ ${#POINTS[@]} = 3 ] || fail "expected 3 points"

# vdi_of VM_UUID USERDEVICE: the VDI uuid behind a VM's disk.
vdi_of() {
  "$SIMCTL" vms | python3 -c '
import json, sys
vm = [v for v in json.load(sys.stdin) if v["uuid"] == sys.argv[1]][0]
print([d["vdi"] for d in vm["disks"] if d["userdevice"] == sys.argv[2]][0])' "$1" "$2"
}
disk_path() { "$SIMCTL" vdi "$1" | json_get - path; }

echo "whole-VM restore of every point"
for n in 0 1 2; do
  out=$(cbt restore --vm "$VM" --point "${POINTS[$n]}" --sr "$SR" --json)
  new=$(echo "$out" | json_get - vm)
  [ "$new" != "$VM" ] || fail "restore reused the VM UUID"
  # The VM comes from the saved metadata: same name, two disks and a CD.
  "$SIMCTL" vms | python3 -c '
import json, sys
vm = [v for v in json.load(sys.stdin) if v["uuid"] == sys.argv[1]][0]
assert vm["name_label"] == "demo", vm
disks = [d for d in vm["disks"] if d["type"] == "Disk"]
assert len(disks) == 2, vm
assert any(d["type"] == "CD" for d in vm["disks"]), vm' "$new"
  cmp <(head -c $((64 << 20)) "$(disk_path "$(vdi_of "$new" 0)")") "$WORK/ref$n-1.img" || fail "point $n disk 1 differs"
  cmp <(head -c $((3 * 65536 + 1024)) "$(disk_path "$(vdi_of "$new" 1)")") "$WORK/ref$n-2.img" || fail "point $n disk 2 differs"
done

echo "one disk to a new VDI, vhd and raw, with --verify"
for fmt in vhd raw; do
  out=$(cbt restore --vm "$VM" --point "${POINTS[1]}" --sr "$SR" --disk "$V2" --format $fmt --verify --json)
  [ "$(echo "$out" | json_get - disks.0.verify)" = ok ] || fail "verify $fmt"
  t=$(echo "$out" | json_get - disks.0.target_vdi)
  cmp <(head -c $((3 * 65536 + 1024)) "$(disk_path "$t")") "$WORK/ref1-2.img" || fail "$fmt restore differs"
done
# vhd skips holes: far fewer bytes than raw for the mostly empty ext4 disk
vhd_bytes=$(cbt restore --vm "$VM" --point "${POINTS[0]}" --sr "$SR" --disk "$V1" --json | json_get - disks.0.bytes_sent)
raw_bytes=$(cbt restore --vm "$VM" --point "${POINTS[0]}" --sr "$SR" --disk "$V1" --format raw --json | json_get - disks.0.bytes_sent)
echo "  ext4 disk: vhd sent $vhd_bytes bytes, raw $raw_bytes"
[ "$vhd_bytes" -lt $((raw_bytes / 2)) ] || fail "vhd restore did not skip holes"

echo "from a file under a cbtfs mount"
mount_cbtfs "$WORK/repo" "$WORK/mnt"
out=$(cbt restore --vm "$VM" --point "${POINTS[2]}" --sr "$SR" --disk "$V1" \
  --from-file "$WORK/mnt/$VM/${POINTS[2]}/$V1.raw" --json)
t=$(echo "$out" | json_get - disks.0.target_vdi)
cmp <(head -c $((64 << 20)) "$(disk_path "$t")") "$WORK/ref2-1.img" || fail "restore from cbtfs file differs"

echo "over an existing VDI of another disk (full write)"
"$SIMCTL" create-vm scratch --empty-disk $((64 << 20)) >"$WORK/scratch.json"
S1=$(json_get "$WORK/scratch.json" vdis.0.uuid)
"$SIMCTL" write-pattern "$S1" 0 $((8 << 20)) 99 >/dev/null
out=$(cbt restore --vm "$VM" --point "${POINTS[0]}" --disk "$V1" --onto-vdi "$S1" --json)
[ "$(echo "$out" | json_get - disks.0.mode)" = full ] || fail "expected a full write"
cmp "$(disk_path "$S1")" "$WORK/ref0-1.img" || fail "onto-vdi restore differs"

echo "changed blocks only, back onto the disk the point came from"
"$SIMCTL" power "$VM" Halted >/dev/null
"$SIMCTL" write-pattern "$V1" $((20 << 20)) 65536 7 >/dev/null
"$SIMCTL" write-pattern "$V1" $((40 << 20)) 4096 8 >/dev/null
"$SIMCTL" nbd-reset >/dev/null
out=$(cbt restore --vm "$VM" --point "${POINTS[1]}" --disk "$V1" --onto-vdi "$V1" --verify --json)
echo "$out" | python3 -c '
import json, sys
d = json.load(sys.stdin)["disks"][0]
assert d["mode"] == "changed-blocks", d
assert d["verify"] == "ok", d
# blocks changed since point 1: point 2 wrote 5, then 2 more
assert d["blocks_sent"] <= 8, d
print("  sent %d blocks, %d bytes" % (d["blocks_sent"], d["bytes_sent"]))
assert d["bytes_sent"] < (64 << 20) // 4, d'
cmp "$(disk_path "$V1")" "$WORK/ref1-1.img" || fail "changed-blocks restore did not roll back"

echo "changed blocks only, raw chunked framing: exactly the changed 64 KiB blocks"
"$SIMCTL" write-pattern "$V1" $((30 << 20)) 65536 9 >/dev/null
"$SIMCTL" write-pattern "$V1" $((50 << 20)) 100 10 >/dev/null
out=$(cbt restore --vm "$VM" --point "${POINTS[2]}" --disk "$V1" --onto-vdi "$V1" --format raw --verify --json)
echo "$out" | python3 -c '
import json, sys
d = json.load(sys.stdin)["disks"][0]
assert d["mode"] == "changed-blocks" and d["verify"] == "ok", d
# since point 2: the 2 blocks above plus the 2 written before the last restore
# and the blocks that restore rewrote
assert d["bytes_sent"] <= d["blocks_sent"] * (65536 + 12) + 12, d
print("  sent %d blocks, %d bytes" % (d["blocks_sent"], d["bytes_sent"]))'
cmp "$(disk_path "$V1")" "$WORK/ref2-1.img" || fail "chunked changed-blocks restore did not roll back"

echo "export: VHD checked by qemu-img, raw sparse"
cbt export --vm "$VM" --point "${POINTS[2]}" --disk "$V1" --format vhd --output "$WORK/e.vhd" -q
qemu-img info -f vpc "$WORK/e.vhd" | grep -q "virtual size: 64 MiB" || fail "qemu-img info"
qemu-img compare -f vpc -F raw "$WORK/e.vhd" "$WORK/ref2-1.img" || fail "qemu-img compare"
cbt export --vm "$VM" --point "${POINTS[2]}" --disk "$V2" --format vhd --output "$WORK/e2.vhd" -q
qemu-img compare -f vpc -F raw "$WORK/e2.vhd" "$WORK/ref2-2.img" || fail "qemu-img compare (odd size)"
cbt export --vm "$VM" --point "${POINTS[2]}" --disk "$V1" --format raw --output "$WORK/e.raw" -q
cmp "$WORK/e.raw" "$WORK/ref2-1.img"
[ "$(du -k "$WORK/e.raw" | cut -f1)" -lt 16384 ] || fail "raw export is not sparse"
[ "$(stat -c %a "$WORK/e.raw")" = 600 ] || fail "export not 0600"

echo "an upload cut halfway leaves no VDI behind"
count_vdis() { "$SIMCTL" vdis | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
# A damaged block deep in the point makes the client stop mid-upload.
cp -a "$WORK/repo" "$WORK/repo-damaged"
f="$WORK/repo-damaged/$VM/${POINTS[0]}/$V1.cbd"
n=$(python3 -c 'import struct,sys; b=open(sys.argv[1],"rb").read(); print(struct.unpack_from("<Q",b,56)[0])' "$f")
read -r pack at _ _ < <(stored_block "$WORK/repo-damaged" "$f" $((n / 2)))
printf '\xff\xff\xff\xff' | dd of="$pack" bs=1 seek=$((at + 4)) conv=notrunc status=none
before=$(count_vdis)
msg=$(expect_fail "$CBT_BACKUP" --server "$SIM_URL" --ca-cert "$SIM_CA" --password-file "$WORK/pw" \
  --repo "$WORK/repo-damaged" restore --vm "$VM" --point "${POINTS[0]}" --sr "$SR" --format raw)
echo "  $msg"
echo "$msg" | grep -q "corrupted block" || fail "expected the damaged block to be named: $msg"
[ "$(count_vdis)" = "$before" ] || fail "a failed restore left a VDI behind"
# A target that is too small, and an unknown SR: clear errors, nothing created.
"$SIMCTL" create-vm small --empty-disk 1048576 >"$WORK/small.json"
SM=$(json_get "$WORK/small.json" vdis.0.uuid)
before=$(count_vdis)
msg=$(expect_fail cbt restore --vm "$VM" --point "${POINTS[0]}" --disk "$V1" --onto-vdi "$SM")
echo "$msg" | grep -q "bytes" || fail "too-small target: $msg"
msg=$(expect_fail cbt restore --vm "$VM" --point "${POINTS[0]}" --sr 00000000-0000-4000-8000-000000000000)
echo "$msg" | grep -q "no SR" || fail "unknown SR: $msg"
[ "$(count_vdis)" = "$before" ] || fail "a failed restore left a VDI"
echo PASS
