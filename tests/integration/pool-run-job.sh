#!/usr/bin/env bash
# Named jobs from the config file: `jobs` lists them, `run JOB --dry-run`
# shows the job's VMs, `run JOB` backs them up and prunes them by the
# job's keep rules, writing a Prometheus textfile that promtool (or, where
# Debian lacks it, the parser below) accepts; a VM that fails is neither
# pruned nor hidden (exit 1, metrics, status); a server that cannot be
# reached still leaves metrics saying the job failed; `status` shows each
# VM's newest point, age and last failure; a mistake in a job is one clear
# error for run and jobs but does not stop other commands; --tls overrides
# the config file's tls = false.
source "$(dirname "$0")/../functions.sh"
start_sim

declare -A UUID VDI
for i in 1 2 3 4; do
  head -c $((i << 20)) /dev/urandom >"$WORK/d$i.img"
  create_vm "vm$i" --disk "$WORK/d$i.img"
  UUID[vm$i]=$VM
  VDI[vm$i]=$V1
done
for i in 1 2 3; do xapi_py 'call("VM.add_tags", call("VM.get_by_uuid", args[0]), "nightly")' "${UUID[vm$i]}"; done

mkdir -p "$WORK/metrics"
PROM="$WORK/metrics/cbt-nightly.prom"
cat >"$WORK/cbt.conf" <<CONF
server = $SIM_URL
ca-cert = $SIM_CA
password-file = $WORK/pw
repo = $WORK/repo

[job.nightly]
tag = nightly
exclude = vm3
jobs = 2
host-connections = 4
keep-last = 2
metrics-file = $PROM

[job.single]
vm = vm4
repo = $WORK/repo-single
CONF
run() { "$CBT_BACKUP" --config "$WORK/cbt.conf" "$@"; }

# metrics_value NAME LABELS: the sample's value (LABELS a substring).
metrics_value() {
  grep "^$1{" "$PROM" | grep -F -- "$2" | awk '{print $2}'
}

# check_metrics: promtool if Debian has it, and always a strict parser of
# the exposition format (HELP and TYPE before each family's samples,
# well-formed labels, numeric values, no duplicate series).
check_metrics() {
  if command -v promtool >/dev/null; then
    promtool check metrics <"$PROM" || fail "promtool rejects the textfile"
  fi
  python3 - "$PROM" <<'PY' || fail "textfile malformed"
import re, sys
name_re = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
label_re = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
sample = re.compile(r"^(%s)\{((?:%s)(?:,%s)*)?\} (\S+)$" % (name_re, label_re, label_re))
helped, typed, seen = set(), set(), set()
for n, line in enumerate(open(sys.argv[1], encoding="utf-8"), 1):
    line = line.rstrip("\n")
    if line.startswith("# HELP "):
        helped.add(line.split()[2]); continue
    if line.startswith("# TYPE "):
        parts = line.split()
        assert parts[3] in ("gauge", "counter"), line
        typed.add(parts[2]); continue
    m = sample.match(line)
    assert m, "line %d: %r" % (n, line)
    assert m.group(1) in helped and m.group(1) in typed, "no HELP/TYPE: " + line
    float(m.group(3))
    key = (m.group(1), m.group(2))
    assert key not in seen, "duplicate series " + line
    seen.add(key)
assert seen, "no samples"
PY
}

npoints() { ls "$WORK/${2:-repo}/${UUID[$1]}" 2>/dev/null | grep -c '^2' || true; }

