#!/usr/bin/env bash
# cbt-backup copy between a local repository and one on a real Ceph RADOS
# Gateway served over HTTPS (its certificate trusted with --ca-cert), both
# ways: points (layers of deleted points included) compose to
# the same bytes in the target; a second copy sends nothing; a new point
# sends only its new blocks; a VM cloned from another sends no block the
# target holds.
source "$(dirname "$0")/../functions.sh"
source "$(dirname "$0")/../rgw.sh"
requires_rgw
RGW_TLS=1 start_rgw cbt-copy
expect_error "certificate" "$CBT_BACKUP" --repo s3://cbt-copy/mirror list
# From here on the gateway's CA is trusted: --ca-cert, or AWS_CA_BUNDLE.
cbt_ca() { "$CBT_BACKUP" --ca-cert "$RGW_CA" "$@"; }
export CBT_CACHE_DIR=$WORK/cache
L=$WORK/local
S=s3://cbt-copy/mirror
VM=$(new_uuid) VDI=$(new_uuid) CLONE=$(new_uuid)

head -c $((12 << 20)) /dev/urandom >"$WORK/disk.img"
imp() { cbt_ca --repo "$1" import-image --vm "$2" --disk "$VDI" --point "$3" "$WORK/disk.img" -q; }
imp "$L" "$VM" 20260701T000000Z
dd if=/dev/urandom of="$WORK/disk.img" bs=64k seek=10 count=20 conv=notrunc status=none
imp "$L" "$VM" 20260702T000000Z
dd if=/dev/urandom of="$WORK/disk.img" bs=64k seek=100 count=5 conv=notrunc status=none
imp "$L" "$VM" 20260703T000000Z
# The middle point goes: the newest takes its file over as a layer.
"$CBT_BACKUP" --repo "$L" delete --vm "$VM" --point 20260702T000000Z -q

# sums REPO VM: the sha256 of every point's disk, one line each.
sums() {
  local p
  for p in $(cbt_ca --repo "$1" list --vm "$2" --json |
    python3 -c 'import json,sys; [print(p["point"]) for p in json.load(sys.stdin)["vms"][0]["points"]]'); do
    cbt_ca --repo "$1" export --vm "$2" --point "$p" --disk "$VDI" --output - | sha256sum | sed "s/-/$p/"
  done
}
copy() { cbt_ca copy --from "$1" --to "$2" --json "${@:3}"; }
field() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["vms"][0][sys.argv[1]])' "$1"; }

echo "local to S3"
out=$(copy "$L" "$S")
[ "$(echo "$out" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["vms"][0]["copied"]))')" = 2 ] ||
  fail "expected 2 points copied: $out"
[ "$(sums "$L" "$VM")" = "$(sums "$S" "$VM")" ] || fail "the copy on S3 reads differently"
AWS_CA_BUNDLE=$RGW_CA "$CBT_BACKUP" --repo "$S" verify -q
out=$(copy "$L" "$S")
[ "$(echo "$out" | field blocks_sent)" = 0 ] && [ "$(echo "$out" | field present)" = 2 ] ||
  fail "a second copy sent something: $out"

echo "a new point sends only its new blocks"
dd if=/dev/urandom of="$WORK/disk.img" bs=64k seek=150 count=3 conv=notrunc status=none
imp "$L" "$VM" 20260704T000000Z
out=$(copy "$L" "$S")
sent=$(echo "$out" | field blocks_sent)
[ "$sent" -le 3 ] || fail "the new point sent $sent blocks for 3 changed"

echo "a clone sends no block the target holds"
imp "$L" "$CLONE" 20260705T000000Z
out=$(copy "$L" "$S" --vm "$CLONE")
[ "$(echo "$out" | field blocks_sent)" = 0 ] || fail "the clone sent blocks: $out"
[ "$(echo "$out" | field blocks_referred)" -ge 192 ] || fail "the clone referred to too few: $out"

echo "S3 back to a new local repository"
B=$WORK/back
out=$(copy "$S" "$B")
[ "$(sums "$S" "$VM")" = "$(sums "$B" "$VM")" ] || fail "the copy back reads differently"
[ "$(sums "$L" "$CLONE")" = "$(sums "$B" "$CLONE")" ] || fail "the clone copied back differs"
"$CBT_BACKUP" --repo "$B" verify -q
bad=$(find "$B" \( -type d ! -perm 0700 \) -o \( -type f ! -perm 0600 \) | head -1)
[ -z "$bad" ] || fail "wrong mode: $bad"

echo "bad input"
expect_error "required" "$CBT_BACKUP" copy --from "$L"
expect_error "same repository" "$CBT_BACKUP" copy --from "$L" --to "$L"
expect_error "not a cbt-backup repository\|does not exist" "$CBT_BACKUP" copy --from "$WORK/none" --to "$B"
echo "s3-copy: ok"
