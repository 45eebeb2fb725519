#!/usr/bin/env bash
# Pools of several hosts.  NBD: get_nbd_info gives one record per host that
# sees the SR, each with that host's own certificate; the backup spreads its
# connections over the hosts, pins each host's certificate although the
# dedicated NBD network's address is not in it, falls back to other hosts
# when one is down, and still refuses a certificate other than the one
# handed out.  IPv6 NBD addresses in CIDR form ("::1/128") are connected to.
# Restore onto an SR only a member host sees: the master's 302 is followed
# to that member (with its certificate) and the restored disks equal the
# point.  No session of ours stays valid.
source "$(dirname "$0")/../functions.sh"
start_sim --hosts 3 --nbd-network dedicated

# A disk of random bytes on the shared SR (a multiple of 64 KiB, so the
# exported point compares byte for byte).
head -c $((16 << 20)) /dev/urandom >"$WORK/d1.img"
create_vm pooled --disk "$WORK/d1.img@shared"

# host_conns: "name=connections ..." of the NBD counters since the last reset.
host_conns() {
  "$SIMCTL" nbd-stats | python3 -c '
import json, sys
d = json.load(sys.stdin)["per_host"]
print(" ".join("%s=%d" % (h, d[h]["connections"]) for h in sorted(d)))'
}
# conns_of HOST: NBD connections made to HOST since the last reset.
conns_of() {
  "$SIMCTL" nbd-stats | python3 -c '
import json, sys
print(json.load(sys.stdin)["per_host"].get(sys.argv[1], {}).get("connections", 0))' "$1"
}
# point_equals POINT VDI IMAGE: the point's disk, exported raw, is IMAGE.
point_equals() {
  rm -f "$WORK/export.raw"
  cbt export --vm "$VM" --point "$1" --disk "$2" --format raw --output "$WORK/export.raw" -q
  cmp "$WORK/export.raw" "$3" || fail "point $1 of $2 differs from the disk"
}
# backup_conns WHAT ARGS...: resets the NBD counters and backs $VM up with
# ARGS, its JSON result in OUT, and shows the connections made to each host.
backup_conns() {
  local what=$1
  shift
  "$SIMCTL" nbd-reset >/dev/null
  OUT=$(cbt backup --vm "$VM" "$@" --json 2>"$WORK/err") || fail "$what failed: $(cat "$WORK/err")"
  echo "  connections per host: $(host_conns)"
}
# host_down_backup HOST WHOSE MIB IMAGE: writes a new pattern at MIB MiB of
# V1, copies the disk to IMAGE, takes HOST's NBD server down and backs up in
# full with 6 connections.
host_down_backup() {
  "$SIMCTL" write-pattern "$V1" $(($3 << 20)) 65536 $((20 + $3)) >/dev/null
  "$SIMCTL" copy-disk "$V1" "$4" >/dev/null
  "$SIMCTL" fault nbd_host_down "$1" >/dev/null
  sleep 1
  backup_conns "backup with $2 NBD down" --full --connections 6
}

