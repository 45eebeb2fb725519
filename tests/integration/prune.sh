#!/usr/bin/env bash
# LABELS: asan
# delete and prune on a chain of imported points: every remaining point
# reads back equal to its source through cbtfs (which keeps serving and
# reading during the deletes), verify is clean, the keep policy is restic's,
# space is released, and lock contention gives exit 3 naming the holder.
source "$(dirname "$0")/../functions.sh"
requires_fuse
requires python3 sha256sum

VM=$(new_uuid)
VDI=$(new_uuid)
REPO=$WORK/repo
MNT=$WORK/mnt
run() { "$CBT_BACKUP" --repo "$REPO" "$@"; }

# Ten points of a 32 MiB disk, each rewriting 8 random 64 KiB blocks and
# zeroing one; the points are spread over days so the keep rules differ.
head -c 32M /dev/urandom >"$WORK/disk.img"
points=()
for i in $(seq 0 9); do
  ts=$(date -u -d "2026-03-01 + $((i * 13)) hours" +%Y%m%dT%H%M%SZ)
  if [ "$i" -gt 0 ]; then
    for j in $(seq 8); do
      dd if=/dev/urandom of="$WORK/disk.img" bs=64k seek=$((RANDOM % 512)) count=1 conv=notrunc status=none
    done
    dd if=/dev/zero of="$WORK/disk.img" bs=64k seek=$((RANDOM % 512)) count=1 conv=notrunc status=none
  fi
  run -q import-image --vm "$VM" --disk "$VDI" --point "$ts" "$WORK/disk.img"
  sha256sum <"$WORK/disk.img" | cut -d' ' -f1 >"$WORK/$ts.sum"
  points+=("$ts")
done

mount_cbtfs "$REPO" "$MNT"
check_all() {
  local ts
  for ts in $(ls "$REPO/$VM" | grep -E '^[0-9]{8}T[0-9]{6}Z$'); do
    [ "$(sha256sum <"$MNT/$VM/$ts/$VDI.raw" | cut -d' ' -f1)" = "$(cat "$WORK/$ts.sum")" ] ||
      fail "point $ts reads back different"
  done
  run -q verify || fail "verify found damage"
}
check_all

# A reader that keeps reading the newest point while the deletes run: it
# must never see other bytes.
newest=${points[9]}
(
  while [ ! -e "$WORK/stop" ]; do
    s=$(sha256sum <"$MNT/$VM/$newest/$VDI.raw" | cut -d' ' -f1)
    [ "$s" = "$(cat "$WORK/$newest.sum")" ] || { echo "reader saw wrong data" >"$WORK/reader.err"; exit 1; }
  done
) &
reader=$!
cleanup_fn "touch '$WORK/stop'; wait $reader"
# Keep a descriptor open on a point across the delete of its base.
exec 7<"$MNT/$VM/${points[1]}/$VDI.raw"

# Delete the base, then a middle point.
used_before=$(du -sk "$REPO" | cut -f1)
out=$(run --json delete --vm "$VM" --point "${points[0]}")
echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["deleted"]==[sys.argv[1]] and d["layers_moved"]==1, d' "${points[0]}"
[ -d "$REPO/$VM/${points[0]}" ] && fail "deleted base still there"
run -q delete --vm "$VM" --point "${points[4]}"
# The descriptor opened before still reads the same bytes.
[ "$(sha256sum <&7 | cut -d' ' -f1)" = "$(cat "$WORK/${points[1]}.sum")" ] || fail "open file changed"
exec 7<&-
sleep 1.2  # cbtfs's entry timeout
[ -e "$MNT/$VM/${points[0]}" ] && fail "cbtfs still shows a deleted point"
check_all
grep -q "taken-over" "$MNT/$VM/${points[5]}/point.txt" || fail "point.txt does not show the layer"
# Every disk data file, taken over or not, is 0600.
bad=$(find "$REPO/$VM" -name '*.cbd' ! -perm 0600)
[ -z "$bad" ] || fail "disk files not 0600: $bad"

