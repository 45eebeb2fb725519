#!/usr/bin/env bash
# LABELS: asan
# Partitions and LVM2 volumes as files in cbtfs, with the real tools as the
# oracle: a GPT disk (ext4, xfs, and an LVM PV whose VG is named like one on
# the host, with an LV of two segments) and an MBR disk with logical
# partitions.  Every partition and LV file must equal the bytes the tools say
# it covers, loop-mount on its own, and give its files back; damaged tables
# and metadata leave the .raw file and a note; `cbt-backup mount` does the
# whole round and `cbt-backup umount` undoes it.
source "$(dirname "$0")/../functions.sh"
requires_fuse
requires_loop
requires sgdisk sfdisk pvcreate vgcreate lvcreate lvextend lvs pvs mkfs.ext4 mkfs.xfs blkid

SRC=$WORK/legacy
REPO=$WORK/repo
MNT=$WORK/mnt
VM=$(new_uuid)
DG=$(new_uuid)  # the GPT disk
DM=$(new_uuid)  # the MBR disk
TS=20260801T000000Z
export LVM_SUPPRESS_FD_WARNINGS=1
lvm_() { "$@" --config "$LVMC" 2>&1 | grep -v -e WARNING -e "^ *$" >&2 || true; }

# parts IMAGE: "number start sectors" per partition, as sfdisk reads them.
parts() {
  sfdisk -J "$1" | python3 -c '
import json, re, sys
for p in json.load(sys.stdin)["partitiontable"]["partitions"]:
    print(re.search(r"(\d+)$", p["node"]).group(1), p["start"], p["size"])'
}
# loopdev IMAGE OFFSET SIZE: a loop device over a slice (all of them are
# detached at exit; this runs in a subshell, so it cannot register cleanup).
loopdev() { losetup -f --show -o "$2" --sizelimit "$3" "$1"; }
cleanup_fn "losetup -a | grep -F '$WORK/' | cut -d: -f1 | xargs -r -n1 losetup -d"
# fill_fs DEVICE TAG: mounts a new filesystem and writes a file naming TAG.
fill_fs() {
  mkdir -p "$WORK/m"
  mount "$1" "$WORK/m"
  echo "file of $2" >"$WORK/m/hello.txt"
  head -c 300k /dev/urandom >"$WORK/m/blob"
  sha256sum <"$WORK/m/blob" | cut -d' ' -f1 >"$WORK/$2.blob.sum"
  umount "$WORK/m"
}

# --- the GPT disk --------------------------------------------------------------
truncate -s 420M "$WORK/gpt.img"
sgdisk -n1:2048:+24M -c1:root -t1:8300 -n2:0:+304M -c2:"data vol" -t2:8300 \
  -n3:0:0 -c3:lvm -t3:8e00 "$WORK/gpt.img" >/dev/null
declare -A START SECTORS
while read -r nr start sectors; do START[g$nr]=$start; SECTORS[g$nr]=$sectors; done \
  < <(parts "$WORK/gpt.img")
d=$(loopdev "$WORK/gpt.img" $((START[g1] * 512)) $((SECTORS[g1] * 512)))
mkfs.ext4 -q "$d"; fill_fs "$d" g1
d=$(loopdev "$WORK/gpt.img" $((START[g2] * 512)) $((SECTORS[g2] * 512)))
mkfs.xfs -q "$d"; fill_fs "$d" g2

# The host has a VG of the same name as the guest's (nothing is activated,
# so the two never meet).
truncate -s 16M "$WORK/host-pv.img"
hostpv=$(loopdev "$WORK/host-pv.img" 0 $((16 << 20)))
LVMC='devices { use_devicesfile = 0 filter = [ "a|^'"$hostpv"'$|", "r|.*|" ] } activation { udev_sync = 0 udev_rules = 0 }'
lvm_ pvcreate -y "$hostpv"
lvm_ vgcreate vgsys "$hostpv"
lvm_ lvcreate --driverloaded n -an -Zn -l 1 -n hostlv vgsys
host_vg_before=$(vgs --config "$LVMC" --noheadings -o vg_name,lv_count,vg_uuid 2>/dev/null | sort)