# 1. jobs lists the config's jobs; run --dry-run shows the selection.
run jobs | grep -q "^nightly .*last=2 .*tag=nightly exclude=vm3" || fail "jobs: $(run jobs)"
run jobs --json | python3 -c '
import json, sys
j = {x["name"]: x for x in json.load(sys.stdin)}
assert set(j) == {"nightly", "single"}, j
assert j["nightly"]["jobs"] == 2 and j["nightly"]["keep"]["last"] == 2, j
assert j["single"]["vms"] == ["vm4"] and j["single"]["repo"].endswith("/repo-single"), j'
[ "$(run run nightly --dry-run --json | python3 -c '
import json, sys
print(" ".join(sorted(r["vm_name"] for r in json.load(sys.stdin))))')" = "vm1 vm2" ] ||
  fail "dry run selection"
run run nightly --dry-run | grep -q "then prune (last=2)" || fail "dry run does not say it prunes"
[ ! -e "$WORK/repo" ] && [ ! -e "$PROM" ] || fail "--dry-run wrote something"

# 2. Three runs: each backs up vm1 and vm2, and keep-last=2 leaves two points.
for n in 1 2 3; do
  [ "$n" = 1 ] || sleep 1  # points are named by the second
  run run nightly -q >"$WORK/run$n.txt" || fail "run $n failed"
done
for v in vm1 vm2; do [ "$(npoints $v)" = 2 ] || fail "$v has $(npoints $v) points after 3 runs"; done
[ "$(npoints vm3)" = 0 ] && [ "$(npoints vm4)" = 0 ] || fail "excluded VMs backed up"
check_metrics
[ "$(metrics_value cbt_backup_job_success 'backup_job="nightly"')" = 1 ] || fail "job_success"
[ "$(metrics_value cbt_backup_job_vms 'backup_job="nightly"')" = 2 ] || fail "job_vms"
[ "$(metrics_value cbt_backup_job_pruned_points 'backup_job="nightly"')" = 2 ] || fail "pruned_points"
newest=$(ls "$WORK/repo/${UUID[vm1]}" | grep '^2' | tail -1)
want=$(date -u -d "${newest:0:4}-${newest:4:2}-${newest:6:2} ${newest:9:2}:${newest:11:2}:${newest:13:2}" +%s)
[ "$(metrics_value cbt_backup_vm_last_success_timestamp_seconds "vm=\"${UUID[vm1]}\"")" = "$want" ] ||
  fail "last success of vm1 is not its newest point"
[ "$(stat -c %a "$PROM")" = 644 ] || fail "textfile mode $(stat -c %a "$PROM")"
run run nightly --json -q | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert r["job"] == "nightly" and len(r["backups"]) == 2, r
assert all(b["result"] == "ok" for b in r["backups"]), r
assert r["pruned_points"] == 2 and len(r["prune"]) == 2, r' || fail "run --json"

# 3. One VM's NBD reads fail: exit 1 naming it, it is not pruned, metrics and status
# say so; the other VM is backed up and pruned.
sleep 1
"$SIMCTL" write-pattern "${VDI[vm2]}" 0 65536 7 >/dev/null  # something to read
"$SIMCTL" fault nbd_read_errors on --vm vm2 >/dev/null
rc=0
run run nightly -q >"$WORK/run4.txt" 2>"$WORK/run4.err" || rc=$?
"$SIMCTL" fault nbd_read_errors off >/dev/null
[ "$rc" = 1 ] || fail "exit $rc with a VM failing: $(cat "$WORK/run4.err")"
grep -q "^cbt-backup: VM vm2 (${UUID[vm2]}) failed" "$WORK/run4.err" || fail "vm2 not named"
[ "$(npoints vm1)" = 2 ] && [ "$(npoints vm2)" = 2 ] || fail "points after the failed run"
check_metrics
[ "$(metrics_value cbt_backup_job_success 'backup_job="nightly"')" = 0 ] || fail "job_success after failure"
[ "$(metrics_value cbt_backup_job_failed_vms 'backup_job="nightly"')" = 1 ] || fail "failed_vms"
[ "$(metrics_value cbt_backup_vm_last_run_success "vm=\"${UUID[vm2]}\"")" = 0 ] || fail "vm2 success"
[ "$(metrics_value cbt_backup_vm_last_run_success "vm=\"${UUID[vm1]}\"")" = 1 ] || fail "vm1 success"
[ "$(metrics_value cbt_backup_vm_last_success_timestamp_seconds "vm=\"${UUID[vm2]}\"")" != 0 ] ||
  fail "vm2's last success lost"

run status --json | python3 -c '
import json, sys
s = {x["vm"]: x for x in json.load(sys.stdin)}
vm1, vm2 = s[sys.argv[1]], s[sys.argv[2]]
assert vm1["points"] == 2 and vm1["last_run"]["result"] == "ok" and vm1["last_failure"] is None, vm1
assert vm1["last_run"]["job"] == "nightly" and vm1["vm_name"] == "vm1", vm1
assert vm2["last_run"]["result"] == "failed" and vm2["last_failure"]["error"], vm2
assert 0 <= vm2["age_seconds"] < 600, vm2' "${UUID[vm1]}" "${UUID[vm2]}" || fail "status --json"
run status | grep "^${UUID[vm2]} " | grep -q "failed" || fail "status table: $(run status)"
run status --max-age 1 >/dev/null || fail "fresh points reported stale"
sleep 1
rc=0
run status --max-age 0.0001 >/dev/null 2>"$WORK/stale.err" || rc=$?
[ "$rc" = 1 ] && grep -q "${UUID[vm1]} has no point newer" "$WORK/stale.err" || fail "--max-age"

# The failure survives the next success.
run run nightly -q >/dev/null || fail "run after the failure"
run status --vm "${UUID[vm2]}" --json | python3 -c '
import json, sys
s = json.load(sys.stdin)[0]
assert s["last_run"]["result"] == "ok" and s["last_failure"]["result"] == "failed", s'

# 4. A job with its own repository.
run run single -q >/dev/null || fail "run single"
[ "$(npoints vm4 repo-single)" = 1 ] && [ "$(npoints vm4)" = 0 ] || fail "job repo not used"

# 5. A server that cannot be reached: exit 1, and the metrics say the job failed.
rc=0
run --server https://127.0.0.1:9 run nightly -q 2>"$WORK/down.err" || rc=$?
[ "$rc" = 1 ] || fail "exit $rc with the server down"
[ "$(grep -c . "$WORK/down.err")" = 1 ] || fail "not one error line: $(cat "$WORK/down.err")"
check_metrics
[ "$(metrics_value cbt_backup_job_success 'backup_job="nightly"')" = 0 ] || fail "job_success with server down"
# The VMs earlier runs of the job backed up keep their last success.
[ "$(metrics_value cbt_backup_vm_last_success_timestamp_seconds "vm=\"${UUID[vm1]}\"")" -gt 0 ] &&
  [ "$(metrics_value cbt_backup_vm_last_run_success "vm=\"${UUID[vm1]}\"")" = 0 ] ||
  fail "server down: vm1 missing from the metrics: $(cat "$PROM")"
[ -z "$(metrics_value cbt_backup_vm_last_run_success "vm=\"${UUID[vm4]}\"")" ] ||
  fail "server down: a VM of another job listed"
rc=0
run --server https://127.0.0.1:9 backup --all --metrics-file "$WORK/metrics/adhoc.prom" -q 2>/dev/null || rc=$?
[ "$rc" = 1 ] && grep -q '^cbt_backup_job_success{backup_job=""} 0$' "$WORK/metrics/adhoc.prom" ||
  fail "backup --metrics-file with the server down"

# A VM that does not exist is not recorded (no directory appears for it).
ghost=$(new_uuid)
expect_error "" run backup --vm "$ghost"
[ ! -e "$WORK/repo/$ghost" ] || fail "a failed backup of an unknown VM made its directory"

# 6. Mistakes in the config file.
expect_error "no job 'weekly'.*nightly, single" run run weekly
cp "$WORK/cbt.conf" "$WORK/good.conf"
printf '[job.broken]\nall = true\nkeep-dialy = 7\n' >>"$WORK/cbt.conf"
expect_error "job.broken.keep-dialy" run run nightly
expect_error "job.broken.keep-dialy" run jobs
run list >/dev/null || fail "a broken job stopped list"
cp "$WORK/good.conf" "$WORK/cbt.conf"

# 7. "tls = false" in the config file accepts a pool whose NBD has no TLS
# (purpose insecure_nbd), and --tls on the command line takes that back.
xapi_py '
for n in call("network.get_all"):
    if "nbd" in call("network.get_purpose", n):
        call("network.remove_purpose", n, "nbd")
        call("network.add_purpose", n, "insecure_nbd")'
"$SIMCTL" write-pattern "${VDI[vm4]}" 0 65536 9 >/dev/null
expect_error "without TLS" run backup --vm vm4
sed -i "1i tls = false" "$WORK/cbt.conf"  # a global setting: before the sections
expect_error "without TLS" run --tls backup --vm vm4
run backup --vm vm4 -q >"$WORK/plain.out" 2>&1 || fail "tls = false did not accept plain NBD: $(cat "$WORK/plain.out")"
printf 'sever = https://x\n' >"$WORK/typo.conf"
expect_error "unknown setting 'sever'" "$CBT_BACKUP" --config "$WORK/typo.conf" list
echo PASS
