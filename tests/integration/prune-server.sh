#!/usr/bin/env bash
# prune and delete with a server: the CBT metadata VDIs of the deleted points
# are destroyed on the server, the newest point's is kept, and the next backup
# is still incremental and reads back right.
source "$(dirname "$0")/../functions.sh"
requires_fuse
start_sim
create_demo_vm

points=()
for i in 1 2 3 4; do
  "$SIMCTL" write-pattern "$V1" $((i * 1048576)) 65536 $((i + 1)) >/dev/null
  sleep 1
  cbt -q backup --vm demo
  points+=("$(ls "$WORK/repo/$VM" | grep -E '^[0-9]{8}T' | tail -n 1)")
done
snap_of() {  # POINT VDI: the snapshot_vdi_uuid the point recorded
  python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print([d["snapshot_vdi_uuid"] for d in m["disks"] if d["vdi_uuid"]==sys.argv[2]][0])' \
    "$WORK/repo/$VM/$1/manifest.json" "$2"
}
vdi_type() {  # UUID: its type on the server, or "gone"
  "$SIMCTL" vdis | python3 -c 'import json,sys; t=[v["type"] for v in json.load(sys.stdin) if v["uuid"]==sys.argv[1]]; print(t[0] if t else "gone")' "$1"
}
s1=$(snap_of "${points[0]}" "$V1")
s2=$(snap_of "${points[1]}" "$V1")
s3=$(snap_of "${points[2]}" "$V1")
s4=$(snap_of "${points[3]}" "$V1")
for s in "$s1" "$s2" "$s3" "$s4"; do
  [ "$(vdi_type "$s")" = cbt_metadata ] || fail "snapshot $s is $(vdi_type "$s") before the prune"
done

# delete of a middle point destroys its metadata only.
cbt -q delete --vm "$VM" --point "${points[1]}"
[ "$(vdi_type "$s2")" = gone ] || fail "delete kept the CBT metadata of the deleted point"
[ "$(vdi_type "$s1")" = cbt_metadata ] || fail "delete destroyed another point's metadata"

# prune keeps the newest: its metadata stays, the others go.
out=$(cbt --json prune --vm "$VM" --keep-last 1)
echo "$out" | grep -q "destroyed 4 CBT metadata" || fail "prune notes (2 points of 2 disks): $out"
[ "$(vdi_type "$s1")" = gone ] && [ "$(vdi_type "$s3")" = gone ] || fail "prune kept metadata"
[ "$(vdi_type "$s4")" = cbt_metadata ] || fail "prune destroyed the newest point's metadata"

# The next backup is incremental against the kept point and reads back right.
"$SIMCTL" write-pattern "$V1" $((9 * 1048576)) 65536 9 >/dev/null
sleep 1
cbt backup --vm demo --json >"$WORK/b.json"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert all(x["mode"]=="incremental" for x in d["disks"]), d' "$WORK/b.json"
new=$(json_get "$WORK/b.json" point)
"$SIMCTL" copy-disk "$V1" "$WORK/now.img" >/dev/null
cmp <(cbt export --vm "$VM" --disk "$V1" --point "$new" --output -) "$WORK/now.img" ||
  fail "the backup after the prune reads back wrong"
cbt -q verify || fail "verify after prune"
echo PASS