echo "dedicated NBD network: 3 records, addresses not in the host certificates"
backup_conns "backup over the dedicated NBD network" --connections 6
P1=$(echo "$OUT" | json_get - point)
used=$("$SIMCTL" nbd-stats | python3 -c '
import json, sys
print(sum(1 for h in json.load(sys.stdin)["per_host"].values() if h["connections"] > 0))')
[ "$used" -ge 2 ] || fail "6 connections all went to one host: $(host_conns)"
point_equals "$P1" "$V1" "$WORK/d1.img"
no_leftovers "first backup"

echo "host1 down: its records are skipped"
host_down_backup host1 "host1's" 1 "$WORK/d1b.img"
[ "$(conns_of host1)" = 0 ] || fail "connections counted on a host that is down: $(host_conns)"
point_equals "$(echo "$OUT" | json_get - point)" "$V1" "$WORK/d1b.img"
no_leftovers "host1 down"

echo "the master down instead: host1 and host2 serve"
host_down_backup master "the master's" 2 "$WORK/d1c.img"
[ "$(conns_of host1)" -gt 0 ] && [ "$(conns_of host2)" -gt 0 ] ||
  fail "host1 and host2 were not both used: $(host_conns)"
[ "$(conns_of localhost)" = 0 ] || fail "connections counted on the master, which is down: $(host_conns)"
point_equals "$(echo "$OUT" | json_get - point)" "$V1" "$WORK/d1c.img"
"$SIMCTL" fault nbd_host_down off >/dev/null
no_leftovers "master down"

echo "another certificate than the one handed out is refused"
before=$(points)
with_fault nbd_wrong_cert expect_error certificate cbt backup --vm "$VM"
[ "$(points)" = "$before" ] || fail "a backup refused for its certificate committed a point"
no_leftovers "wrong certificate"
no_valid_sessions "dedicated network"

echo "IPv6 NBD network (::1/128), 2 hosts"
pid=$(json_get "$XAPISIM_READY" pid)
kill "$pid"
wait "$pid" 2>/dev/null || true
rm -rf "$WORK/sim" "$WORK/repo"
start_sim --hosts 2 --nbd-network ipv6
json_get "$XAPISIM_READY" hosts.0.nbd_address | grep -qx '::1/128' || fail "simulator is not on IPv6"
head -c $((8 << 20)) /dev/urandom >"$WORK/d1.img"
head -c $((3 * 65536)) /dev/urandom >"$WORK/d2.img"
create_vm six --disk "$WORK/d1.img@shared" --disk "$WORK/d2.img@shared"
backup_conns "backup over the IPv6 NBD network"
P=$(echo "$OUT" | json_get - point)
[ "$("$SIMCTL" nbd-stats | json_get - connections)" -gt 0 ] || fail "no NBD connection over IPv6"
point_equals "$P" "$V1" "$WORK/d1.img"
point_equals "$P" "$V2" "$WORK/d2.img"
no_leftovers "IPv6 backup"

echo "restore onto an SR that only host1 sees: the 302 is followed"
LOCAL=$(json_get "$XAPISIM_READY" sr_local_host1)
sr_of() { "$SIMCTL" vdi "$1" | json_get - sr; }
# restored_equals VDI ORIGINAL: the restored VDI is on host1's SR and starts
# with the point's disk (the VDI may be rounded up).
restored_equals() {
  [ "$(sr_of "$1")" = "$LOCAL" ] || fail "restored VDI $1 is not on host1's SR"
  rm -f "$WORK/export.raw" "$WORK/restored.raw"
  cbt export --vm "$VM" --point "$P" --disk "$2" --format raw --output "$WORK/export.raw" -q
  "$SIMCTL" copy-disk "$1" "$WORK/restored.raw" >/dev/null
  cmp <(head -c "$(stat -c %s "$WORK/export.raw")" "$WORK/restored.raw") "$WORK/export.raw" ||
    fail "restored VDI $1 differs from the point's disk $2"
}
for d in "$V2" "$V1"; do
  out=$(cbt restore --vm "$VM" --point "$P" --disk "$d" --sr "$LOCAL" --verify --json 2>"$WORK/err") ||
    fail "disk restore of $d onto host1's SR failed: $(cat "$WORK/err")"
  [ "$(echo "$out" | json_get - disks.0.verify)" = ok ] || fail "verify of $d: $out"
  restored_equals "$(echo "$out" | json_get - disks.0.target_vdi)" "$d"
done
echo "  ok: both disks"
out=$(cbt restore --vm "$VM" --point "$P" --sr "$LOCAL" --verify --json 2>"$WORK/err") ||
  fail "whole-VM restore onto host1's SR failed: $(cat "$WORK/err")"
new=$(echo "$out" | json_get - vm)
[ -n "$new" ] && [ "$new" != "$VM" ] || fail "no new VM: $out"
echo "$out" | python3 -c '
import json, sys
d = json.load(sys.stdin)["disks"]
assert len(d) == 2 and all(x["verify"] == "ok" for x in d), d
for x in d:
    print(x["target_vdi"], x["vdi"])' >"$WORK/targets"
while read -r t d; do restored_equals "$t" "$d"; done <"$WORK/targets"
echo "  ok: VM $new"
no_valid_sessions "IPv6 pool"
echo PASS
