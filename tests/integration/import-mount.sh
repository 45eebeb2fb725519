#!/usr/bin/env bash
# LABELS: asan
# A legacy repository of an ext4 disk and a raw disk, three points, imported,
# mounted with cbtfs and checked byte for byte, through a loop mount, with
# e2fsck, sparse copies, corruption and a point added while mounted.
source "$(dirname "$0")/../functions.sh"
requires_fuse
requires_loop
requires mkfs.ext4 e2fsck python3

VM=$(new_uuid)
D1=$(new_uuid)   # ext4 disk
D2=$(new_uuid)   # raw disk whose size is not a multiple of 64 KiB
SRC=$WORK/legacy
REPO=$WORK/repo
MNT=$WORK/mnt
FSMNT=$WORK/fs
mkdir -p "$SRC" "$FSMNT"

truncate -s 64M "$WORK/d1.img"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$WORK/d1.img"
head -c $((3 * 65536 + 1000)) /dev/urandom >"$WORK/d2.img"

mount -o loop "$WORK/d1.img" "$FSMNT"
head -c 1M /dev/urandom >"$FSMNT/doomed.bin"
cp "$FSMNT/doomed.bin" "$WORK/doomed.expected"
mkdir "$FSMNT/dir"
echo "hello from point 1" >"$FSMNT/dir/hello.txt"
head -c 4M /dev/urandom >"$FSMNT/big.bin"
umount "$FSMNT"
save_legacy_point "$SRC" "$VM" 20260101T000000Z "$WORK/d1.img" "$D1" "$WORK/d2.img" "$D2"
cp --sparse=always "$WORK/d1.img" "$WORK/p1-d1.img"; cp "$WORK/d2.img" "$WORK/p1-d2.img"

# Point 2: add a file, overwrite part of big.bin with zeros in place.
mount -o loop "$WORK/d1.img" "$FSMNT"
echo "added in point 2" >"$FSMNT/dir/new.txt"
dd if=/dev/zero of="$FSMNT/big.bin" bs=64k seek=8 count=16 conv=notrunc status=none
umount "$FSMNT"
printf 'XYZ' | dd of="$WORK/d2.img" bs=1 seek=$((3 * 65536 + 10)) conv=notrunc status=none
save_legacy_point "$SRC" "$VM" 20260102T000000Z "$WORK/d1.img" "$D1" "$WORK/d2.img" "$D2"
cp --sparse=always "$WORK/d1.img" "$WORK/p2-d1.img"; cp "$WORK/d2.img" "$WORK/p2-d2.img"

# Point 3: delete the doomed file, change hello; zero a whole block of d2.
mount -o loop "$WORK/d1.img" "$FSMNT"
rm "$FSMNT/doomed.bin"
echo "hello from point 3" >"$FSMNT/dir/hello.txt"
umount "$FSMNT"
dd if=/dev/zero of="$WORK/d2.img" bs=64k seek=1 count=1 conv=notrunc status=none
save_legacy_point "$SRC" "$VM" 20260103T000000Z "$WORK/d1.img" "$D1" "$WORK/d2.img" "$D2"
cp --sparse=always "$WORK/d1.img" "$WORK/p3-d1.img"; cp "$WORK/d2.img" "$WORK/p3-d2.img"

src_sum=$(find "$SRC" -type f -exec sha256sum {} + | sort)
"$CBT_BACKUP" import-legacy "$SRC" --repo "$REPO" -q
# Global options are accepted before the command too; a second import adds nothing.
out=$("$CBT_BACKUP" --repo "$REPO" --json import-legacy "$SRC")
echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["imported"]==0 and d["skipped"]==3, d'
[ "$src_sum" = "$(find "$SRC" -type f -exec sha256sum {} + | sort)" ] || fail "SOURCE was modified"

# Modes: directories 0700, files 0600.
bad=$(find "$REPO" \( -type d ! -perm 0700 \) -o \( -type f ! -perm 0600 \) | head -1)
[ -z "$bad" ] || fail "wrong mode on $bad"

