#!/usr/bin/env bash
# The simulator against Xen Orchestra's XAPI client, the npm package xen-api
# (version pinned in tests/xo/package.json): login over HTTPS with the
# certificate verified, system.listMethods, records checked against simctl,
# event.from (changes made through the control interface and through calls),
# Async tasks completed through task events, both transports, logout.
# Needs node >= 18 and npm (installed with apt-get when missing and root)
# and the npm registry; skipped (exit 77, also under CBT_TEST_STRICT=1) when
# the registry cannot be reached: it is not part of Debian's archive, the one
# source every test machine is sure to reach, so its absence says nothing
# about the product.  The package goes to $CBT_XO_CLIENT_DEPS, else
# BUILD/xo-client-deps (reused while package.json and the lock file are
# unchanged), else the test's work directory.
source "$(dirname "$0")/../functions.sh"
XO_SRC="$CBT_SOURCE_DIR/tests/xo"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing nodejs and npm with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends nodejs npm >"$WORK/apt.log" 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm; } \
        >>"$WORK/apt.log" 2>&1 || { tail -5 "$WORK/apt.log" >&2; skip "cannot install nodejs and npm"; }
  fi
  requires node npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 18 ] || skip "node $node_major is too old (xen-api needs 18 or later)"

# ---- the xen-api package, outside the source tree --------------------------------------
DEPS=${CBT_XO_CLIENT_DEPS:-}
if [ -z "$DEPS" ]; then
  if [ -d "$CBT_BUILD_DIR" ] && [ -w "$CBT_BUILD_DIR" ]; then
    DEPS="$CBT_BUILD_DIR/xo-client-deps"
  else
    DEPS="$WORK/xo-client-deps"
  fi
fi
stamp=$(cat "$XO_SRC/package.json" "$XO_SRC/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$DEPS/stamp" 2>/dev/null)" != "$stamp" ] ||
  [ ! -f "$DEPS/node_modules/xen-api/package.json" ]; then
  rm -rf "$DEPS/node_modules" "$DEPS/stamp"
  mkdir -p "$DEPS"
  cp "$XO_SRC/package.json" "$XO_SRC/package-lock.json" "$DEPS/"
  rc=0
  (cd "$DEPS" && timeout 45 npm install --no-audit --no-fund --loglevel=error \
    --cache "$DEPS/npm-cache" --fetch-retries=1 --fetch-retry-mintimeout=1000 \
    --fetch-retry-maxtimeout=2000 --fetch-timeout=15000) >"$WORK/npm.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -20 "$WORK/npm.log" >&2
    rm -rf "$DEPS/node_modules"
    if [ "$rc" = 124 ] || grep -Eqi 'ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|ERR_SOCKET_TIMEOUT|network|proxy|E5[0-9][0-9]' "$WORK/npm.log"; then
      echo "SKIP: the npm registry cannot be reached (npm install xen-api failed)"
      exit 77
    fi
    fail "npm install of xen-api failed (exit $rc)"
  fi
  echo "$stamp" >"$DEPS/stamp"
fi
echo "xen-api $(node -p 'require(process.argv[1]).version' \
  "$DEPS/node_modules/xen-api/package.json"), node $(node --version)"

# ---- a simulator with a VM of two disks ------------------------------------------------
start_sim
head -c $((3 * 1024 * 1024)) /dev/urandom >"$WORK/d1.img"
truncate -s 6M "$WORK/d1.img"
vm=$("$SIMCTL" create-vm xo-vm --disk "$WORK/d1.img" --empty-disk 2097152 --cbt |
  json_get - uuid)
"$SIMCTL" write-pattern "$("$SIMCTL" vms | python3 -c '
import json, sys
vm = [v for v in json.load(sys.stdin) if v["uuid"] == sys.argv[1]][0]
print(vm["disks"][1]["vdi"])' "$vm")" 65536 4096 90 >/dev/null
"$SIMCTL" vms >"$WORK/vms.json"
"$SIMCTL" vdis >"$WORK/vdis.json"
python3 - "$vm" "$WORK/vms.json" "$WORK/vdis.json" >"$WORK/expect.json" <<'PY'
import hashlib, json, sys
vm, vms, vdis = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
md5 = {}
for v in vdis:
    if v.get("path"):
        h = hashlib.md5()
        with open(v["path"], "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        md5[v["uuid"]] = h.hexdigest()
json.dump({"vm": vm, "vms": vms, "vdis": vdis, "md5": md5}, sys.stdout)
PY

# ---- the client ------------------------------------------------------------------------
rc=0
NODE_EXTRA_CA_CERTS="$SIM_CA" XO_CLIENT_DEPS="$DEPS" SIMCTL="$SIMCTL" \
  timeout 50 node "$XO_SRC/xo-client-test.mjs" "$XAPISIM_READY" "$WORK/expect.json" || rc=$?
if [ "$rc" -ne 0 ]; then
  tail -20 "$WORK/sim.log" >&2
  fail "xen-api client checks failed (exit $rc)"
fi
echo "PASS: xo-client"
