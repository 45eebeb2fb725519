#!/usr/bin/env bash
# The demo: starts the XAPI simulator with a sample VM whose disk holds a real
# ext4 filesystem, backs the VM up, changes a file inside the VM's disk, backs
# up again (only the changed blocks travel), mounts the repository with
# cbtfs, loop-mounts the newest point read-only, prints the changed file,
# restores the first point as a new VM, and cleans up.  Run as root on Debian 12; installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh
[ -x build/tools/cbt-backup ] && [ -x build/fuse/cbtfs ] || scripts/build.sh release
BIN=$PWD/build
SIMCTL=$PWD/scripts/xapi-sim/simctl
W=$(mktemp -d /tmp/cbt-demo.XXXXXX)
SIM_PID=""
cleanup() {
  umount "$W/point" 2>/dev/null || true
  fusermount3 -u "$W/mnt" 2>/dev/null || true
  umount "$W/guest" 2>/dev/null || true
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
json() { python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$1"; }
mkdir -p "$W/guest" "$W/mnt" "$W/point"

step "A 256 MiB guest disk with an ext4 filesystem"
truncate -s 256M "$W/disk.img"
mkfs.ext4 -q -F "$W/disk.img"
mount -o loop "$W/disk.img" "$W/guest"
echo "Quarterly report, first draft." >"$W/guest/report.txt"
head -c 20M /dev/urandom >"$W/guest/database.bin"
umount "$W/guest"

step "Start the XAPI simulator (XML-RPC over HTTPS, NBD with TLS) with a VM using that disk"
python3 scripts/xapi-sim/xapisim.py --state "$W/sim" --port 0 --https-port 0 >"$W/sim.log" 2>&1 &
SIM_PID=$!
"$SIMCTL" wait-ready "$W/sim/ready.json" >/dev/null
export XAPISIM_READY=$W/sim/ready.json
"$SIMCTL" create-vm demo-vm --disk "$W/disk.img" --cd >"$W/vm.json"
VM=$(json uuid <"$W/vm.json")
VDI=$(json vdis.0.uuid <"$W/vm.json")
echo "VM demo-vm $VM, disk $VDI"
echo xenroot >"$W/password"
chmod 600 "$W/password"
cbt() {
  "$BIN/tools/cbt-backup" --server "$(json https_url <"$XAPISIM_READY")" \
    --ca-cert "$(json ca_cert <"$XAPISIM_READY")" --password-file "$W/password" \
    --repo "$W/repo" "$@"
}

step "First backup: the whole disk (zero blocks are not stored)"
cbt backup --vm demo-vm

step "Inside the VM, the report is finished and the database changes a little"
cp --sparse=always "$W/disk.img" "$W/guest.img"
mount -o loop "$W/guest.img" "$W/guest"
echo "Quarterly report, final version." >"$W/guest/report.txt"
dd if=/dev/urandom of="$W/guest/database.bin" bs=64k count=8 seek=40 conv=notrunc status=none
umount "$W/guest"
# The guest's writes reach the VM's disk block by block; CBT records them.
"$SIMCTL" replace "$VDI" "$W/guest.img" | json blocks_written | sed 's/^/blocks written by the guest: /'

step "Second backup: only the changed blocks are read"
sleep 1
cbt backup --vm demo-vm --verify
cbt list

step "Mount the history with cbtfs"
"$BIN/fuse/cbtfs" mount "$W/repo" "$W/mnt"
sleep 0.3
ls -l "$W/mnt/$VM/"
cat "$W/mnt/$VM/latest/point.txt"

step "Loop-mount the newest point read-only and print the changed file"
mount -o ro,loop,noload "$W/mnt/$VM/latest/$VDI.raw" "$W/point"
echo "--- report.txt in the newest point:"
cat "$W/point/report.txt"
umount "$W/point"
first=$(ls "$W/mnt/$VM" | head -1)
mount -o ro,loop,noload "$W/mnt/$VM/$first/$VDI.raw" "$W/point"
echo "--- report.txt in the first point ($first):"
cat "$W/point/report.txt"
umount "$W/point"

step "Restore the first point to the server as a new VM, checked against the server's MD5"
SR=$(json sr_cbt <"$XAPISIM_READY")
new_vm=$(cbt -q restore --vm "$VM" --point "$first" --sr "$SR" --verify)
echo "restored VM: $new_vm"
"$SIMCTL" vms | python3 -c 'import json,sys
for v in json.load(sys.stdin):
    if v["uuid"] == sys.argv[1]:
        print("name:", v["name_label"], " disks:", [d["vdi"] for d in v["disks"] if d["type"] == "Disk"])' "$new_vm"
echo
echo "Demo finished."