# The zeroed region is recorded as ZERO entries, not as data.
"$CBT_BACKUP" list --repo "$REPO" --json >"$WORK/list.json"
python3 - "$WORK/list.json" "$D1" "$D2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
pts = d["vms"][0]["points"]
assert len(pts) == 3, pts
disk = lambda p, v: [x for x in p["disks"] if x["vdi"] == v][0]
assert disk(pts[0], sys.argv[2])["kind"] == "base"
assert disk(pts[2], sys.argv[2])["chain_depth"] == 3
assert disk(pts[1], sys.argv[2])["zero_blocks"] >= 14, disk(pts[1], sys.argv[2])
assert disk(pts[2], sys.argv[3])["zero_blocks"] == 1
# An overlay stores only what changed: far less than the 64 MiB disk.
assert disk(pts[1], sys.argv[2])["stored_bytes"] < 4 << 20
PY
"$CBT_BACKUP" list --repo "$REPO" | grep -q "$D1" || fail "list does not show the disk"
"$CBT_BACKUP" verify --repo "$REPO" -q

mount_cbtfs "$REPO" "$MNT"
for p in 1 2 3; do
  for d in 1 2; do
    uuid=$D1; [ $d = 2 ] && uuid=$D2
    cmp "$MNT/$VM/2026010${p}T000000Z/$uuid.raw" "$WORK/p$p-d$d.img" || fail "point $p disk $d differs"
  done
  e2fsck -fn "$MNT/$VM/2026010${p}T000000Z/$D1.raw" >/dev/null || fail "e2fsck found errors in point $p"
done
[ "$(readlink "$MNT/$VM/latest")" = 20260103T000000Z ] || fail "latest is wrong"
cmp "$MNT/$VM/latest/$D2.raw" "$WORK/p3-d2.img"
grep -q "legacy metadata" "$MNT/$VM/20260102T000000Z/VM_metadata"
grep -q "overlay on 20260101T000000Z" "$MNT/$VM/20260102T000000Z/point.txt"
[ "$(stat -c %s "$MNT/$VM/20260101T000000Z/$D2.raw")" = $((3 * 65536 + 1000)) ] || fail "size"

# Read-only: writes fail with EROFS.
out=$(touch "$MNT/$VM/20260101T000000Z/x" 2>&1 || true)
echo "$out" | grep -q "Read-only file system" || fail "create did not fail with EROFS: $out"
out=$(sh -c "echo x >> '$MNT/$VM/20260101T000000Z/$D1.raw'" 2>&1 || true)
echo "$out" | grep -q "Read-only file system" || fail "write did not fail with EROFS: $out"

# Loop-mount point 1 and read the file deleted in point 3.
loop_mount_ro "$MNT/$VM/20260101T000000Z/$D1.raw" "$WORK/p1fs"
cmp "$WORK/p1fs/doomed.bin" "$WORK/doomed.expected" || fail "file from point 1 differs"
grep -q "hello from point 1" "$WORK/p1fs/dir/hello.txt"
umount "$WORK/p1fs"

# Holes: SEEK_HOLE finds one inside the mostly empty ext4 disk, and a sparse
# copy keeps them.
python3 - "$MNT/$VM/20260103T000000Z/$D1.raw" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
hole = os.lseek(fd, 0, os.SEEK_HOLE)
assert hole < size, "no hole reported"
data = os.lseek(fd, hole, os.SEEK_DATA)
assert hole < data < size, (hole, data)
PY
cp --sparse=always "$MNT/$VM/20260103T000000Z/$D1.raw" "$WORK/copy.img"
cmp "$WORK/copy.img" "$WORK/p3-d1.img"
used=$(du -k "$WORK/copy.img" | cut -f1)
[ "$used" -lt 32768 ] || fail "sparse copy uses $used KiB"