# The guest's PV on partition 3: a copy of the partition attached alone, so
# the host's vgsys and the guest's never share a view.
pvpart=$(loopdev "$WORK/gpt.img" $((START[g3] * 512)) $((SECTORS[g3] * 512)))
# A second PV of the same VG on a whole disk without a partition table.
DL=$(new_uuid)
truncate -s 64M "$WORK/lvmdisk.img"
pvdisk=$(loopdev "$WORK/lvmdisk.img" 0 $((64 << 20)))
C2='devices { use_devicesfile = 0 filter = [ "a|^'"$pvpart"'$|", "a|^'"$pvdisk"'$|", "r|.*|" ] } activation { udev_sync = 0 udev_rules = 0 }'
gl() { "$@" --config "$C2" 2>&1 | grep -v -e WARNING -e "^ *$" >&2 || true; }
gl pvcreate -y "$pvpart"
gl vgcreate -s 4M vgsys "$pvpart"
gl lvcreate --driverloaded n -an -Zn -l 4 -n root vgsys
gl lvcreate --driverloaded n -an -Zn -l 3 -n swap vgsys
gl lvextend --driverloaded n -l +5 vgsys/root
gl pvcreate -y "$pvdisk"
gl vgextend vgsys "$pvdisk"
# A linear LV on the whole-disk PV, and a striped one across both PVs (a
# kind that is listed as unsupported, never served).
gl lvcreate --driverloaded n -an -Zn -l 2 -n data vgsys "$pvdisk"
gl lvcreate --driverloaded n -an -Zn -i 2 -l 2 -n striped vgsys
lvs --config "$C2" --noheadings -o lv_name,stripes vgsys 2>/dev/null | grep -q "striped *2" ||
  fail "could not make a striped LV"
pe_start=$(pvs --config "$C2" --noheadings --units b --nosuffix -o pe_start "$pvpart" 2>/dev/null | tr -d ' ')
ext_bytes=$((4 << 20))
# lv_segments LV: "first last" PE ranges on the PV, one per line.
lv_segments() {
  lvs --config "$C2" --noheadings -o seg_pe_ranges "vgsys/$1" 2>/dev/null |
    sed 's/.*://; s/-/ /'
}
# lv_segments_dev LV: "device first last" per segment.
lv_segments_dev() {
  lvs --config "$C2" --noheadings -o seg_pe_ranges "vgsys/$1" 2>/dev/null |
    sed 's/^ *//; s/:/ /; s/-/ /'
}
[ "$(lv_segments root | wc -l)" = 2 ] || fail "the LV root should have two segments"
# Write an ext4 filesystem into LV root through its segments.
root_size=$((9 * ext_bytes))
truncate -s $root_size "$WORK/root.fs"
mkfs.ext4 -q -F "$WORK/root.fs"
d=$(loopdev "$WORK/root.fs" 0 $root_size)
fill_fs "$d" lvroot
pos=0
while read -r first last; do
  n=$((last - first + 1))
  dd if="$WORK/root.fs" of="$pvpart" bs=1M skip=$((pos * 4)) seek=$(((pe_start >> 20) + first * 4)) \
    count=$((n * 4)) conv=notrunc status=none
  pos=$((pos + n))
done < <(lv_segments root)
sync

# --- the MBR disk ----------------------------------------------------------------
truncate -s 96M "$WORK/mbr.img"
sfdisk -q "$WORK/mbr.img" <<'EOF'
label: dos
start=2048, size=20M, type=83
start=43008, type=5
start=45056, size=16M, type=83
start=81920, size=16M, type=83
EOF
while read -r nr start sectors; do START[m$nr]=$start; SECTORS[m$nr]=$sectors; done \
  < <(parts "$WORK/mbr.img")
for nr in 1 5 6; do
  d=$(loopdev "$WORK/mbr.img" $((START[m$nr] * 512)) $((SECTORS[m$nr] * 512)))
  mkfs.ext4 -q "$d"
  fill_fs "$d" m$nr
