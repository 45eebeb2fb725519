#!/usr/bin/env bash
# import-image: full compare, changed-block lists, --full, a resized disk, and
# bad input (one-line errors, nothing committed).
source "$(dirname "$0")/../functions.sh"
requires_fuse
requires python3

VM=$(new_uuid)
VDI=$(new_uuid)
REPO=$WORK/repo
MNT=$WORK/mnt
run() { "$CBT_BACKUP" --repo "$REPO" "$@"; }

head -c $((40 * 65536 + 512)) /dev/urandom >"$WORK/disk.img"
run -q import-image --vm "$VM" --disk "$VDI" --point 20260301T000000Z "$WORK/disk.img"
cp "$WORK/disk.img" "$WORK/p1.img"

# Change blocks 3 and 39..40 (40 is the partial last block), zero block 7.
dd if=/dev/urandom of="$WORK/disk.img" bs=64k seek=3 count=1 conv=notrunc status=none
dd if=/dev/urandom of="$WORK/disk.img" bs=64k seek=39 count=2 conv=notrunc status=none
truncate -s $((40 * 65536 + 512)) "$WORK/disk.img"
dd if=/dev/zero of="$WORK/disk.img" bs=64k seek=7 count=1 conv=notrunc status=none
printf '3\n# a comment\n39-40\n7\n' >"$WORK/changed.txt"
out=$(run --json import-image --vm "$VM" --disk "$VDI" --point 20260302T000000Z \
  --changed-blocks "$WORK/changed.txt" "$WORK/disk.img")
echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert (d["kind"],d["data_blocks"],d["zero_blocks"],d["parent_point"])==("overlay",3,1,"20260301T000000Z"), d'
# The bytes reported stored are those list shows for the point (the blocks
# in the store, not only the disk file of references).
run list --json | python3 -c '
import json, sys
d = json.loads(sys.argv[1])
pts = json.load(sys.stdin)["vms"][0]["points"]
listed = [x for x in pts if x["point"] == "20260302T000000Z"][0]["disks"][0]["stored_bytes"]
assert d["stored_bytes"] == listed and d["stored_bytes"] > 3 * 30000, (d["stored_bytes"], listed)
' "$out"
cp "$WORK/disk.img" "$WORK/p2.img"

# Without a list the image is compared with the parent.
dd if=/dev/urandom of="$WORK/disk.img" bs=64k seek=20 count=1 conv=notrunc status=none
out=$(run --json import-image --vm "$VM" --disk "$VDI" --point 20260303T000000Z "$WORK/disk.img")
echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert (d["data_blocks"],d["zero_blocks"])==(1,0), d'
cp "$WORK/disk.img" "$WORK/p3.img"

# --full starts a new chain.
out=$(run --json import-image --vm "$VM" --disk "$VDI" --point 20260304T000000Z --full "$WORK/disk.img")
echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["kind"]=="base" and d["reason"]=="--full", d'

# A resized disk falls back to a base with the reason.
truncate -s $((48 * 65536)) "$WORK/disk.img"
out=$(run --json import-image --vm "$VM" --disk "$VDI" --point 20260305T000000Z "$WORK/disk.img")
echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["kind"]=="base" and "size changed" in d["reason"], d'
cp "$WORK/disk.img" "$WORK/p5.img"

# Bad input: one line, non-zero exit, nothing committed.
before=$(ls "$REPO/$VM")
msg=$(expect_fail run import-image --vm "$VM" --disk "$VDI" --point 20260301T000000Z "$WORK/disk.img")
echo "$msg" | grep -q "already has point" || fail "duplicate point: $msg"
msg=$(expect_fail run import-image --vm "$VM" --disk "$VDI" --point 20260306T000000Z --changed-blocks "$WORK/changed.txt" /nonexistent.img)
[ "$(echo "$msg" | wc -l)" = 1 ] || fail "not one line: $msg"
printf '99999\n' >"$WORK/bad.txt"
msg=$(expect_fail run import-image --vm "$VM" --disk "$VDI" --point 20260306T000000Z --changed-blocks "$WORK/bad.txt" "$WORK/disk.img")
echo "$msg" | grep -q "beyond the end" || fail "out-of-range block: $msg"
printf 'x\n' >"$WORK/bad.txt"
msg=$(expect_fail run import-image --vm "$VM" --disk "$VDI" --changed-blocks "$WORK/bad.txt" "$WORK/disk.img")
echo "$msg" | grep -q "line 1" || fail "bad list: $msg"
msg=$(expect_fail run import-image --vm not-a-uuid --disk "$VDI" "$WORK/disk.img")
echo "$msg" | grep -q "not a VM UUID" || fail "bad uuid: $msg"
msg=$(expect_fail run --pwd secret list)
echo "$msg" | grep -q -- "--password-file" || fail "--pwd: $msg"
msg=$(expect_fail run list --bogus)
[ "$(ls "$REPO/$VM")" = "$before" ] || fail "a failed command changed the repository"
ls -a "$REPO/$VM" | grep -q '^\.tmp-' && fail "temporary left behind"

mount_cbtfs "$REPO" "$MNT"
for p in 1 2 3 5; do
  cmp "$MNT/$VM/2026030${p}T000000Z/$VDI.raw" "$WORK/p$p.img" || fail "point $p differs"
done
cmp "$MNT/$VM/20260304T000000Z/$VDI.raw" "$WORK/p3.img"
echo PASS
