#!/usr/bin/env bash
# S3 Object Lock on a real Ceph RADOS Gateway: with `object-lock DAYS`, data
# objects are written retained; delete refuses a retained point and says
# until when, prune keeps it with that reason, and verify flags objects that
# should be locked but are not.
source "$(dirname "$0")/../functions.sh"
source "$(dirname "$0")/../rgw.sh"
requires_rgw
start_rgw cbt-plain
s3_curl -f -X PUT -H "x-amz-bucket-object-lock-enabled: true" "$RGW_URL/cbt-locked" -o /dev/null
R=s3://cbt-locked/r
export CBT_CACHE_DIR=$WORK/cache
VM=$(new_uuid) VDI=$(new_uuid)

import() {
  head -c 4M /dev/urandom >"$WORK/$1.img"
  "$CBT_BACKUP" --repo "$R" import-image --vm "$VM" --disk "$VDI" --point "$1" "$WORK/$1.img" -q
}

import 20260501T000000Z
[ "$("$CBT_BACKUP" --repo "$R" object-lock)" = none ] || fail "a new repository is not locked"
mkdir -p "$WORK/local"
"$CBT_BACKUP" --repo "$WORK/local" import-image --vm "$VM" --disk "$VDI" --point 20260501T000000Z \
  "$WORK/20260501T000000Z.img" -q
expect_error "object store" "$CBT_BACKUP" --repo "$WORK/local" object-lock 1
expect_error "governance or compliance" "$CBT_BACKUP" --repo "$R" object-lock 1 --mode forever
"$CBT_BACKUP" --repo "$R" object-lock 1 -q
[ "$("$CBT_BACKUP" --repo "$R" object-lock)" = "1 day(s), governance mode" ] || fail "setting not kept"
import 20260502T000000Z
import 20260503T000000Z

echo "objects written before the lock are flagged by verify"
msg=$(expect_fail "$CBT_BACKUP" --repo "$R" verify --vm "$VM")
grep -q "20260501T000000Z/manifest.json should be locked" <<<"$msg" || fail "unlocked object not flagged: $msg"
"$CBT_BACKUP" --repo "$R" delete --vm "$VM" --point 20260501T000000Z -q
"$CBT_BACKUP" --repo "$R" verify --vm "$VM" -q

echo "a retained point is not deleted, and prune keeps it"
expect_error "retained by S3 Object Lock until 20" "$CBT_BACKUP" --repo "$R" delete --vm "$VM" \
  --point 20260502T000000Z
out=$("$CBT_BACKUP" --repo "$R" prune --vm "$VM" --keep-last 1 --json)
python3 - "$out" <<'PY'
import json, sys
d = json.loads(sys.argv[1])
vm = d["vms"][0] if "vms" in d else d
kept = {k["point"]: k["reasons"] for k in vm["keep"]}
assert any("Object Lock" in r for r in kept.get("20260502T000000Z", [])), d
assert not vm["remove"], d
PY
[ "$("$CBT_BACKUP" --repo "$R" list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["vms"][0]["points"]))')" = 2 ] ||
  fail "a retained point went"

echo "an object rewritten without retention is flagged"
echo "planted" >"$WORK/meta"
s3_curl -f -X PUT -T "$WORK/meta" "$RGW_URL/cbt-locked/r/$VM/20260503T000000Z/VM_metadata" -o /dev/null
msg=$(expect_fail "$CBT_BACKUP" --repo "$R" verify --vm "$VM")
grep -q "20260503T000000Z/VM_metadata should be locked" <<<"$msg" || fail "rewritten object not flagged: $msg"
echo "s3-object-lock: ok"
