#!/usr/bin/env bash
# LABELS: asan
# Damaged repository input: truncated or garbled manifests, data files, lock
# files and journals, unknown format versions, a missing parent point.
# Every command fails with one clear line naming the damaged file (or works
# around a file it does not need), verify lists every problem, and nothing
# in the repository is modified.
source "$(dirname "$0")/../functions.sh"
requires_fuse
requires python3 sha256sum

VM=$(new_uuid)
VDI=$(new_uuid)
ORIG=$WORK/orig
REPO=$WORK/repo
MNT=$WORK/mnt
run() { "$CBT_BACKUP" --repo "$REPO" "$@"; }

head -c $((48 * 65536)) /dev/urandom >"$WORK/disk.img"
P1=20260601T000000Z P2=20260602T000000Z P3=20260603T000000Z
"$CBT_BACKUP" --repo "$ORIG" -q import-image --vm "$VM" --disk "$VDI" --point $P1 "$WORK/disk.img"
dd if=/dev/urandom of="$WORK/disk.img" bs=64k seek=5 count=3 conv=notrunc status=none
"$CBT_BACKUP" --repo "$ORIG" -q import-image --vm "$VM" --disk "$VDI" --point $P2 "$WORK/disk.img"
dd if=/dev/urandom of="$WORK/disk.img" bs=64k seek=30 count=2 conv=notrunc status=none
"$CBT_BACKUP" --repo "$ORIG" -q import-image --vm "$VM" --disk "$VDI" --point $P3 "$WORK/disk.img"

snapshot() { (cd "$REPO" && find . -type f ! -name lock -print0 | sort -z | xargs -0 sha256sum) | sha256sum; }
fresh() { rm -rf "$REPO"; cp -a "$ORIG" "$REPO"; }
# damaged NAME: after the damage was done, records the tree to compare with.
damaged() { CASE=$1; BEFORE=$(snapshot); }
unchanged() { [ "$(snapshot)" = "$BEFORE" ] || fail "$CASE: a command modified the repository"; }
# fails_naming FILE CMD...: CMD fails with one line that names FILE.
fails_naming() {
  local file=$1 msg
  shift
  msg=$(expect_fail "$@")
  [ "$(echo "$msg" | wc -l)" = 1 ] || fail "$CASE: not one line: $msg"
  echo "$msg" | grep -qF "$file" || fail "$CASE: '$*' does not name $file: $msg"
}
# verify_names FILE: verify fails, lists its problems, and names FILE.
verify_names() {
  local out
  out=$(run verify 2>&1) && fail "$CASE: verify passed"
  echo "$out" | grep -qF "$1" || fail "$CASE: verify does not name $1: $out"
  echo "$out" | tail -n 1 | grep -q "verify found" || fail "$CASE: no summary line: $out"
}
export_point() {
  local rc=0
  run export --vm "$VM" --disk "$VDI" --point "$1" --output "$WORK/out.raw" || rc=$?
  rm -f "$WORK/out.raw"
  return $rc
}
M2=$REPO/$VM/$P2/manifest.json
F2=$REPO/$VM/$P2/$VDI.cbd
F3=$REPO/$VM/$P3/$VDI.cbd

# --- manifests -------------------------------------------------------------
for how in truncate garble type version; do
  fresh
  case $how in
    truncate) truncate -s 100 "$M2" ;;
    garble) printf '\x00\xff{{{' | dd of="$M2" bs=1 seek=10 conv=notrunc status=none ;;
    type) python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); m["disks"][0]["virtual_size"]="big"; json.dump(m,open(sys.argv[1],"w"))' "$M2" ;;
    version) python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); m["format_version"]=99; json.dump(m,open(sys.argv[1],"w"))' "$M2" ;;
  esac
  damaged "manifest $how"
  fails_naming "$M2" run list
  fails_naming "$M2" export_point $P3
  verify_names "$M2"
  export_point $P1 >/dev/null 2>&1 || fail "$CASE: an undamaged point cannot be exported"
  if [ "$how" = version ]; then
    out=$(run verify 2>&1) || true
    echo "$out" | grep -q "not supported" || fail "$CASE: version not reported: $out"
  fi
  unchanged
done

