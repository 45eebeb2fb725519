#!/usr/bin/env bash
# LABELS: asan
# A VM with two disks and an empty CD drive, backed up from the simulator
# once in full and three times incrementally with guest writes in between
# (including blocks overwritten with zeros and the partial last block of a
# disk whose size is not a multiple of 64 KiB).  Every point read through
# cbtfs equals the disk at snapshot time; incrementals read only what changed;
# the server keeps no snapshot VM and only CBT metadata of the snapshots.
source "$(dirname "$0")/../functions.sh"
requires_fuse
start_sim

create_demo_vm

# backup_round N EXPECTED_MODE CHANGED_BYTES: copies both disks as they are
# now (the snapshot will see the same), backs up, and checks the summary.
backup_round() {
  local n=$1 mode=$2 changed=$3
  "$SIMCTL" copy-disk "$V1" "$WORK/ref$n-1.img" >/dev/null
  "$SIMCTL" copy-disk "$V2" "$WORK/ref$n-2.img" >/dev/null
  "$SIMCTL" nbd-reset >/dev/null
  sleep 1  # points are named by the second
  cbt backup --vm demo --json >"$WORK/b$n.json"
  python3 - "$WORK/b$n.json" "$mode" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d["disks"]) == 2, d
for disk in d["disks"]:
    assert disk["mode"] == sys.argv[2], disk
PY
  json_get "$WORK/b$n.json" point >"$WORK/point$n"
  local read
  read=$("$SIMCTL" nbd-stats | json_get - bytes_read)
  echo "round $n: NBD read $read bytes, changed $changed"
  if [ "$mode" = incremental ]; then
    [ "$read" -ge "$changed" ] && [ "$read" -le $((changed * 105 / 100)) ] ||
      fail "round $n read $read bytes over NBD for $changed changed bytes"
  fi
}

backup_round 0 full 0

# Round 1: 4 blocks at 1 MiB (unaligned length), 2 blocks at 8 MiB.
"$SIMCTL" write-pattern "$V1" 1048576 200000 171 >/dev/null
"$SIMCTL" write-pattern "$V1" 8388608 131072 85 >/dev/null
backup_round 1 incremental $((6 * 65536))

# Round 2: the blocks at 8 MiB become zeros; the partial last block of disk 2.
"$SIMCTL" zero "$V1" 8388608 131072 >/dev/null
"$SIMCTL" write-pattern "$V2" $((3 * 65536 + 100)) 300 7 >/dev/null
backup_round 2 incremental $((2 * 65536 + 1024))

# Round 3: one block on each disk.
"$SIMCTL" write-pattern "$V1" $((60 << 20)) 4096 1 >/dev/null
"$SIMCTL" write-pattern "$V2" 0 512 2 >/dev/null
backup_round 3 incremental $((2 * 65536))

# What each backup reported as stored is what list shows for its point:
# the disk file and the blocks it stored new, not the disk file alone.
"$CBT_BACKUP" list --repo "$WORK/repo" --json >"$WORK/list.json"
for n in 0 1 2 3; do
  python3 - "$WORK/b$n.json" "$WORK/list.json" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
pts = json.load(open(sys.argv[2]))["vms"][0]["points"]
listed = {d["vdi"]: d["stored_bytes"] for p in pts if p["point"] == b["point"] for d in p["disks"]}
for d in b["disks"]:
    assert d["bytes_stored"] == listed[d["vdi"]], (d, listed)
assert sum(d["bytes_stored"] for d in b["disks"]) > 4096 * len(b["disks"]), b
PY
done

# Zero blocks are recorded as zero entries, not skipped.
"$CBT_BACKUP" list --repo "$WORK/repo" --json | python3 -c '
import json, sys
pts = json.load(sys.stdin)["vms"][0]["points"]
assert len(pts) == 4, pts
d = [x for x in pts[2]["disks"] if x["vdi"] == sys.argv[1]][0]
assert d["zero_blocks"] == 2 and d["kind"] == "overlay", d
assert all(x["chain_depth"] == 4 for x in pts[3]["disks"])
' "$V1"
"$CBT_BACKUP" verify --repo "$WORK/repo" -q

# The server: no snapshot VM left, every snapshot VDI reduced to CBT metadata.
"$SIMCTL" vms | python3 -c '
import json, sys
snaps = [v for v in json.load(sys.stdin) if v.get("is_a_snapshot")]
assert not snaps, snaps'
"$SIMCTL" vdis | python3 -c '
import json, sys
snaps = [v for v in json.load(sys.stdin) if v.get("is_a_snapshot")]
assert len(snaps) == 8, len(snaps)
bad = [v for v in snaps if v["type"] != "cbt_metadata"]
assert not bad, bad'

mount_cbtfs "$WORK/repo" "$WORK/mnt"
for n in 0 1 2 3; do
  p=$(cat "$WORK/point$n")
  cmp "$WORK/mnt/$VM/$p/$V1.raw" "$WORK/ref$n-1.img" || fail "point $n disk 1 differs"
  cmp "$WORK/mnt/$VM/$p/$V2.raw" "$WORK/ref$n-2.img" || fail "point $n disk 2 differs"
  head -c 10 "$WORK/mnt/$VM/$p/VM_metadata" >/dev/null
done
# The metadata is the export_metadata tar, holding ova.xml.
tar -tf "$WORK/mnt/$VM/latest/VM_metadata" | grep -qx ova.xml || fail "VM_metadata is not the export tar"
e2fsck -fn "$WORK/mnt/$VM/$(cat "$WORK/point0")/$V1.raw" >/dev/null || fail "e2fsck on point 0"
echo PASS
