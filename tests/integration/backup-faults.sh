#!/usr/bin/env bash
# Faults during backup: each gives a clear one-line error (or the documented
# full fallback), leaves no partial point and no snapshot on the server.
source "$(dirname "$0")/../functions.sh"
requires_fuse
start_sim

head -c 8M /dev/urandom >"$WORK/d1.img"
create_vm demo --disk "$WORK/d1.img" --cd

echo "wrong password"
echo wrong >"$WORK/badpw"
chmod 600 "$WORK/badpw"
expect_error "login failed" "$CBT_BACKUP" --server "$SIM_URL" --ca-cert "$SIM_CA" \
  --password-file "$WORK/badpw" --repo "$WORK/repo" backup --vm "$VM"
echo "no password at all"
expect_error "password-file" env -u CBT_PASSWORD "$CBT_BACKUP" --server "$SIM_URL" \
  --ca-cert "$SIM_CA" --repo "$WORK/repo" backup --vm "$VM" </dev/null
echo "untrusted HTTPS certificate"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/other.key" -out "$WORK/other.pem" \
  -days 1 -subj /CN=localhost >/dev/null 2>&1
expect_error "ca-cert" "$CBT_BACKUP" --server "$SIM_URL" --ca-cert "$WORK/other.pem" \
  --password-file "$WORK/pw" --repo "$WORK/repo" backup --vm "$VM"
echo "unknown VM"
expect_error "no VM" cbt backup --vm 00000000-0000-4000-8000-000000000000
expect_error "no VM named" cbt backup --vm no-such-vm
echo "no NBD network"
with_fault no_nbd expect_error "nbd" cbt backup --vm "$VM"
no_leftovers "no NBD network"
[ "$(points)" = 0 ] || fail "a point was committed by a failed backup"

echo "NBD server presenting another certificate than get_nbd_info hands out"
with_fault nbd_wrong_cert expect_error "certificate" cbt backup --vm "$VM"
no_leftovers "wrong NBD certificate"
[ "$(points)" = 0 ] || fail "a point was committed by a failed backup"

echo "first backup"
cbt -q backup --vm "$VM"
"$SIMCTL" copy-disk "$V1" "$WORK/p1.img" >/dev/null

echo "non-master: HOST_IS_SLAVE is followed to the master"
"$SIMCTL" fault host_is_slave localhost >/dev/null
master_url=${SIM_URL/localhost/127.0.0.1}
"$SIMCTL" write-pattern "$V1" 0 65536 9 >/dev/null
sleep 1
"$CBT_BACKUP" --server "$master_url" --ca-cert "$SIM_CA" --password-file "$WORK/pw" \
  --repo "$WORK/repo" -q backup --vm "$VM" || fail "HOST_IS_SLAVE was not followed"
"$SIMCTL" fault host_is_slave off >/dev/null

echo "NBD read errors: retried, then a clean failure"
"$SIMCTL" write-pattern "$V1" 65536 65536 10 >/dev/null
before=$(points)
sleep 1
with_fault nbd_read_errors expect_error "NBD read" cbt backup --vm "$VM"
[ "$(points)" = "$before" ] || fail "a failed backup committed a point"
no_leftovers "NBD read errors"

echo "dropped NBD connections are retried"
"$SIMCTL" fault nbd_drop_after 100000 --times 2 >/dev/null
sleep 1
cbt backup --vm "$VM" --full --json >"$WORK/drop.json" || fail "backup did not survive dropped connections"
"$SIMCTL" fault nbd_drop_after off >/dev/null
"$SIMCTL" copy-disk "$V1" "$WORK/pdrop.img" >/dev/null
no_leftovers "dropped connections"