done

# --- a disk without a partition table: a filesystem on the whole disk --------------
DP=$(new_uuid)
truncate -s 16M "$WORK/plain.img"
mkfs.ext4 -q -F "$WORK/plain.img"
d=$(loopdev "$WORK/plain.img" 0 $((16 << 20)))
fill_fs "$d" plain

# --- import and check ----------------------------------------------------------
save_legacy_point "$SRC" "$VM" $TS "$WORK/gpt.img" "$DG" "$WORK/mbr.img" "$DM" "$WORK/plain.img" "$DP" \
  "$WORK/lvmdisk.img" "$DL"
"$CBT_BACKUP" import-legacy "$SRC" --repo "$REPO" -q
mount_cbtfs "$REPO" "$MNT"
P=$MNT/$VM/$TS
ls "$P" >"$WORK/listing"

# check_slice FILE IMAGE OFFSET LENGTH
check_slice() {
  [ "$(stat -c %s "$1")" = "$4" ] || fail "$1: size $(stat -c %s "$1"), want $4"
  cmp <(dd if="$2" bs=512 skip=$(($3 / 512)) count=$(($4 / 512)) status=none) "$1" ||
    fail "$1 differs from the bytes the partition table gives"
}
check_slice "$P/$DG.part1-root.raw" "$WORK/gpt.img" $((START[g1] * 512)) $((SECTORS[g1] * 512))
check_slice "$P/$DG.part2-data_vol.raw" "$WORK/gpt.img" $((START[g2] * 512)) $((SECTORS[g2] * 512))
check_slice "$P/$DG.part3-lvm.raw" "$WORK/gpt.img" $((START[g3] * 512)) $((SECTORS[g3] * 512))
for nr in 1 5 6; do
  check_slice "$P/$DM.part$nr.raw" "$WORK/mbr.img" $((START[m$nr] * 512)) $((SECTORS[m$nr] * 512))
done
grep -q "$DM.part2" "$WORK/listing" && fail "the extended partition container is shown as a file"
grep -q "$DP.part" "$WORK/listing" && fail "a disk without a partition table shows partitions"
# LVs: the concatenation of the segments lvs reports.
for lv in root swap data; do
  : >"$WORK/$lv.expect"
  while read -r dev first last; do
    if [ "$dev" = "$pvdisk" ]; then img=$WORK/lvmdisk.img base=0; else img=$WORK/gpt.img base=$((START[g3] * 512)); fi
    dd if="$img" bs=1M skip=$(((base + pe_start) / 1048576 + first * 4)) \
      count=$(((last - first + 1) * 4)) status=none >>"$WORK/$lv.expect"
  done < <(lv_segments_dev $lv)
  cmp "$WORK/$lv.expect" "$P/lvm/vgsys/$lv.raw" || fail "LV $lv differs from its segments: $(cat "$P/point.txt")"
done

# Each file loop-mounts on its own and gives its files back.
check_mount() {  # FILE TAG [options]
  local dir=$WORK/lm-$2
  mkdir -p "$dir"
  mount -o "ro,loop${3:+,$3}" "$1" "$dir" || fail "cannot loop-mount $1"
  grep -qx "file of $2" "$dir/hello.txt" || fail "$2: wrong hello.txt"
  [ "$(sha256sum <"$dir/blob" | cut -d' ' -f1)" = "$(cat "$WORK/$2.blob.sum")" ] || fail "$2: blob differs"
  umount "$dir"
}
check_mount "$P/$DG.part1-root.raw" g1 noload
check_mount "$P/$DG.part2-data_vol.raw" g2 norecovery
check_mount "$P/lvm/vgsys/root.raw" lvroot noload
ls "$P/lvm" | grep -qx vgsys || fail "ls of lvm/ does not show the VG"
ls "$P/lvm/vgsys" | grep -qx root.raw || fail "ls of lvm/vgsys/ does not show the LV"
for nr in 1 5 6; do check_mount "$P/$DM.part$nr.raw" m$nr noload; done
grep -q "LVM2 linear volume vgsys/root, 2 segment(s)" "$P/point.txt" || fail "point.txt lacks the LV"
grep -q "LV vgsys/striped not shown (unsupported: segment type striped with 2 stripes)" "$P/point.txt" ||
  fail "point.txt does not list the striped LV as unsupported: $(cat "$P/point.txt")"