# --- data files ------------------------------------------------------------
for how in truncate header index block; do
  fresh
  case $how in
    truncate) truncate -s 5000 "$F2" ;;
    header) printf 'XXXX' | dd of="$F2" bs=1 seek=40 conv=notrunc status=none ;;
    index) size=$(stat -c %s "$F2"); printf 'XXXX' | dd of="$F2" bs=1 seek=$((size - 20)) conv=notrunc status=none ;;
    block) printf 'XXXX' | dd of="$F2" bs=1 seek=5000 conv=notrunc status=none ;;
  esac
  # A second, independent damage: verify must report both.
  printf 'YYYY' | dd of="$F3" bs=1 seek=5000 conv=notrunc status=none
  damaged "data file $how"
  out=$(run verify 2>&1) && fail "$CASE: verify passed"
  echo "$out" | grep -F "$F2" >/dev/null || echo "$out" | grep -F "point $P2" >/dev/null ||
    fail "$CASE: verify does not name the damaged file: $out"
  echo "$out" | grep -q "point $P3 disk $VDI" || fail "$CASE: verify stopped at the first problem: $out"
  if [ "$how" != block ]; then fails_naming "$F2" export_point $P2; else expect_fail export_point $P2 >/dev/null; fi
  export_point $P1 >/dev/null 2>&1 || fail "$CASE: an undamaged point cannot be exported"
  mount_cbtfs "$REPO" "$MNT"
  dd if="$MNT/$VM/$P2/$VDI.raw" of=/dev/null bs=1M status=none 2>/dev/null && fail "$CASE: cbtfs read a damaged point without error"
  dd if="$MNT/$VM/$P1/$VDI.raw" of=/dev/null bs=1M status=none || fail "$CASE: cbtfs cannot read an undamaged point"
  umount_cbtfs "$MNT"
  unchanged
done

# --- a missing parent --------------------------------------------------------
fresh
rm -rf "${REPO:?}/$VM/$P1"
damaged "missing parent"
fails_naming "$M2" export_point $P3
out=$(run verify 2>&1) && fail "$CASE: verify passed"
echo "$out" | grep -q "point $P2 disk $VDI: $M2: disk $VDI needs parent point $P1, which is missing" ||
  fail "$CASE: verify does not explain: $out"
echo "$out" | grep -q "point $P3 disk" || fail "$CASE: verify stopped at the first problem"
unchanged

# --- config ------------------------------------------------------------------
for how in version garble; do
  fresh
  case $how in
    version) echo '{"format": "cbt-backup repository", "version": 7}' >"$REPO/config.json" ;;
    garble) echo 'not json' >"$REPO/config.json" ;;
  esac
  damaged "config $how"
  fails_naming "$REPO/config.json" run list
  fails_naming "$REPO/config.json" run verify
  fails_naming "$REPO/config.json" run import-image --vm "$VM" --disk "$VDI" "$WORK/disk.img"
  fails_naming "$REPO/config.json" run prune --vm "$VM" --keep-last 1
  unchanged
done

# --- lock file and journal -----------------------------------------------------
fresh
head -c 300 /dev/urandom >"$REPO/$VM/lock"
damaged "garbled lock file"
# Nobody holds it: the content is only a name, and the next writer takes over.
run -q import-image --vm "$VM" --disk "$VDI" --point 20260604T000000Z "$WORK/disk.img" ||
  fail "$CASE: a garbled lock file that nobody holds blocks writers"
[ -e "$REPO/$VM/lock" ] && fail "$CASE: lock file left"

fresh
echo '{"version": 1, "delete": [' >"$REPO/$VM/journal.json"
damaged "garbled journal"
fails_naming "$REPO/$VM/journal.json" run delete --vm "$VM" --point $P2
fails_naming "$REPO/$VM/journal.json" run import-image --vm "$VM" --disk "$VDI" "$WORK/disk.img"
# Readers still work (every state of a delete is readable) and warn.
out=$(run list 2>&1) || fail "$CASE: list fails: $out"
echo "$out" | grep -q "journal.json" || fail "$CASE: list does not warn about the journal"
run -q verify 2>/dev/null || fail "$CASE: verify fails on an intact repository with a bad journal"
unchanged
echo PASS
