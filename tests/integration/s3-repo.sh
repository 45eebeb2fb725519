#!/usr/bin/env bash
# A repository on a real Ceph RADOS Gateway (s3://): backups from the
# simulator and imports into the bucket, list, verify, export, restore and
# cbtfs (a file pulled out of a loop-mounted point) from a fresh working copy;
# two hosts (two working copies) writing different VMs at once; a lock left
# by a dead host that expires; a delete by one host seen by the other; a
# prune with a reader mounted; damaged and missing objects; the gateway
# stopped in the middle of a backup.
source "$(dirname "$0")/../functions.sh"
source "$(dirname "$0")/../rgw.sh"
requires_rgw
requires_fuse
requires_loop
requires mkfs.ext4 debugfs
start_rgw cbt-test
start_sim
SR=$(json_get "$XAPISIM_READY" sr_cbt)

BUCKET=cbt-test
R=s3://$BUCKET/pool-a
export AWS_MAX_ATTEMPTS=3
export CBT_CACHE_DIR=$WORK/host-a

# objects PREFIX: keys of the bucket under PREFIX, one per line.
objects() {
  s3_curl "$RGW_URL/$BUCKET?list-type=2&prefix=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1")" |
    python3 -c 'import re,sys; print("\n".join(re.findall(r"<Key>([^<]*)</Key>", sys.stdin.read())))'
}

echo "backups from the simulator into the bucket"
truncate -s 64M "$WORK/d1.img"
mkfs.ext4 -q -F "$WORK/d1.img"
mkdir -p "$WORK/fs"
mount -o loop "$WORK/d1.img" "$WORK/fs"
mkdir "$WORK/fs/etc"
echo "the one file we want back" >"$WORK/fs/etc/wanted.conf"
head -c 3M /dev/urandom >"$WORK/fs/blob"
umount "$WORK/fs"
head -c $((3 * 65536 + 1024)) /dev/urandom >"$WORK/d2.img"
create_vm demo --disk "$WORK/d1.img" --disk "$WORK/d2.img" --cd
for n in 0 1 2; do
  if [ $n -gt 0 ]; then
    "$SIMCTL" write-pattern "$V2" $((n * 65536)) 1000 $((n + 50)) >/dev/null
    sleep 1
  fi
  "$SIMCTL" copy-disk "$V1" "$WORK/ref$n-1.img" >/dev/null
  "$SIMCTL" copy-disk "$V2" "$WORK/ref$n-2.img" >/dev/null
  cbt_in "$R" -q backup --vm demo