# A fourth point imported while mounted appears without remounting, and the
# files of committed points are not touched by it.
before=$(find "$REPO/$VM" -path "*2026010*" -type f -exec stat -c '%n %Y %s' {} + | sort)
sums_before=$(find "$REPO/$VM" -name '*.cbd' -exec sha256sum {} + | sort)
mount -o loop "$WORK/d1.img" "$FSMNT"
echo "point 4" >"$FSMNT/four.txt"
umount "$FSMNT"
save_legacy_point "$SRC" "$VM" 20260104T000000Z "$WORK/d1.img" "$D1" "$WORK/d2.img" "$D2"
"$CBT_BACKUP" import-legacy "$SRC" --repo "$REPO" -q
for i in $(seq 40); do
  [ -e "$MNT/$VM/20260104T000000Z/$D1.raw" ] && break
  sleep 0.1
done
cmp "$MNT/$VM/20260104T000000Z/$D1.raw" "$WORK/d1.img" || fail "new point not visible or wrong"
for i in $(seq 40); do
  [ "$(readlink "$MNT/$VM/latest")" = 20260104T000000Z ] && break
  sleep 0.1
done
[ "$(readlink "$MNT/$VM/latest")" = 20260104T000000Z ] || fail "latest did not move"
after=$(find "$REPO/$VM" -path "*2026010[123]*" -type f -exec stat -c '%n %Y %s' {} + | sort)
[ "$before" = "$after" ] || fail "committed files changed"
[ "$sums_before" = "$(find "$REPO/$VM" -path "*2026010[123]*" -name '*.cbd' -exec sha256sum {} + | sort)" ] || fail "committed data changed"

# Corrupt one stored data block of point 2's ext4 overlay, in its pack.
umount_cbtfs "$MNT"
read -r pack at _ _ < <(stored_block "$REPO" "$REPO/$VM/20260102T000000Z/$D1.cbd")
printf '\xff\xfe' | dd of="$pack" bs=1 seek=$((at + 7)) conv=notrunc status=none
rc=0
"$CBT_BACKUP" verify --repo "$REPO" --json >"$WORK/verify.json" 2>/dev/null || rc=$?
[ $rc -ne 0 ] || fail "verify did not fail on a corrupted block"
off=$(python3 - "$WORK/verify.json" "$VM" "$D1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["problems"]
assert len(p) == 1, p
assert p[0]["vm"] == sys.argv[2] and p[0]["point"] == "20260102T000000Z" and p[0]["disk"] == sys.argv[3], p
print(p[0]["offset"])
PY
)
msg=$("$CBT_BACKUP" verify --repo "$REPO" 2>&1 || true)
echo "$msg" | grep -q "point 20260102T000000Z disk $D1 offset $off" || fail "verify message: $msg"

mount_cbtfs "$REPO" "$MNT"
rc=0
err=$(dd if="$MNT/$VM/20260102T000000Z/$D1.raw" of=/dev/null bs=64k skip=$((off / 65536)) count=1 2>&1) || rc=$?
[ $rc -ne 0 ] && echo "$err" | grep -q "Input/output error" || fail "corrupted read did not fail with EIO: $err"
# Other blocks of the same point still read, and point 1 is whole.
dd if="$MNT/$VM/20260102T000000Z/$D1.raw" of=/dev/null bs=64k count=$((off / 65536)) status=none
cmp "$MNT/$VM/20260101T000000Z/$D1.raw" "$WORK/p1-d1.img"
umount_cbtfs "$MNT"

# "-o rw" from a user (or an fstab line) still gives a read-only kernel mount.
"$CBTFS" mount "$REPO" "$MNT" -o rw
cleanup_fn "fusermount3 -u '$MNT'"
for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.05; done
[ "$(findmnt -n -o OPTIONS "$MNT" | cut -d, -f1)" = ro ] || fail "-o rw mounted $(findmnt -n -o OPTIONS "$MNT")"
umount_cbtfs "$MNT"
echo PASS
