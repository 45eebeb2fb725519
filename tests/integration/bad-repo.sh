#!/usr/bin/env bash
# LABELS: asan
# Damaged repository input: truncated or garbled manifests, data files, lock
# files and journals, unknown format versions, a missing parent point, and
# the block store of format 3: truncated, missing or garbled packs, garbled
# or planted index files, an index file that is a FIFO, disk files whose
# references are garbled or name no stored block.
# Every command fails with one clear line naming the damaged file (or works
# around a file it does not need), verify lists every problem, nothing in
# the repository is modified by a reading command, and a new point written
# into a damaged repository either fails with one line or reads back right.
source "$(dirname "$0")/../functions.sh"
requires_fuse
requires python3 sha256sum

VM=$(new_uuid)
VDI=$(new_uuid)
ORIG=$WORK/orig
REPO=$WORK/repo
MNT=$WORK/mnt
# A command that hangs (a FIFO read as a file) fails instead of blocking.
run() {
  local rc=0
  timeout -k 5 60 "$CBT_BACKUP" --repo "$REPO" "$@" || rc=$?
  [ $rc != 124 ] || echo "cbt-backup hung: $*" >&2
  return $rc
}

head -c $((48 * 65536)) /dev/urandom >"$WORK/disk.img"
P1=20260601T000000Z P2=20260602T000000Z P3=20260603T000000Z
"$CBT_BACKUP" --repo "$ORIG" -q import-image --vm "$VM" --disk "$VDI" --point $P1 "$WORK/disk.img"
SUM1=$(sha256sum <"$WORK/disk.img")
dd if=/dev/urandom of="$WORK/disk.img" bs=64k seek=5 count=3 conv=notrunc status=none
"$CBT_BACKUP" --repo "$ORIG" -q import-image --vm "$VM" --disk "$VDI" --point $P2 "$WORK/disk.img"
SUM2=$(sha256sum <"$WORK/disk.img")
dd if=/dev/urandom of="$WORK/disk.img" bs=64k seek=30 count=2 conv=notrunc status=none
"$CBT_BACKUP" --repo "$ORIG" -q import-image --vm "$VM" --disk "$VDI" --point $P3 "$WORK/disk.img"
SUM3=$(sha256sum <"$WORK/disk.img")
# The image of a fourth point: P3 with one more block rewritten.
cp "$WORK/disk.img" "$WORK/disk4.img"
dd if=/dev/urandom of="$WORK/disk4.img" bs=64k seek=40 count=1 conv=notrunc status=none
SUM4=$(sha256sum <"$WORK/disk4.img")

# The names, types and sizes of everything in the repository but the lock
# files (writers may create those), and the content of its regular files.
snapshot() {
  (
    cd "$REPO" || exit 1
    find . \( -name lock -o -name store.lock \) -prune -o -printf '%y %s %p\n' | sort
    find . -type f ! -name lock ! -name store.lock -print0 | sort -z | xargs -0 sha256sum
  ) | sha256sum
}
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
# verify_problems_placed: every problem line of the last verify ($out) names
# a VM and a point.
verify_problems_placed() {
  echo "$out" | grep -E '^damaged: VM +point +:' &&
    fail "$CASE: verify reports a problem without its VM and point: $out"
  true
}
# verify_names FILE [OPTION...]: verify (with OPTIONs, such as --vm) fails,
# lists its problems, and names FILE; its output is left in $out.
verify_names() {
  local file=$1
  shift
  out=$(run verify "$@" 2>&1) && fail "$CASE: verify $* passed: $out"
  echo "$out" | grep -qF "$file" || fail "$CASE: verify $* does not name $file: $out"
  echo "$out" | tail -n 1 | grep -q "verify found" || fail "$CASE: no summary line: $out"
  verify_problems_placed
}
export_point() {
  local rc=0
  run export --vm "$VM" --disk "$VDI" --point "$1" --output "$WORK/out.raw" || rc=$?
  rm -f "$WORK/out.raw"
  return $rc
}
M2=$REPO/$VM/$P2/manifest.json
F2=$REPO/$VM/$P2/$VDI.cbd

