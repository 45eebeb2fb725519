#!/usr/bin/env bash
# Benchmark (prints figures, asserts nothing): restores of a SIZE disk
# (default 4 GiB, half holes: 4 MiB of data, then 4 MiB of hole) to the XAPI
# simulator's import_raw_vdi.
# Raw restore is compared in the same run with `curl -T` of the same raw file
# to the same endpoint; then a VHD restore (holes are not sent), and a
# changed-blocks restore after 1% of the blocks changed.  Run as root.
#   scripts/bench/restore.sh [--size GIB] [--repeat R]
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_GIB=4
REPEAT=3
while [ $# -gt 0 ]; do
  case "$1" in
    --repeat) REPEAT=$2; shift 2 ;;
    --size) SIZE_GIB=$2; shift 2 ;;
    *) echo "usage: $0 [--size GIB] [--repeat R]" >&2; exit 2 ;;
  esac
done
command -v curl >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
source scripts/bench/common.sh

make_disk "$D/disk.img" "$SIZE_GIB" 4 8
start_sim
"$SIMCTL" create-vm bench --disk "$D/disk.img" --halted >"$W/vm.json"
VM=$(json uuid <"$W/vm.json")
VDI=$(json vdis.0.uuid <"$W/vm.json")
SR=$(json sr_cbt <"$XAPISIM_READY")
cbt -q backup --vm bench
POINT=$(ls "$W/repo/$VM" | grep '^2' | head -1)

# curl -T of the same raw file into a fresh VDI of the same size.
python3 - "$URL" "$CA" "$SR" "$SIZE_GIB" >"$W/curl.env" <<'PY'
import ssl, sys, xmlrpc.client
url, ca, sr, gib = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
x = xmlrpc.client.ServerProxy(url, context=ssl.create_default_context(cafile=ca))
s = x.session.login_with_password("root", "xenroot", "1.0", "bench")["Value"]
srref = x.SR.get_by_uuid(s, sr)["Value"]
vdi = x.VDI.create(s, {"SR": srref, "virtual_size": str(gib << 30), "type": "user",
                       "sharable": False, "read_only": False, "other_config": {}})["Value"]
print("SESSION='%s'\nTARGET='%s'" % (s, vdi))
PY
source "$W/curl.env"
curl_secs() {
  sync; echo 3 >/proc/sys/vm/drop_caches
  local t
  t=$(now)
  curl -s -S --cacert "$CA" -T "$D/disk.img" -H "Expect:" \
    "$URL/import_raw_vdi?session_id=$SESSION&vdi=$TARGET&format=raw" -o /dev/null
  echo "$(now) - $t" | bc
}

restore_secs() {
  sync; echo 3 >/proc/sys/vm/drop_caches
  local t
  t=$(now)
  cbt restore --vm "$VM" --point "$POINT" "$@" --json >"$W/last.json"
  echo "$(now) - $t" | bc
}
# Each figure is the best of REPEAT runs, the three full uploads taking
# turns: on a shared machine the slowest runs measure the neighbours.
CURL="" RAW="" VHD="" VHD_UP=""
for _ in $(seq "$REPEAT"); do
  CURL=$(min "$CURL" "$(curl_secs)")
  RAW=$(min "$RAW" "$(restore_secs --sr "$SR" --disk "$VDI" --format raw)")
  RAW_SENT=$(json disks.0.bytes_sent <"$W/last.json")
  VHD=$(min "$VHD" "$(restore_secs --sr "$SR" --disk "$VDI" --format vhd)")
  VHD_SENT=$(json disks.0.bytes_sent <"$W/last.json")
  VHD_UP=$(min "$VHD_UP" "$(json disks.0.upload_seconds <"$W/last.json")")
done

# 1% of the blocks change on the original disk, then roll it back to the point.
python3 - "$D/disk.img" <<'PY'
import os, random, sys
path = sys.argv[1]
n = os.path.getsize(path) // 65536
with open(path, "r+b") as f:
    for b in random.Random(1).sample(range(n), n // 100):
        f.seek(b * 65536)
        f.write(os.urandom(65536))
PY
# Each round puts the changed content back first, in both forms.
CB="" CBR=""
for _ in $(seq "$REPEAT"); do
  "$SIMCTL" replace "$VDI" "$D/disk.img" >/dev/null
  secs=$(restore_secs --disk "$VDI" --onto-vdi "$VDI")
  if [ -z "$CB" ] || [ "$(echo "$secs < $CB" | bc)" = 1 ]; then
    CB=$secs
    CB_SENT=$(json disks.0.bytes_sent <"$W/last.json")
    CB_MODE=$(json disks.0.mode <"$W/last.json")
    CB_UP=$(json disks.0.upload_seconds <"$W/last.json")
  fi
  # the same in xapi's raw chunked framing
  "$SIMCTL" replace "$VDI" "$D/disk.img" >/dev/null
  secs=$(restore_secs --disk "$VDI" --onto-vdi "$VDI" --format raw)
  if [ -z "$CBR" ] || [ "$(echo "$secs < $CBR" | bc)" = 1 ]; then
    CBR=$secs
    CBR_SENT=$(json disks.0.bytes_sent <"$W/last.json")
    CBR_UP=$(json disks.0.upload_seconds <"$W/last.json")
  fi
done

MIB=$((SIZE_GIB * 1024))
echo
echo "disk: $SIZE_GIB GiB, about half holes; upload over HTTPS to import_raw_vdi; best of $REPEAT runs"
printf '%-28s %7.2f s  %6.0f MiB/s of disk\n' "curl -T (raw)" "$CURL" "$(echo "$MIB / $CURL" | bc -l)"
printf '%-28s %7.2f s  %6.0f MiB/s of disk  %5.2fx curl throughput  sent %s bytes\n' "restore --format raw" "$RAW" \
  "$(echo "$MIB / $RAW" | bc -l)" "$(echo "$CURL / $RAW" | bc -l)" "$RAW_SENT"
printf '%-28s %7.2f s  %6.0f MiB/s of disk  %5.2fx faster than raw  sent %s bytes\n' "restore --format vhd" "$VHD" \
  "$(echo "$MIB / $VHD" | bc -l)" "$(echo "$RAW / $VHD" | bc -l)" "$VHD_SENT"
printf '%-28s %7.2f s  %5.3fx of the full vhd restore time (%s)  sent %s bytes\n' "changed blocks, 1%, vhd" "$CB" \
  "$(echo "$CB / $VHD" | bc -l)" "$CB_MODE" "$CB_SENT"
printf '%-28s %7.2f s  %5.3fx of the full raw restore time, %5.3fx of the full vhd one (raw chunked framing)  sent %s bytes\n' \
  "changed blocks, 1%, raw" "$CBR" "$(echo "$CBR / $RAW" | bc -l)" "$(echo "$CBR / $VHD" | bc -l)" "$CBR_SENT"
echo "upload alone (the HTTP PUT, without the API calls): vhd full ${VHD_UP} s," \
  "changed blocks vhd ${CB_UP} s ($(echo "$CB_UP / $VHD_UP" | bc -l | cut -c1-5)x), raw chunked ${CBR_UP} s ($(echo "$CBR_UP / $VHD_UP" | bc -l | cut -c1-5)x)"