echo "CBT lost on the server: full backup with a reason"
"$SIMCTL" cbt-lost "$V1" >/dev/null
"$SIMCTL" write-pattern "$V1" 131072 65536 11 >/dev/null
sleep 1
cbt backup --vm "$VM" --json >"$WORK/lost.json"
json_get "$WORK/lost.json" disks.0.mode | grep -qx full || fail "CBT loss did not fall back to full"
json_get "$WORK/lost.json" disks.0.reason | grep -qi cbt || fail "no reason given: $(cat "$WORK/lost.json")"
"$SIMCTL" copy-disk "$V1" "$WORK/plost.img" >/dev/null
no_leftovers "CBT lost"
echo "  reason: $(json_get "$WORK/lost.json" disks.0.reason)"
# CBT is enabled again by that backup, so the next one is incremental.
"$SIMCTL" write-pattern "$V1" 196608 65536 12 >/dev/null
sleep 1
cbt backup --vm "$VM" --json >"$WORK/after.json"
json_get "$WORK/after.json" disks.0.mode | grep -qx incremental || fail "not incremental after re-enabling CBT"
"$SIMCTL" copy-disk "$V1" "$WORK/pafter.img" >/dev/null

echo "SR without CBT: full every time, with a message"
head -c 1M /dev/urandom >"$WORK/n.img"
"$SIMCTL" create-vm nocbt --disk "$WORK/n.img@nocbt" >"$WORK/vm2.json"
cbt backup --vm nocbt --json >/dev/null
sleep 1
cbt backup --vm nocbt --json >"$WORK/nocbt.json"
json_get "$WORK/nocbt.json" disks.0.mode | grep -qx full || fail "SR without CBT was not full"

echo "kill -9 in the middle of a backup"
"$SIMCTL" fault nbd_delay_ms 3000 >/dev/null
"$SIMCTL" write-pattern "$V1" 0 $((4 << 20)) 13 >/dev/null
sleep 1
mkdir -p "$WORK/tmp"
TMPDIR=$WORK/tmp cbt_bg "$WORK/repo" /dev/null -q backup --vm "$VM"
pid=$BG
wait_nbd_active $pid
# The CA directory libnbd reads is there only while connections are being
# opened: a backup killed while it reads leaves nothing in TMPDIR.
for _ in $(seq 100); do
  [ -z "$(ls -A "$WORK/tmp")" ] && break
  sleep 0.1
done
[ -z "$(ls -A "$WORK/tmp")" ] || fail "the NBD CA directory stays while the backup reads: $(ls -A "$WORK/tmp")"
kill -0 $pid 2>/dev/null || fail "the backup ended before it could be killed"
# Saved first: grep -q stops reading at the first match, and the writer
# of a long list then fails with a broken pipe (pipefail).
"$SIMCTL" vms >"$WORK/vms-now.json"
grep -q '"is_a_snapshot": true' "$WORK/vms-now.json" || fail "no snapshot to leave behind"
kill -9 $pid
wait $pid 2>/dev/null || true
[ -z "$(ls -A "$WORK/tmp")" ] || fail "a killed backup left $(ls -A "$WORK/tmp") in TMPDIR"
"$SIMCTL" fault nbd_delay_ms 0 >/dev/null
before=$(points)
sleep 1
cbt backup --vm "$VM" --json >"$WORK/resume.json" || fail "backup after a kill failed"
json_get "$WORK/resume.json" notes.0 | grep -q "leftover" || fail "leftover snapshot not reported"
[ "$(points)" = $((before + 1)) ] || fail "expected one new point"
"$SIMCTL" copy-disk "$V1" "$WORK/presume.img" >/dev/null
no_leftovers "after kill"

# Every committed point still reads back right.
"$CBT_BACKUP" verify --repo "$WORK/repo" -q
mount_cbtfs "$WORK/repo" "$WORK/mnt"
cmp "$WORK/mnt/$VM/latest/$V1.raw" "$WORK/presume.img" || fail "point after the kill differs"
p=$(json_get "$WORK/lost.json" point)
cmp "$WORK/mnt/$VM/$p/$V1.raw" "$WORK/plost.img" || fail "full fallback point differs"
p=$(json_get "$WORK/after.json" point)
cmp "$WORK/mnt/$VM/$p/$V1.raw" "$WORK/pafter.img" || fail "incremental after fallback differs"
p=$(json_get "$WORK/drop.json" point)
cmp "$WORK/mnt/$VM/$p/$V1.raw" "$WORK/pdrop.img" || fail "point read through dropped connections differs"
echo PASS