# store_py COMMAND FILE [ARGS]: rewrites block store references.
#   has-xxh3            succeeds if checksums can be recomputed here
#   move-ref CBD BLOCK DELTA
#                       moves the entry of BLOCK by DELTA bytes in its pack,
#                       checksums recomputed (a reference to no stored block)
#   plant-index IDX     gives each key of an index file the location of the
#                       next key, checksum recomputed (a planted index)
store_py() {
  python3 - "$@" <<'PY'
import ctypes, struct, sys

def xxh3(b):
    lib = ctypes.CDLL("libxxhash.so.0")
    lib.XXH3_64bits.restype = ctypes.c_uint64
    lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return lib.XXH3_64bits(bytes(b), len(b))

cmd = sys.argv[1]
if cmd == "has-xxh3":
    try:
        ok = xxh3(b"") == 0x2D06800538D394C2
    except OSError:
        ok = False
    sys.exit(0 if ok else 1)
path = sys.argv[2]
d = bytearray(open(path, "rb").read())
if cmd == "move-ref":
    block, delta = int(sys.argv[3]), int(sys.argv[4])
    count, = struct.unpack_from("<Q", d, 48)
    for i in range(count):
        e = 4096 + 48 * i
        if struct.unpack_from("<Q", d, e)[0] == block:
            struct.pack_into("<Q", d, e + 24, struct.unpack_from("<Q", d, e + 24)[0] + delta)
            break
    else:
        sys.exit("no entry for block %d" % block)
    struct.pack_into("<Q", d, 72, xxh3(d[4096:4096 + 48 * count]))
    struct.pack_into("<Q", d, 80, xxh3(d[:80]))
    open(path, "wb").write(d)
elif cmd == "plant-index":
    count, = struct.unpack_from("<Q", d, 16)
    assert count > 1, "index too small to plant"
    refs = [bytes(d[32 + 64 * i + 32:32 + 64 * (i + 1)]) for i in range(count)]
    for i in range(count):
        d[32 + 64 * i + 32:32 + 64 * (i + 1)] = refs[(i + 1) % count]
    d[-8:] = struct.pack("<Q", xxh3(d[:-8]))
    open(path, "wb").write(d)
PY
}
# Blocks stored for P2 alone (its second) and for P3 alone (its first),
# each written by its own import into a pack of its own: pack path (in
# $REPO), offset and size in the pack, and disk offset.
read -r K2 OFF2 SIZE2 DOFF2 < <(stored_block "$ORIG" "$ORIG/$VM/$P2/$VDI.cbd" 1)
read -r K3 OFF3 SIZE3 _ < <(stored_block "$ORIG" "$ORIG/$VM/$P3/$VDI.cbd")
K2=$REPO${K2#"$ORIG"} K3=$REPO${K3#"$ORIG"}
PACK2=$(basename "$K2" .pack)
[ "$K2" != "$K3" ] || fail "setup: P2 and P3 share a pack"
# garble_stored FILE OFFSET SIZE TEXT: overwrites the middle of a stored block.
garble_stored() { printf '%s' "$4" | dd of="$1" bs=1 seek=$(($2 + $3 / 2)) conv=notrunc status=none; }

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
# The disk files are version 2 (references into the packs): "block" damages
# the stored bytes of one of P2's blocks in its pack.
for how in truncate header index block; do
  fresh
  case $how in
    truncate) truncate -s $(($(stat -c %s "$F2") - 30)) "$F2" ;;
    header) printf 'XXXX' | dd of="$F2" bs=1 seek=40 conv=notrunc status=none ;;
    index) size=$(stat -c %s "$F2"); printf 'XXXX' | dd of="$F2" bs=1 seek=$((size - 20)) conv=notrunc status=none ;;
    block) garble_stored "$K2" "$OFF2" "$SIZE2" XXXX ;;
  esac
  # A second, independent damage: verify must report both.
  garble_stored "$K3" "$OFF3" "$SIZE3" YYYY
  damaged "data file $how"
  out=$(run verify 2>&1) && fail "$CASE: verify passed"
  echo "$out" | grep -F "$F2" >/dev/null || echo "$out" | grep -F "point $P2" >/dev/null ||
    fail "$CASE: verify does not name the damaged file: $out"
  echo "$out" | grep -q "point $P3 disk $VDI" || fail "$CASE: verify stopped at the first problem: $out"
  verify_problems_placed
  if [ "$how" != block ]; then
    fails_naming "$F2" export_point $P2
  else
    fails_naming "offset $DOFF2" export_point $P2
  fi
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

