#!/usr/bin/env bash
# A VM with a normal disk, a sharable disk and a reset-on-boot disk, which
# XenServer cannot snapshot: the backup leaves the two out of VM.snapshot
# (ignore_vdis), backs up the normal disk, and records the two as not backed
# up in its JSON, the point's manifest and cbtfs's point.txt.
source "$(dirname "$0")/../functions.sh"
requires_fuse
start_sim

head -c 4M /dev/urandom >"$WORK/n.img"
head -c 2M /dev/urandom >"$WORK/s.img"
head -c 1M /dev/urandom >"$WORK/r.img"
"$SIMCTL" create-vm mixed --disk "$WORK/n.img" --sharable-disk "$WORK/s.img" \
  --reset-disk "$WORK/r.img" --cd >"$WORK/vm.json"
VM=$(json_get "$WORK/vm.json" uuid)
N=$(json_get "$WORK/vm.json" vdis.0.uuid)
SH=$(json_get "$WORK/vm.json" vdis.1.uuid)
RS=$(json_get "$WORK/vm.json" vdis.2.uuid)
[ "$("$SIMCTL" vdi "$SH" | json_get - sharable)" = True ] || fail "simulator: disk 1 is not sharable"
[ "$("$SIMCTL" vdi "$RS" | json_get - on_boot)" = reset ] || fail "simulator: disk 2 is not on_boot=reset"
sum_sh=$(md5sum <"$("$SIMCTL" vdi "$SH" | json_get - path)")
sum_rs=$(md5sum <"$("$SIMCTL" vdi "$RS" | json_get - path)")

# check_skipped FILE KEY: FILE's skipped_disks lists exactly SH and RS, with
# reasons naming why (KEY: the field holding the VDI uuid).
check_skipped() {
  python3 - "$1" "$2" "$SH" "$RS" "$N" <<'PY' || fail "skipped disks wrong in $1: $(cat "$1")"
import json, sys
f, key, sh, rs, n = sys.argv[1:]
sk = json.load(open(f))["skipped_disks"]
by = {d[key]: d for d in sk}
assert len(sk) == 2 and set(by) == {sh, rs}, sk
assert "sharable" in by[sh]["reason"], by[sh]
assert "reset" in by[rs]["reason"], by[rs]
assert by[sh]["name"] == "mixed disk 1" and by[rs]["name"] == "mixed disk 2", sk
PY
}

echo "backup of a VM with sharable and reset-on-boot disks"
"$SIMCTL" write-pattern "$N" 65536 200000 5 >/dev/null
"$SIMCTL" copy-disk "$N" "$WORK/ref1.img" >/dev/null
# Slow NBD reads so the snapshot VM can be looked at while it exists.
"$SIMCTL" fault nbd_delay_ms 3000 >/dev/null
cbt backup --vm "$VM" --json >"$WORK/b1.json" 2>"$WORK/b1.err" &
pid=$!
for _ in $(seq 200); do
  [ "$("$SIMCTL" nbd-stats | json_get - active_connections)" != 0 ] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
kill -0 $pid 2>/dev/null || fail "the backup ended before its snapshot could be looked at: $(cat "$WORK/b1.err")"
"$SIMCTL" vms | python3 -c '
import json, sys
vm, n, sh, rs = sys.argv[1:]
vms = json.load(sys.stdin)
snaps = [v for v in vms if v.get("snapshot_of") == vm]
assert len(snaps) == 1, snaps
disks = [d for d in snaps[0]["disks"] if d["type"] == "Disk"]
assert len(disks) == 1, ("the snapshot VM has VBDs for the skipped disks", snaps[0]["disks"])
assert not {d["vdi"] for d in snaps[0]["disks"]} & {sh, rs}, snaps[0]["disks"]
' "$VM" "$N" "$SH" "$RS" || fail "snapshot VM not as expected"
wait $pid || fail "backup failed: $(cat "$WORK/b1.err")"
"$SIMCTL" fault nbd_delay_ms 0 >/dev/null
echo "  snapshot VM had one disk VBD"

python3 - "$WORK/b1.json" "$N" <<'PY' || fail "backed-up disks wrong: $(cat "$WORK/b1.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert [x["vdi"] for x in d["disks"]] == [sys.argv[2]], d["disks"]
assert d["disks"][0]["mode"] == "full", d["disks"]
PY
check_skipped "$WORK/b1.json" vdi
P1=$(json_get "$WORK/b1.json" point)
check_skipped "$WORK/repo/$VM/$P1/manifest.json" vdi_uuid
echo "  JSON, messages and manifest list the two skipped disks"

