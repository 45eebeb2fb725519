#!/usr/bin/env bash
# LABELS: asan
# A repository on a small loop-mounted filesystem that runs out of space
# during an import, a backup and a prune: each fails with a clear one-line
# error, leaves no temporary behind, and every earlier point stays intact.
source "$(dirname "$0")/../functions.sh"
requires_loop
requires mkfs.ext4 fallocate sha256sum python3

SMALL=$WORK/small
truncate -s 48M "$WORK/fs.img"
mkfs.ext4 -q -F -m 0 "$WORK/fs.img"
mkdir -p "$SMALL"
mount -o loop "$WORK/fs.img" "$SMALL"
cleanup_fn "umount '$SMALL'"
REPO=$SMALL/repo
ln -s "$REPO" "$WORK/repo"  # the simulator helpers use $WORK/repo
run() { "$CBT_BACKUP" --repo "$REPO" "$@"; }

# fill_to KIB: leaves about KIB KiB free on the small filesystem.
fill_to() {
  rm -f "$SMALL/fill"
  sync
  local avail
  avail=$(df -k --output=avail "$SMALL" | tail -n 1)
  # Asking for every free block fails (the file needs metadata blocks too):
  # then take what can be had, and let a byte-wise fill do the rest.
  if [ "$avail" -gt "$1" ]; then
    fallocate -l $(((avail - $1) * 1024)) "$SMALL/fill" 2>/dev/null ||
      fallocate -l $(((avail - $1 - 256) * 1024)) "$SMALL/fill"
  fi
  sync
}
# intact: no temporaries, verify clean, and every point reads as recorded.
intact() {
  if ls -A "$REPO"/*/ | grep -qE '^(\.tmp-|\.del-|journal)'; then
    fail "$1: leftovers: $(ls -A "$REPO"/*/)"
  fi
  run -q verify || fail "$1: verify found damage"
  local f vm ts vdi
  for f in "$WORK"/sums/*; do
    IFS=_ read -r vm ts vdi <<<"$(basename "$f")"
    [ "$(run export --vm "$vm" --disk "$vdi" --point "$ts" --output - 2>/dev/null | sha256sum | cut -d' ' -f1)" = "$(cat "$f")" ] ||
      fail "$1: point $ts of $vm changed"
  done
}
# enospc CMD...: CMD fails with one line saying the disk is full.
enospc() {
  local msg
  msg=$(expect_fail "$@")
  [ "$(echo "$msg" | wc -l)" = 1 ] || fail "not one line: $msg"
  echo "$msg" | grep -q "No space left on device" || fail "unclear error: $msg"
  echo "  $msg"
}
mkdir -p "$WORK/sums"

# --- import ------------------------------------------------------------------
IVM=$(new_uuid)
IVDI=$(new_uuid)
head -c 8M /dev/urandom >"$WORK/disk.img"
run -q import-image --vm "$IVM" --disk "$IVDI" --point 20260701T000000Z "$WORK/disk.img"
sha256sum <"$WORK/disk.img" | cut -d' ' -f1 >"$WORK/sums/${IVM}_20260701T000000Z_${IVDI}"
dd if=/dev/urandom of="$WORK/disk.img" bs=64k seek=3 count=4 conv=notrunc status=none
run -q import-image --vm "$IVM" --disk "$IVDI" --point 20260702T000000Z "$WORK/disk.img"
sha256sum <"$WORK/disk.img" | cut -d' ' -f1 >"$WORK/sums/${IVM}_20260702T000000Z_${IVDI}"
fill_to 4096
head -c 8M /dev/urandom >"$WORK/disk.img"
echo "import of 8 MiB with 4 MiB free:"
enospc run import-image --vm "$IVM" --disk "$IVDI" --point 20260703T000000Z --full "$WORK/disk.img"
intact "import"

# --- backup --------------------------------------------------------------------
rm -f "$SMALL/fill"
start_sim
create_demo_vm
cbt -q backup --vm demo
ts=$(ls "$REPO/$VM" | grep -E '^[0-9]{8}T')
for v in "$V1" "$V2"; do
  cbt export --vm "$VM" --disk "$v" --point "$ts" --output - | sha256sum | cut -d' ' -f1 >"$WORK/sums/${VM}_${ts}_${v}"
done
"$SIMCTL" write "$V1" $((8 << 20)) "$WORK/disk.img" >/dev/null
sleep 1  # a new point needs a new second
fill_to 1024
echo "backup of 8 MiB of changes with 1 MiB free:"
enospc cbt -q backup --vm demo --full
intact "backup"
# The failed run left no snapshot of its own on the server.
snaps=$("$SIMCTL" vms | python3 -c 'import json,sys; print(sum(1 for v in json.load(sys.stdin) if v["is_a_snapshot"]))')
[ "$snaps" = 0 ] || fail "the failed backup left $snaps snapshot VM(s) on the server"

# --- prune ---------------------------------------------------------------------
fill_to 0
# Fill the last blocks too: nothing new can be written at all.
dd if=/dev/zero of="$SMALL/fill2" bs=4k status=none 2>/dev/null || true
sync
echo "prune with no space left:"
# Quiet: depending on where the space runs out, the plan may be printed
# before the error, and only the error is checked.
enospc run -q prune --vm "$IVM" --keep-last 1
[ -d "$REPO/$IVM/20260701T000000Z" ] || fail "the failed prune removed a point"
intact "prune"
# With space again, the same prune succeeds and the kept point is intact.
rm -f "$SMALL/fill" "$SMALL/fill2"
run -q prune --vm "$IVM" --keep-last 1
rm -f "$WORK/sums/${IVM}_20260701T000000Z_${IVDI}"
intact "prune after space was freed"
echo PASS