# --- block store ---------------------------------------------------------------
# point_sum VM POINT: the sha256 of the point's disk as export writes it.
point_sum() { run export --vm "$1" --disk "$VDI" --point "$2" --output - 2>/dev/null | sha256sum; }
# fails_naming_any CMD...: CMD fails with one line naming one of $NAMES.
fails_naming_any() {
  local msg name
  msg=$(expect_fail "$@")
  [ "$(echo "$msg" | wc -l)" = 1 ] || fail "$CASE: not one line: $msg"
  for name in "${NAMES[@]}"; do echo "$msg" | grep -qF -- "$name" && return 0; done
  fail "$CASE: '$*' names none of ${NAMES[*]}: $msg"
}
# writes_right VM POINT: import-image of disk4.img as POINT of VM (the
# damaged VM, or a new one whose blocks dedup against the damaged ones)
# either fails with one line or makes a point that reads back as the image;
# in a new VM, that point also verifies clean (the damage did not spread to
# it through deduplication).
writes_right() {
  local msg rc=0
  msg=$(run -q import-image --vm "$1" --disk "$VDI" --point "$2" "$WORK/disk4.img" 2>&1) || rc=$?
  if [ $rc != 0 ]; then
    [ "$(echo "$msg" | wc -l)" = 1 ] || fail "$CASE: import-image failed with more than one line: $msg"
    echo "  $CASE: import-image into VM ${1:0:8} refused: $msg"
    [ ! -e "$REPO/$1/$2" ] || fail "$CASE: a failed import-image committed its point"
    return 0
  fi
  [ "$(point_sum "$1" "$2")" = "$SUM4" ] ||
    fail "$CASE: import-image into VM ${1:0:8} made a point that reads back wrong"
  if [ "$1" != "$VM" ]; then
    msg=$(run verify --vm "$1" 2>&1) ||
      fail "$CASE: import-image made a new point that does not verify: $msg"
  fi
}
HAVE_XXH3=0
store_py has-xxh3 && HAVE_XXH3=1 || echo "  (libxxhash missing: no planted index or moved reference)"
for how in pack-trailer pack-missing pack-garbled index-garbled index-fifo index-planted \
  cbd-entry cbd-ref; do
  case $how in index-planted | cbd-ref) [ $HAVE_XXH3 = 1 ] || continue ;; esac
  fresh
  # The index file naming most blocks: those of P1.
  IDX=$(ls -S "$REPO"/index/*.idx | head -n 1)
  case $how in
    pack-trailer) truncate -s $(($(stat -c %s "$K2") - 64)) "$K2" ;;
    pack-missing) rm "$K2" ;;
    pack-garbled) garble_stored "$K2" "$OFF2" "$SIZE2" XXXXXXXX ;;
    index-garbled) printf 'XXXX' | dd of="$IDX" bs=1 seek=100 conv=notrunc status=none ;;
    index-fifo) rm "$IDX" && mkfifo -m 600 "$IDX" ;;
    index-planted) store_py plant-index "$IDX" ;;
    # The pack id of P2's second entry.
    cbd-entry) printf '\x01\x02' | dd of="$F2" bs=1 seek=$((4096 + 48 + 16)) conv=notrunc status=none ;;
    cbd-ref) store_py move-ref "$F2" $((DOFF2 / 65536)) 1 ;;
  esac
  damaged "block store $how"
  # list needs no stored block.
  run -q list >/dev/null || fail "$CASE: list fails"
  run -q --json list >/dev/null || fail "$CASE: list --json fails"
  [ "$(point_sum "$VM" $P1)" = "$SUM1" ] || fail "$CASE: P1 (undamaged) reads back wrong"
  NAMES=("$PACK2" "$F2" "offset $DOFF2")
  case $how in
    pack-trailer)
      # The blocks are intact; a reader needs no trailer.  Reading either
      # fails naming the pack or the block, or returns the right bytes.
      [ "$(point_sum "$VM" $P2)" = "$SUM2" ] || fails_naming_any export_point $P2
      [ "$(point_sum "$VM" $P3)" = "$SUM3" ] || fails_naming_any export_point $P3
      verify_names "$PACK2"
      # The references of the points verified are checked with --vm too.
      verify_names "$PACK2" --vm "$VM"
      ;;
    pack-missing | pack-garbled | cbd-ref)
      fails_naming_any export_point $P2
      fails_naming_any export_point $P3
      named=$PACK2
      [ $how = cbd-ref ] && named=$F2
      verify_names "$named"
      verify_names "$named" --vm "$VM"
      mount_cbtfs "$REPO" "$MNT"
      dd if="$MNT/$VM/$P2/$VDI.raw" of=/dev/null bs=1M status=none 2>/dev/null &&
        fail "$CASE: cbtfs read a damaged point without error"
      dd if="$MNT/$VM/$P1/$VDI.raw" of=/dev/null bs=1M status=none ||
        fail "$CASE: cbtfs cannot read an undamaged point"
      umount_cbtfs "$MNT"
      ;;
    index-*)
      # Readers of points never need an index file.
      [ "$(point_sum "$VM" $P2)" = "$SUM2" ] || fail "$CASE: P2 reads back wrong"
      [ "$(point_sum "$VM" $P3)" = "$SUM3" ] || fail "$CASE: P3 reads back wrong"
      # Damage to an index file is reported (a planted one is well-formed).
      [ $how = index-planted ] || verify_names "$IDX"
      ;;
    cbd-entry)
      fails_naming "$F2" export_point $P2
      fails_naming "$F2" export_point $P3
      verify_names "$F2"
      verify_names "$F2" --vm "$VM"
      ;;
  esac
  unchanged
  writes_right "$VM" 20260604T000000Z
  writes_right "$(new_uuid)" 20260604T000000Z
done

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