done
mapfile -t POINTS < <("$CBT_BACKUP" --repo "$R" list --json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["vms"][0]["points"]: print(p["point"])')
[ ${#POINTS[@]} = 3 ] || fail "expected 3 points in the bucket, got ${#POINTS[*]}"
listing=$(objects pool-a/)
grep -q "^pool-a/$VM/${POINTS[2]}/manifest.json$" <<<"$listing" || fail "no manifest object"
grep -q '^pool-a/packs/.*\.pack$' <<<"$listing" || fail "no pack object"
[ -z "$(objects "pool-a/$VM/lock")" ] || fail "the VM's lock object was left behind"
# The working copy holds no pack: they live in the bucket.
[ -z "$(find "$CBT_CACHE_DIR" -name '*.pack')" ] || fail "packs left in the working copy"

echo "another host: list, verify, export, restore, cbtfs"
export CBT_CACHE_DIR=$WORK/host-b
"$CBT_BACKUP" --repo "$R" verify -q
for n in 0 1 2; do
  "$CBT_BACKUP" --repo "$R" export --vm "$VM" --point "${POINTS[$n]}" --disk "$V2" --output "$WORK/e.img" -q
  cmp <(head -c $((3 * 65536 + 1024)) "$WORK/e.img") "$WORK/ref$n-2.img" || fail "export of point $n differs"
done
out=$(cbt_in "$R" restore --vm "$VM" --point "${POINTS[1]}" --sr "$SR" --disk "$V2" --format raw --json)
t=$(echo "$out" | json_get - disks.0.target_vdi)
cmp <(head -c $((3 * 65536 + 1024)) "$("$SIMCTL" vdi "$t" | json_get - path)") "$WORK/ref1-2.img" ||
  fail "restore from the bucket differs"

export CBT_CACHE_DIR=$WORK/host-c
mount_cbtfs "$R" "$WORK/mnt"
cmp "$WORK/mnt/$VM/${POINTS[2]}/$V1.raw" "$WORK/ref2-1.img" || fail "cbtfs read of the bucket differs"
cmp "$WORK/mnt/$VM/${POINTS[0]}/$V2.raw" <(head -c $((3 * 65536 + 1024)) "$WORK/ref0-2.img") ||
  fail "cbtfs read of the base differs"
got=$(debugfs -R "cat /etc/wanted.conf" "$WORK/mnt/$VM/${POINTS[2]}/$V1.raw" 2>/dev/null)
[ "$got" = "the one file we want back" ] || fail "file pulled out of the point: '$got'"
loop_mount_ro "$WORK/mnt/$VM/${POINTS[2]}/$V1.raw" "$WORK/lm"
[ "$(cat "$WORK/lm/etc/wanted.conf")" = "the one file we want back" ] || fail "loop-mounted file differs"
umount "$WORK/lm"

# cbt-backup mount of a point in the bucket: its filesystems, read-only.
out=$(TMPDIR=$WORK "$CBT_BACKUP" --repo "$R" mount --vm "$VM" --point latest)
dir=$(echo "$out" | tail -n 1)
found=$(find "$dir" -name wanted.conf -path '*/etc/*' | head -1)
[ -n "$found" ] && [ "$(cat "$found")" = "the one file we want back" ] ||
  fail "cbt-backup mount of the bucket's point: $(ls -R "$dir" | head)"
"$CBT_BACKUP" --repo "$R" umount "$dir" >/dev/null
[ -e "$dir" ] && fail "umount left $dir"

echo "import-legacy into the bucket"
LVM_=$(new_uuid) LD=$(new_uuid)
head -c $((5 * 65536 + 100)) /dev/urandom >"$WORK/legacy.img"
save_legacy_point "$WORK/legacy" "$LVM_" 20260301T000000Z "$WORK/legacy.img" "$LD"
"$CBT_BACKUP" --repo "$R" import-legacy "$WORK/legacy" -q
"$CBT_BACKUP" --repo "$R" export --vm "$LVM_" --point 20260301T000000Z --disk "$LD" --output "$WORK/e.img" -q
cmp <(head -c $((5 * 65536 + 100)) "$WORK/e.img") "$WORK/legacy.img" || fail "legacy import differs"

echo "two hosts write two VMs into one bucket at once"
VMA=$(new_uuid) VMB=$(new_uuid) DA=$(new_uuid) DB=$(new_uuid)
head -c 24M /dev/urandom >"$WORK/a.img"
head -c 24M /dev/urandom >"$WORK/b.img"
CBT_CACHE_DIR=$WORK/host-a "$CBT_BACKUP" --repo "$R" import-image --vm "$VMA" --disk "$DA" \
  --point 20260401T000000Z "$WORK/a.img" -q &
pa=$!
CBT_CACHE_DIR=$WORK/host-b "$CBT_BACKUP" --repo "$R" import-image --vm "$VMB" --disk "$DB" \
  --point 20260401T000000Z "$WORK/b.img" -q &
pb=$!
wait $pa || fail "host a failed"
wait $pb || fail "host b failed"
"$CBT_BACKUP" --repo "$R" export --vm "$VMA" --point 20260401T000000Z --disk "$DA" --output "$WORK/e.img" -q
cmp "$WORK/e.img" "$WORK/a.img" || fail "VM A differs"
"$CBT_BACKUP" --repo "$R" export --vm "$VMB" --point 20260401T000000Z --disk "$DB" --output "$WORK/e.img" -q
cmp "$WORK/e.img" "$WORK/b.img" || fail "VM B differs"

echo "one lock per VM across hosts; a dead host's lock expires"
# A lock object as a host that died would leave it, with a 3-second lease.
printf '{"host":"dead-host","pid":1,"command":"backup","started":"20260401T000000Z","lease_seconds":3}' >"$WORK/lock"
s3_curl -f -X PUT -T "$WORK/lock" "$RGW_URL/$BUCKET/pool-a/$VMA/lock" -o /dev/null
msg=$(expect_fail "$CBT_BACKUP" --repo "$R" import-image --vm "$VMA" --disk "$DA" \
  --point 20260402T000000Z "$WORK/a.img")
grep -q "dead-host" <<<"$msg" || fail "busy message does not name the holder: $msg"
sleep 5
"$CBT_BACKUP" --repo "$R" import-image --vm "$VMA" --disk "$DA" --point 20260402T000000Z "$WORK/a.img" -q
[ -z "$(objects "pool-a/$VMA/lock")" ] || fail "the lock taken over was left behind"

echo "a delete by one host is seen by another; prune with a reader mounted"
CBT_CACHE_DIR=$WORK/host-a "$CBT_BACKUP" --repo "$R" delete --vm "$VMA" --point 20260401T000000Z -q
"$CBT_BACKUP" --repo "$R" list --json | python3 -c '
import json, sys
vms = {v["vm"]: v for v in json.load(sys.stdin)["vms"]}
assert [p["point"] for p in vms[sys.argv[1]]["points"]] == ["20260402T000000Z"], vms[sys.argv[1]]
' "$VMA"
[ -z "$(objects "pool-a/$VMA/20260401T000000Z/")" ] || fail "objects of the deleted point remain"
"$CBT_BACKUP" --repo "$R" prune --vm "$VM" --keep-last 1 -q
cmp "$WORK/mnt/$VM/${POINTS[2]}/$V1.raw" "$WORK/ref2-1.img" || fail "mounted point changed by prune"
umount_cbtfs "$WORK/mnt"
"$CBT_BACKUP" --repo "$R" export --vm "$VM" --point "${POINTS[2]}" --disk "$V2" --output "$WORK/e.img" -q
cmp <(head -c $((3 * 65536 + 1024)) "$WORK/e.img") "$WORK/ref2-2.img" || fail "kept point differs after prune"
"$CBT_BACKUP" --repo "$R" verify -q

echo "garbage collection on the store, and its exclusion of writers of any host"
packs_before=$(objects pool-a/packs/ | wc -l)
"$CBT_BACKUP" --repo "$R" delete --vm "$VMB" --point 20260401T000000Z -q
packs_after=$(objects pool-a/packs/ | wc -l)
[ "$packs_after" -lt "$packs_before" ] || fail "gc removed no pack ($packs_before -> $packs_after)"
"$CBT_BACKUP" --repo "$R" verify -q
# A writer registered by another host keeps gc away...
printf '{"host":"host-z","pid":7,"command":"backup","started":"20260401T000000Z","lease_seconds":120}' >"$WORK/writer"
s3_curl -f -X PUT -T "$WORK/writer" "$RGW_URL/$BUCKET/pool-a/locks/writers/00000000000000aa" -o /dev/null
expect_error "host-z" "$CBT_BACKUP" --repo "$R" gc
s3_curl -f -X DELETE "$RGW_URL/$BUCKET/pool-a/locks/writers/00000000000000aa" -o /dev/null
"$CBT_BACKUP" --repo "$R" gc -q
# ...and a collection holding locks/gc (here a dead one, 3-second lease)
# makes a writer wait until it is gone.
printf '{"host":"host-z","pid":8,"command":"gc","started":"20260401T000000Z","lease_seconds":3}' >"$WORK/gclock"
s3_curl -f -X PUT -T "$WORK/gclock" "$RGW_URL/$BUCKET/pool-a/locks/gc" -o /dev/null
start=$(date +%s)
"$CBT_BACKUP" --repo "$R" import-image --vm "$VMB" --disk "$DB" --point 20260403T000000Z "$WORK/b.img" -q
[ $(($(date +%s) - start)) -ge 2 ] || fail "the writer did not wait for the collection"
[ -z "$(objects pool-a/locks/writers/)" ] || fail "a writer registration was left behind"

echo "damaged and missing objects"
mapfile -t PACKS < <(objects pool-a/packs/)
for i in "${!PACKS[@]}"; do
  s3_curl -f "$RGW_URL/$BUCKET/${PACKS[$i]}" -o "$WORK/pack$i.bak"
  python3 - "$WORK/pack$i.bak" "$WORK/pack.bad" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
for i in range(8192, len(b) - 8192, 65536):
    b[i] ^= 0xff
open(sys.argv[2], "wb").write(b)
PY
  s3_curl -f -X PUT -T "$WORK/pack.bad" "$RGW_URL/$BUCKET/${PACKS[$i]}" -o /dev/null
done
msg=$(expect_fail "$CBT_BACKUP" --repo "$R" verify)
grep -q "damaged" <<<"$msg" || fail "verify missed the damaged packs: $msg"
expect_error "corrupted block" "$CBT_BACKUP" --repo "$R" export --vm "$VMA" \
  --point 20260402T000000Z --disk "$DA" --output "$WORK/e.img"
s3_curl -f -X DELETE "$RGW_URL/$BUCKET/${PACKS[0]}" -o /dev/null
msg=$(expect_fail "$CBT_BACKUP" --repo "$R" verify)
grep -q "missing" <<<"$msg" || fail "verify missed the missing pack: $msg"
for i in "${!PACKS[@]}"; do
  s3_curl -f -X PUT -T "$WORK/pack$i.bak" "$RGW_URL/$BUCKET/${PACKS[$i]}" -o /dev/null
done
"$CBT_BACKUP" --repo "$R" verify -q
msg=$(expect_fail "$CBT_BACKUP" --repo "s3://$BUCKET/nothing-here" list)
grep -q "not a cbt-backup repository" <<<"$msg" || fail "missing repository: $msg"
msg=$(AWS_SECRET_ACCESS_KEY=wrong expect_fail "$CBT_BACKUP" --repo "$R" list)
grep -q "SignatureDoesNotMatch\|refused" <<<"$msg" || fail "bad key: $msg"
msg=$(expect_fail env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY HOME=$WORK "$CBT_BACKUP" --repo "$R" list)
grep -q "no S3 credentials" <<<"$msg" || fail "no credentials: $msg"

echo "credentials from a credentials file, as the AWS command line reads them"
mkdir -p "$WORK/home/.aws"
printf '[backup]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
  "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$WORK/home/.aws/credentials"
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY HOME=$WORK/home AWS_PROFILE=backup \
  "$CBT_BACKUP" --repo "$R" list -q >/dev/null || fail "credentials file not read"

echo "the gateway stops in the middle of a backup"
before=$("$CBT_BACKUP" --repo "$R" list --json | python3 -c 'import json,sys; print(sum(len(v["points"]) for v in json.load(sys.stdin)["vms"]))')
"$SIMCTL" fault nbd_delay_ms 3000 >/dev/null
"$SIMCTL" write-pattern "$V1" 0 $((8 << 20)) 9 >/dev/null
sleep 1
# A short lease: the dying backup cannot remove its lock object.
CBT_S3_LEASE_SECONDS=3 cbt_bg "$R" "$WORK/bg.out" backup --vm demo
wait_nbd_active "$BG"
kill -9 "$(cat "$WORK/ceph/run/client.rgw.a.pid")"
rc=0
wait "$BG" || rc=$?
[ $rc != 0 ] || fail "the backup succeeded without its object store"
grep -q "cbt-backup" "$WORK/bg.err" || fail "no error message: $(cat "$WORK/bg.err")"
"$SIMCTL" fault nbd_delay_ms 0 >/dev/null
radosgw -n client.rgw.a
for _ in $(seq 100); do curl -s -o /dev/null "$RGW_URL/" && break; sleep 0.1; done
after=$("$CBT_BACKUP" --repo "$R" list --json | python3 -c 'import json,sys; print(sum(len(v["points"]) for v in json.load(sys.stdin)["vms"]))')
[ "$before" = "$after" ] || fail "a failed backup changed the points ($before -> $after)"
"$CBT_BACKUP" --repo "$R" verify -q
sleep 4  # the lease of the lock the failed backup left
cbt_in "$R" -q backup --vm demo
"$CBT_BACKUP" --repo "$R" verify -q
echo "s3-repo: ok"
