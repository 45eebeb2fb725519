#!/usr/bin/env bash
# Content keys: a new repository keys its blocks with BLAKE3 (checked against
# b3sum), one whose config predates the content_key field keeps SHA-256 and
# still finds its blocks again, `compression` keeps whichever a repository
# has, and an unknown key is refused with a one-line error.
source "$(dirname "$0")/../functions.sh"
requires python3 b3sum sha256sum

run() { "$CBT_BACKUP" --repo "$1" "${@:2}"; }
VM1=$(new_uuid)
VM2=$(new_uuid)
VDI=$(new_uuid)
head -c $((6 * 65536)) /dev/urandom >"$WORK/disk.img"

# keys REPO: the keys of every pack table of REPO, one hex key a line, sorted.
keys() {
  python3 - "$1" <<'PY'
import glob, struct, sys
out = []
for p in glob.glob(sys.argv[1] + "/packs/*/*.pack"):
    b = open(p, "rb").read()
    t = b[-64:]
    assert t[:8] == b"CBTPEND\0", p
    count, off = struct.unpack_from("<QQ", t, 8)
    out += [b[off + 64 * i: off + 64 * i + 32].hex() for i in range(count)]
print("\n".join(sorted(out)))
PY
}
# want TOOL: the TOOL hash of each 64 KiB block of the image, sorted.
want() {
  local i
  for i in 0 1 2 3 4 5; do
    dd if="$WORK/disk.img" bs=64k skip=$i count=1 status=none | "$1" | cut -c1-64
  done | sort
}

# A new repository: BLAKE3, as b3sum computes it.
R=$WORK/new
run "$R" -q import-image --vm "$VM1" --disk "$VDI" "$WORK/disk.img"
grep -q '"content_key": "blake3"' "$R/config.json" || fail "a new repository does not say blake3"
[ "$(keys "$R")" = "$(want b3sum)" ] || fail "pack keys are not the blocks' BLAKE3 hashes"
run "$R" -q compression 7
grep -q '"content_key": "blake3"' "$R/config.json" || fail "compression changed the content key"

# A repository of format 3 from before the field: SHA-256, kept by every
# later write, the compression command included.
O=$WORK/old
truncate -s 65536 "$WORK/zero.img"
run "$O" -q import-image --vm "$VM1" --disk "$VDI" --point 20260101T000000Z "$WORK/zero.img"
python3 - "$O/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
del c["content_key"]
json.dump(c, open(sys.argv[1], "w"))
PY
run "$O" -q import-image --vm "$VM1" --disk "$VDI" --point 20260102T000000Z "$WORK/disk.img"
[ "$(keys "$O")" = "$(want sha256sum)" ] || fail "pack keys are not the blocks' SHA-256 hashes"
run "$O" -q compression 5
grep -q '"content_key": "sha256"' "$O/config.json" || fail "compression did not keep sha256"
# Another VM with the same disk stores no block: found by their SHA-256.
out=$(run "$O" --json import-image --vm "$VM2" --disk "$VDI" "$WORK/disk.img")
python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["stored_bytes"] < 65536, d' <<<"$out" ||
  fail "a sha256 repository stored its blocks again"
[ "$(keys "$O" | wc -l)" = 6 ] || fail "blocks stored twice"
run "$O" -q verify || fail "verify failed"

# An unknown key: one line on stderr, exit 1, nothing changed.
sed -i 's/"sha256"/"md4"/' "$O/config.json"
before=$(ls -R "$O" | sha256sum)
set +e
err=$(run "$O" list 2>&1 >/dev/null)
rc=$?
set -e
[ "$rc" = 1 ] || fail "an unknown content key exited $rc"
[ "$(printf '%s\n' "$err" | wc -l)" = 1 ] || fail "not one line: $err"
grep -q "content key 'md4' is not supported" <<<"$err" || fail "unclear error: $err"
[ "$(ls -R "$O" | sha256sum)" = "$before" ] || fail "a refused repository was changed"
echo PASS
