#!/usr/bin/env bash
# The demo: builds the tools, makes a disk with a real ext4 filesystem, keeps
# three points of it in a repository, mounts the repository with cbtfs,
# loop-mounts an old point read-only and prints a file that was deleted
# later.  Run as root on Debian 12; installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh
[ -x build/tools/cbt-backup ] && [ -x build/fuse/cbtfs ] || scripts/build.sh release
BIN=$PWD/build
W=$(mktemp -d /tmp/cbt-demo.XXXXXX)
cleanup() {
  umount "$W/point" 2>/dev/null || true
  fusermount3 -u "$W/mnt" 2>/dev/null || true
  umount "$W/guest" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

VM=$(cat /proc/sys/kernel/random/uuid)
VDI=$(cat /proc/sys/kernel/random/uuid)
mkdir -p "$W/legacy" "$W/guest" "$W/mnt" "$W/point"

snapshot() {  # a point laid out as the predecessor backup.py did
  local d="$W/legacy/$VM/$1/vdis/$(cat /proc/sys/kernel/random/uuid)"
  mkdir -p "$d"
  echo "demo VM metadata" >"$W/legacy/$VM/$1/VM_metadata"
  cp --sparse=always "$W/disk.img" "$d/data"
  echo "$VDI" >"$d/original_uuid"
}

step "A 256 MiB guest disk with an ext4 filesystem"
truncate -s 256M "$W/disk.img"
mkfs.ext4 -q -F "$W/disk.img"
mount -o loop "$W/disk.img" "$W/guest"
echo "Quarterly report, first draft." >"$W/guest/report.txt"
head -c 20M /dev/urandom >"$W/guest/database.bin"
umount "$W/guest"
snapshot 20261101T020000Z

step "The guest edits its report and deletes it later"
mount -o loop "$W/disk.img" "$W/guest"
echo "Quarterly report, final version." >"$W/guest/report.txt"
dd if=/dev/urandom of="$W/guest/database.bin" bs=64k count=8 seek=40 conv=notrunc status=none
umount "$W/guest"
snapshot 20261102T020000Z
mount -o loop "$W/disk.img" "$W/guest"
rm "$W/guest/report.txt"
umount "$W/guest"
snapshot 20261103T020000Z

step "Import the three points (base + two changed-block overlays)"
"$BIN/tools/cbt-backup" --repo "$W/repo" import-legacy "$W/legacy"
"$BIN/tools/cbt-backup" --repo "$W/repo" list
"$BIN/tools/cbt-backup" --repo "$W/repo" verify

step "Mount the history with cbtfs"
"$BIN/fuse/cbtfs" mount "$W/repo" "$W/mnt"
sleep 0.3
ls -l "$W/mnt/$VM/"
cat "$W/mnt/$VM/20261102T020000Z/point.txt"

step "Loop-mount the point of 2 November read-only and pull out the report"
mount -o ro,loop,noload "$W/mnt/$VM/20261102T020000Z/$VDI.raw" "$W/point"
ls -l "$W/point"
echo "--- report.txt as of 20261102T020000Z:"
cat "$W/point/report.txt"
umount "$W/point"
echo "--- the newest point no longer has it:"
mount -o ro,loop,noload "$W/mnt/$VM/latest/$VDI.raw" "$W/point"
ls "$W/point"
echo
echo "Demo finished."