# Bad input: an unknown point or VM changes nothing.
before=$(ls -R "$REPO/$VM" | sha256sum)
msg=$(expect_fail run delete --vm "$VM" --point 20300101T000000Z)
echo "$msg" | grep -q "no point 20300101T000000Z" || fail "unknown point: $msg"
msg=$(expect_fail run delete --vm "$VM" --point yesterday)
echo "$msg" | grep -q "not a point" || fail "bad point name: $msg"
msg=$(expect_fail run prune --vm "$VM")
echo "$msg" | grep -q "no --keep" || fail "prune without rules: $msg"
[ "$(ls -R "$REPO/$VM" | sha256sum)" = "$before" ] || fail "a failed command changed the repository"

# Lock contention: exit 3 and a message naming the holder; a dead holder's
# lock is taken over.
python3 - "$REPO/$VM/lock" <<'EOF' &
import fcntl, json, os, socket, sys, time
f = open(sys.argv[1], "w")
fcntl.flock(f, fcntl.LOCK_EX)
f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "command": "backup",
                    "started": "20260301T000000Z"}))
f.flush()
open(sys.argv[1] + ".held", "w").close()
time.sleep(60)
EOF
holder=$!
cleanup_fn "kill -9 $holder"
for i in $(seq 100); do [ -e "$REPO/$VM/lock.held" ] && break; sleep 0.05; done
rc=0
msg=$(run prune --vm "$VM" --keep-last 1 2>&1) || rc=$?
[ "$rc" = 3 ] || fail "contention exit code $rc, want 3: $msg"
echo "$msg" | grep -q "pid $holder on $(hostname) (backup, since 20260301T000000Z)" || fail "holder not named: $msg"
[ "$(echo "$msg" | wc -l)" = 1 ] || fail "not one line: $msg"
kill -9 $holder
wait $holder 2>/dev/null || true
rm -f "$REPO/$VM/lock.held"

# Prune: the dry run changes nothing and shows restic's choice.
out=$(run --json prune --vm "$VM" --keep-last 2 --keep-daily 3 --dry-run)
echo "$out" | python3 -c '
import json, sys
d = json.load(sys.stdin)
v = d["vms"][0]
kept = [k["point"] for k in v["keep"]]
pts = sorted([p for p in sys.argv[1:]], reverse=True)
# newest two, plus the newest point of each of the three newest days
want = set(pts[:2])
days = []
for p in pts:
    if p[:8] not in days:
        days.append(p[:8])
        if len(days) <= 3:
            want.add(p)
assert set(kept) == want, (kept, want)
assert d["dry_run"] is True
' $(ls "$REPO/$VM" | grep -E '^[0-9]{8}T')
[ "$(ls -R "$REPO/$VM" | sha256sum)" = "$before" ] || fail "dry run changed the repository"

out=$(run --json prune --vm "$VM" --keep-last 2 --keep-daily 3)
left=$(ls "$REPO/$VM" | grep -cE '^[0-9]{8}T') || true
echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); v=d["vms"][0]; assert len(v["keep"])==int(sys.argv[1]) and sorted(v["result"]["deleted"])==sorted(v["remove"]), d' "$left"
sleep 1.2
check_all
used_after=$(du -sk "$REPO" | cut -f1)
echo "repository used ${used_before} KiB before, ${used_after} KiB after"
[ "$used_after" -lt "$used_before" ] || fail "prune released no space"

touch "$WORK/stop"
wait $reader || fail "$(cat "$WORK/reader.err" 2>/dev/null)"
[ -e "$WORK/reader.err" ] && fail "$(cat "$WORK/reader.err")"

# --all with keep-last 1 leaves only the newest point, still bit-identical.
run -q prune --all --keep-last 1
[ "$(ls "$REPO/$VM" | grep -cE '^[0-9]{8}T')" = 1 ] || fail "keep-last 1 left more than one point"
sleep 1.2
check_all
ls -A "$REPO/$VM" | grep -qE '^(journal.json|\.del-)' && fail "journal or deleting dir left"
echo PASS
