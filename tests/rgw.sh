# shellcheck shell=bash
# Sourced by the tests that need an object store: start_rgw brings up a
# single-node Ceph cluster (one monitor, one OSD on memstore, so no disk)
# with a RADOS Gateway on 127.0.0.1, creates an S3 user and a bucket, and
# exports the AWS_* variables that cbt-backup and cbtfs read.  The cluster
# lives in $WORK/ceph and is stopped by the test's cleanup.
#
# Requires functions.sh to be sourced first.

RGW_PORT=${RGW_PORT:-}

requires_rgw() {
  requires ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph curl
}

_rgw_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_rgw BUCKET: starts the cluster and creates BUCKET.  Sets RGW_URL and
# exports AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and
# AWS_ENDPOINT_URL.  With RGW_TLS=1 the gateway serves HTTPS only, with a
# certificate for 127.0.0.1 signed by a CA made here, whose file is RGW_CA.
start_rgw() {
  local bucket=$1
  local dir=$WORK/ceph
  mkdir -p "$dir/mon" "$dir/osd" "$dir/run" "$dir/log"
  local mon_port=$(_rgw_free_port) mon_v2=$(_rgw_free_port)
  RGW_PORT=$(_rgw_free_port)
  local fsid frontend scheme=http
  fsid=$(cat /proc/sys/kernel/random/uuid)
  frontend="beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1"
  if [ "${RGW_TLS:-0}" = 1 ]; then
    scheme=https
    RGW_CA=$dir/ca.pem
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=test CA" \
      -keyout "$dir/ca.key" -out "$RGW_CA" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$dir/rgw.key" \
      -out "$dir/rgw.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' >"$dir/san.ext"
    openssl x509 -req -in "$dir/rgw.csr" -CA "$RGW_CA" -CAkey "$dir/ca.key" -CAcreateserial \
      -days 2 -extfile "$dir/san.ext" -out "$dir/rgw.crt" 2>/dev/null
    frontend="beast ssl_endpoint=127.0.0.1:$RGW_PORT ssl_certificate=$dir/rgw.crt ssl_private_key=$dir/rgw.key tcp_nodelay=1"
  fi
  cat >"$dir/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_v2,v1:127.0.0.1:$mon_port]
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon allow pool delete = true
osd objectstore = memstore
memstore device bytes = 4294967296
osd crush chooseleaf type = 0
mon data avail warn = 1
mon data avail crit = 0
run dir = $dir/run
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
paxos propose interval = 0.01
paxos min wait = 0.001
mon osd reporter subtree level = osd
[mon.a]
mon data = $dir/mon
[osd.0]
osd data = $dir/osd
osd journal size = 0
[client.rgw.a]
# Without tcp_nodelay the gateway holds each answer after the first on a
# kept-alive connection for 40 ms (Nagle against delayed ACKs).
rgw frontends = $frontend
rgw data = $dir/rgw
rgw dns name = localhost
rgw enable usage log = false
rgw thread pool size = 64
CONF
  export CEPH_CONF=$dir/ceph.conf
  cleanup_fn "stop_rgw"
  monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_v2,v1:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
  ceph-mon --mkfs -i a --monmap "$dir/monmap" >/dev/null 2>&1
  ceph-mon -i a
  timeout 60 ceph osd create >/dev/null
  ceph-osd -i 0 --mkfs >/dev/null 2>&1
  ceph-osd -i 0
  mkdir -p "$dir/rgw"
  radosgw -n client.rgw.a
  export AWS_ACCESS_KEY_ID=cbttestaccess
  export AWS_SECRET_ACCESS_KEY=cbttestsecretcbttestsecret
  export AWS_REGION=us-east-1
  RGW_URL=$scheme://127.0.0.1:$RGW_PORT
  export AWS_ENDPOINT_URL=$RGW_URL
  local i
  # The user first (it needs only the cluster), then the gateway's socket.
  for i in $(seq 100); do
    timeout 20 radosgw-admin user create --uid=test --display-name=test \
      --access-key="$AWS_ACCESS_KEY_ID" --secret="$AWS_SECRET_ACCESS_KEY" >/dev/null 2>&1 && break
    timeout 20 radosgw-admin user info --uid=test >/dev/null 2>&1 && break
    [ "$i" = 100 ] && fail "cannot create the S3 user (logs in $dir/log)"
    sleep 0.2
  done
  for i in $(seq 300); do
    curl -s ${RGW_CA:+--cacert "$RGW_CA"} -o /dev/null "$RGW_URL/" && break
    [ "$i" = 300 ] && fail "the RADOS Gateway did not answer on $RGW_URL (logs in $dir/log)"
    sleep 0.1
  done
  s3_curl -X PUT "$RGW_URL/$bucket" -o /dev/null -f || fail "cannot create bucket $bucket"
}

# s3_curl ARGS...: curl signed with the test user's keys.
s3_curl() {
  curl -sS ${RGW_CA:+--cacert "$RGW_CA"} --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}

stop_rgw() {
  local dir=$WORK/ceph name pid
  for name in client.rgw.a osd.0 mon.a; do
    [ -f "$dir/run/$name.pid" ] || continue
    pid=$(cat "$dir/run/$name.pid")
    kill "$pid" 2>/dev/null || true
  done
  for name in client.rgw.a osd.0 mon.a; do
    [ -f "$dir/run/$name.pid" ] || continue
    pid=$(cat "$dir/run/$name.pid")
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
}
