#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): backups of a SIZE disk (default
# 4 GiB, about half full) served by the XAPI simulator's nbdkit with TLS.
# The full backup is compared in the same run with nbdcopy reading the same
# export to a local file, as it is and with --flush (durable, as a backup
# is); then incrementals after 1% and 10% of the blocks changed.  Run as
# root on Debian 12.
#   scripts/bench/backup.sh [--size GIB] [--connections N] [--repeat R]
# nbdcopy and the full backup each run R times (default 3), alternating,
# and so does each incremental; the best of each is reported: on a shared
# machine the slowest runs measure the neighbours.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_GIB=4
CONN=4
REPEAT=3
while [ $# -gt 0 ]; do
  case "$1" in
    --repeat) REPEAT=$2; shift 2 ;;
    --size) SIZE_GIB=$2; shift 2 ;;
    --connections) CONN=$2; shift 2 ;;
    *) echo "usage: $0 [--size GIB] [--connections N] [--repeat R]" >&2; exit 2 ;;
  esac
done
LOOP_DIRECT_IO=on
source scripts/bench/common.sh

make_disk "$D/disk.img" "$SIZE_GIB" 1 2
start_sim
"$SIMCTL" create-vm bench --disk "$D/disk.img" >"$W/vm.json"
VDI=$(json vdis.0.uuid <"$W/vm.json")

# nbdcopy of the same export: log in, ask get_nbd_info for the disk, copy.
python3 - "$URL" "$CA" "$VDI" >"$W/nbd.env" <<'PY'
import json, ssl, sys, urllib.parse, xmlrpc.client
url, ca, vdi = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=ca)
x = xmlrpc.client.ServerProxy(url, context=ctx)
s = x.session.login_with_password("root", "xenroot", "1.0", "bench")["Value"]
ref = x.VDI.get_by_uuid(s, vdi)["Value"]
info = x.VDI.get_nbd_info(s, ref)["Value"][0]
name = urllib.parse.quote(info["exportname"], safe="")
print("NBD_URI='nbds://%s:%s/%s?tls-certificates=%s'" % (info["subject"], info["port"], name, ca.rsplit("/", 1)[0]))
print("NBD_SESSION='%s'" % s)
PY
source "$W/nbd.env"
NBDCOPY="" NBDCOPY_FLUSH="" FULL="" FULL_DISK=""
for _ in $(seq "$REPEAT"); do
  sync; echo 3 >/proc/sys/vm/drop_caches
  t=$(now)
  nbdcopy --connections="$CONN" "$NBD_URI" "$W/nbdcopy.raw"
  NBDCOPY=$(min "$NBDCOPY" "$(echo "$(now) - $t" | bc)")
  rm -f "$W/nbdcopy.raw"
  # nbdcopy leaves its copy in the page cache; a backup is durable when it
  # returns.  --flush makes nbdcopy's copy durable too: the same work.
  sync; echo 3 >/proc/sys/vm/drop_caches
  t=$(now)
  nbdcopy --flush --connections="$CONN" "$NBD_URI" "$W/nbdcopy.raw"
  NBDCOPY_FLUSH=$(min "$NBDCOPY_FLUSH" "$(echo "$(now) - $t" | bc)")
  rm -f "$W/nbdcopy.raw"
  # Each full backup starts from an empty repository.
  rm -rf "$W/repo"
  sync; echo 3 >/proc/sys/vm/drop_caches
  t=$(now)
  cbt backup --vm bench --connections "$CONN" --json >"$W/full.json"
  secs=$(echo "$(now) - $t" | bc)
  FULL=$(min "$FULL" "$secs")
  # The disk's own time excludes the simulator's snapshot and the API calls.
  FULL_DISK=$(min "$FULL_DISK" "$(json disks.0.seconds <"$W/full.json")")
done
python3 - "$URL" "$CA" "$NBD_SESSION" <<'PY'
import ssl, sys, xmlrpc.client
x = xmlrpc.client.ServerProxy(sys.argv[1], context=ssl.create_default_context(cafile=sys.argv[2]))
x.session.logout(sys.argv[3])
PY

# change PCT% of the blocks (random data), as a guest would, then back up;
# REPEAT rounds, each changing other blocks, and the best one reported
incremental() {
  local pct=$1 best="" line=""
  for round in $(seq "$REPEAT"); do
    python3 - "$D/disk.img" "$pct" "$round" <<'PY'
import os, random, sys
path, pct, rnd = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
size = os.path.getsize(path)
n = size // 65536
blocks = random.Random(int(pct * 100) * 1000 + rnd).sample(range(n), int(n * pct / 100))
with open(path, "r+b") as f:
    for b in blocks:
        f.seek(b * 65536)
        f.write(os.urandom(65536))
PY
    local written
    written=$("$SIMCTL" replace "$VDI" "$D/disk.img" | json blocks_written)
    sleep 1
    sync; echo 3 >/proc/sys/vm/drop_caches
    local t
    t=$(now)
    cbt backup --vm bench --connections "$CONN" --json >"$W/inc$pct.json"
    local secs
    secs=$(echo "$(now) - $t" | bc)
    if [ -n "$best" ] && [ "$(echo "$secs >= $best" | bc)" = 1 ]; then continue; fi
    best=$secs
    local stored disk_secs
    stored=$(json disks.0.bytes_stored <"$W/inc$pct.json")
    disk_secs=$(json disks.0.seconds <"$W/inc$pct.json")
    line=$(printf '%-26s %7.2f s  %5.3fx of the full backup; disk read %6.2f s = %5.3fx of the full read; %6d blocks changed, stored %s bytes = %.3fx the changed bytes' \
      "incremental, $pct% changed" "$secs" "$(echo "$secs / $FULL" | bc -l)" "$disk_secs" \
      "$(echo "$disk_secs / $FULL_DISK" | bc -l)" "$written" "$stored" \
      "$(echo "$stored / ($written * 65536)" | bc -l)")
  done
  echo "$line"
}

echo
echo "disk: $SIZE_GIB GiB about half full, NBD over TLS, $CONN connections; best of $REPEAT runs"
printf '%-22s %8.2f s  %7.0f MiB/s\n' "nbdcopy" "$NBDCOPY" "$(echo "$SIZE_GIB * 1024 / $NBDCOPY" | bc -l)"
printf '%-22s %8.2f s  %7.0f MiB/s  %5.2fx nbdcopy (whole command)\n' "cbt-backup full" "$FULL" \
  "$(echo "$SIZE_GIB * 1024 / $FULL" | bc -l)" "$(echo "$FULL / $NBDCOPY" | bc -l)"
printf '%-22s %8.2f s  %7.0f MiB/s  %5.2fx nbdcopy (disk read and store only)\n' "  of which the disk" "$FULL_DISK" \
  "$(echo "$SIZE_GIB * 1024 / $FULL_DISK" | bc -l)" "$(echo "$FULL_DISK / $NBDCOPY" | bc -l)"
printf '%-22s %8.2f s  %7.0f MiB/s; the full backup takes %.2fx its time\n' "nbdcopy --flush" "$NBDCOPY_FLUSH" \
  "$(echo "$SIZE_GIB * 1024 / $NBDCOPY_FLUSH" | bc -l)" "$(echo "$FULL / $NBDCOPY_FLUSH" | bc -l)"
incremental 1
incremental 10