[ -e "$P/lvm/vgsys/striped.raw" ] && fail "a striped LV is served"
grep -q "$DL.part" "$WORK/listing" && fail "a whole-disk PV shows partitions"
# The host's VG is untouched.
[ "$(vgs --config "$LVMC" --noheadings -o vg_name,lv_count,vg_uuid 2>/dev/null | sort)" = "$host_vg_before" ] ||
  fail "the host's volume groups changed"

# --- the whole round for a person ------------------------------------------------
out=$("$CBT_BACKUP" --repo "$REPO" mount --vm "$VM" --point $TS 2>"$WORK/mount.err") ||
  fail "mount: $(cat "$WORK/mount.err")"
dir=$(echo "$out" | tail -n 1)
cleanup_fn "'$CBT_BACKUP' umount '$dir'"
[ -d "$dir" ] || fail "mount printed no directory: $out"
for name in "$DG.part1-root" "$DG.part2-data_vol" "lvm-vgsys-root" "$DM.part5" "$DP"; do
  grep -q "^file of" "$dir/$name/hello.txt" || fail "mount: $name not mounted in $dir ($(ls "$dir"); $(cat "$WORK/mount.err"))"
done
"$CBT_BACKUP" --repo "$REPO" umount "$dir" || fail "umount failed"
[ -e "$dir" ] && fail "umount left $dir"
grep -q " $dir" /proc/mounts && fail "umount left mounts"

# --- damage: the .raw stays, the rest goes with a note -----------------------------
TS2=20260802T000000Z
printf 'XXXXXXXX' | dd of="$WORK/gpt.img" bs=1 seek=512 conv=notrunc status=none  # primary GPT header
printf '\x00\x00' | dd of="$WORK/mbr.img" bs=1 seek=$((START[m2] * 512 + 510)) conv=notrunc status=none  # first EBR signature
# LVM metadata text: garble the start of every copy in the metadata ring.
python3 - "$WORK/gpt.img" <<'EOF2'
import sys
with open(sys.argv[1], "r+b") as f:
    data = f.read()
    pos = data.find(b"vgsys {")
    while pos >= 0:
        f.seek(pos)
        f.write(b"}}}}")
        pos = data.find(b"vgsys {", pos + 1)
EOF2
save_legacy_point "$SRC" "$VM" $TS2 "$WORK/gpt.img" "$DG" "$WORK/mbr.img" "$DM"
"$CBT_BACKUP" import-legacy "$SRC" --repo "$REPO" -q
sleep 1.2
P2=$MNT/$VM/$TS2
ls "$P2" >"$WORK/listing2"
grep -q "$DG.raw" "$WORK/listing2" || fail "the damaged GPT disk's .raw is gone"
grep -q "$DG.part1-root.raw" "$WORK/listing2" || fail "the backup GPT was not used"
grep -q "used the backup GPT" "$P2/point.txt" || fail "no note about the backup GPT"
grep -q "$DM.part1.raw" "$WORK/listing2" || fail "primary MBR partition lost"
grep -q "$DM.part5" "$WORK/listing2" && fail "a logical partition behind a damaged EBR is shown"
grep -q "extended partition chain damaged" "$P2/point.txt" || fail "no note about the EBR"
grep -qx "lvm" "$WORK/listing2" && fail "LVs of damaged metadata are shown: $(cat "$P2/point.txt")"
grep -q "LVM metadata line" "$P2/point.txt" || fail "no note about the LVM metadata: $(cat "$P2/point.txt")"
# cbtfs still serves the older point and the damaged one's disks.
cmp "$P2/$DG.raw" "$WORK/gpt.img" || fail "damaged disk reads wrong"
check_mount "$P/$DM.part5.raw" m5 noload
echo PASS