echo "a second, incremental backup, text output"
"$SIMCTL" write-pattern "$N" $((3 << 20)) 70000 6 >/dev/null
"$SIMCTL" copy-disk "$N" "$WORK/ref2.img" >/dev/null
sleep 1
cbt backup --vm "$VM" >"$WORK/b2.out" 2>&1 || fail "second backup failed: $(cat "$WORK/b2.out")"
grep -q "disk $SH: not backed up (sharable disk" "$WORK/b2.out" || fail "no sharable message: $(cat "$WORK/b2.out")"
grep -q "disk $RS: not backed up (reset-on-boot disk" "$WORK/b2.out" || fail "no reset message: $(cat "$WORK/b2.out")"
grep -q "disk $N: incremental" "$WORK/b2.out" || fail "second backup not incremental: $(cat "$WORK/b2.out")"
P2=$(ls "$WORK/repo/$VM" | grep '^2' | tail -n 1)
[ "$P2" != "$P1" ] || fail "no second point"
check_skipped "$WORK/repo/$VM/$P2/manifest.json" vdi_uuid
compgen -G "$WORK/repo/$VM/$P2/*-*-*-*-*" | grep -v "/$N" >"$WORK/extra" || true
[ ! -s "$WORK/extra" ] || fail "files other than the normal disk's in the point: $(cat "$WORK/extra")"

echo "points equal the disk; nothing stored for the skipped ones"
for n in 1 2; do
  p=$P1
  [ $n = 2 ] && p=$P2
  cbt export --vm "$VM" --point "$p" --disk "$N" --format raw --output "$WORK/e$n.raw" -q
  cmp "$WORK/e$n.raw" "$WORK/ref$n.img" || fail "point $n differs from the disk"
  expect_fail cbt export --vm "$VM" --point "$p" --disk "$SH" --format raw --output "$WORK/x.raw" >/dev/null
done
"$CBT_BACKUP" verify --repo "$WORK/repo" -q

echo "server: skipped disks untouched, no snapshot of them, nothing left over"
"$SIMCTL" vms >"$WORK/vms.json"
"$SIMCTL" vdis | python3 -c '
import json, sys
vms = json.load(open(sys.argv[1]))
vm, n, sh, rs = sys.argv[2:]
assert not [v for v in vms if v.get("snapshot_of") == vm], "snapshot VM left"
vdis = json.load(sys.stdin)
by = {v["uuid"]: v for v in vdis}
for u in (sh, rs):
    assert by[u]["exists"] and not by[u]["is_a_snapshot"], by[u]
    assert not [v for v in vdis if v["snapshot_of"] == u], ("snapshot of a skipped disk", u)
snaps = [v for v in vdis if v["snapshot_of"] == n]
assert len(snaps) == 2, snaps
assert all(v["type"] == "cbt_metadata" for v in snaps), snaps
vm_rec = [v for v in vms if v["uuid"] == vm][0]
assert {d["vdi"] for d in vm_rec["disks"] if d["type"] == "Disk"} == {n, sh, rs}, vm_rec
' "$WORK/vms.json" "$VM" "$N" "$SH" "$RS" || fail "server state wrong"
[ "$(md5sum <"$("$SIMCTL" vdi "$SH" | json_get - path)")" = "$sum_sh" ] || fail "sharable disk changed"
[ "$(md5sum <"$("$SIMCTL" vdi "$RS" | json_get - path)")" = "$sum_rs" ] || fail "reset-on-boot disk changed"

echo "cbtfs: point.txt says which disks were not backed up"
mount_cbtfs "$WORK/repo" "$WORK/mnt"
for p in "$P1" "$P2"; do
  txt="$WORK/mnt/$VM/$p/point.txt"
  grep -q "$SH .*not backed up: sharable disk" "$txt" || fail "point.txt of $p: $(cat "$txt")"
  grep -q "$RS .*not backed up: reset-on-boot disk" "$txt" || fail "point.txt of $p: $(cat "$txt")"
  [ "$(grep -c "not backed up" "$txt")" = 2 ] || fail "point.txt of $p: $(cat "$txt")"
  [ -e "$WORK/mnt/$VM/$p/$SH.raw" ] && fail "a skipped disk has a file under cbtfs"
  [ -e "$WORK/mnt/$VM/$p/$RS.raw" ] && fail "a skipped disk has a file under cbtfs"
done
cmp "$WORK/mnt/$VM/$P2/$N.raw" "$WORK/ref2.img" || fail "cbtfs file of point 2 differs"
echo PASS
