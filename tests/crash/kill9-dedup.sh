#!/usr/bin/env bash
# kill -9 at random moments of prune, delete and gc on a deduplicated
# repository: two VMs whose first points share most blocks (a template
# cloned), so blocks of one VM's folded or deleted points stay in use by the
# other.  After each kill, the next prune of each VM finishes an interrupted
# delete and a gc releases what no point reads; then the points are exactly
# those before or those after the killed operation, nothing temporary is
# left, verify is clean and finds no unreferenced block, and every remaining
# point of both VMs reads back as the image it was made from.
source "$(dirname "$0")/../functions.sh"
requires python3 sha256sum flock setsid pgrep
ROUNDS=${CBT_CRASH_ROUNDS:-12}

VMA=$(new_uuid) DA=$(new_uuid)
VMB=$(new_uuid) DB=$(new_uuid)
TEMPLATE=$WORK/template
TEMPLATE_GC=$WORK/template-gc
REPO=$WORK/repo
run() { "$CBT_BACKUP" --repo "$REPO" "$@"; }

# rewrite IMAGE N: N scattered 64 KiB blocks of IMAGE get new random bytes.
rewrite() {
  local _
  for _ in $(seq "$2"); do
    dd if=/dev/urandom of="$1" bs=64k seek=$((RANDOM % 256)) count=1 conv=notrunc status=none
  done
}
# add_point VM DISK TS IMAGE: a point of IMAGE, its sha256 kept in $WORK/VM-TS.sum.
add_point() {
  "$CBT_BACKUP" --repo "$TEMPLATE" -q import-image --vm "$1" --disk "$2" --point "$3" "$4"
  sha256sum <"$4" | cut -d' ' -f1 >"$WORK/$1-$3.sum"
}

# VM A: eight points of a 16 MiB disk, each rewriting 16 scattered blocks.
head -c 16M /dev/urandom >"$WORK/a.img"
for i in $(seq 10 17); do
  [ "$i" = 10 ] || rewrite "$WORK/a.img" 16
  [ "$i" = 10 ] && cp "$WORK/a.img" "$WORK/a-first.img"
  add_point "$VMA" "$DA" "202604${i}T000000Z" "$WORK/a.img"
done
# VM B: a clone of A's first image with 8 blocks changed, then three more
# points of its own.
cp "$WORK/a-first.img" "$WORK/b.img"
rewrite "$WORK/b.img" 8
add_point "$VMB" "$DB" 20260420T000000Z "$WORK/b.img"
for i in 21 22 23; do
  rewrite "$WORK/b.img" 16
  add_point "$VMB" "$DB" "202604${i}T000000Z" "$WORK/b.img"
done
rm -f "$WORK"/*.img

# Dedup happened: B's first point stored little of its 16 MiB, and the
# repository holds clearly less than A and an independent copy of B would.
"$CBT_BACKUP" --repo "$TEMPLATE" --json list >"$WORK/list.json"
python3 - "$WORK/list.json" "$VMA" "$VMB" <<'PY' || fail "no deduplication between the VMs"
import json, sys
j = json.load(open(sys.argv[1]))
vms = {v["vm"]: v for v in j["vms"]}
def stored(vm):
    return [sum(d["stored_bytes"] for d in p["disks"]) for p in vms[vm]["points"]]
a, b = stored(sys.argv[2]), stored(sys.argv[3])
total = j["stored"]["total"]
print("stored: A first %d, B first %d; repository %d (A alone %d)" % (a[0], b[0], total, sum(a)))
assert a[0] >= 16 << 20, a
assert b[0] * 8 < a[0], (a[0], b[0])
assert total < sum(a) + sum(b) + (8 << 20), total
PY

points_of() { ls "$REPO/$1" 2>/dev/null | grep -E '^[0-9]{8}T' | tr '\n' ' ' || true; }
points_now() { echo "A: $(points_of "$VMA")B: $(points_of "$VMB")"; }
all_a=$(ls "$TEMPLATE/$VMA" | grep -E '^[0-9]{8}T' | tr '\n' ' ')
all_b=$(ls "$TEMPLATE/$VMB" | grep -E '^[0-9]{8}T' | tr '\n' ' ')
all_points="A: ${all_a}B: ${all_b}"

# check STATE...: after the next commands the points are one of the STATEs
# (the operation finished or had not started: never half done), and the
# repository is clean and complete.
check() {
  # Readers leave an interrupted delete alone; the next writer of the VM
  # finishes it first (a prune that keeps everything only does that).
  run -q list >/dev/null || fail "list failed after a kill"
  run -q prune --vm "$VMA" --keep-last 1000 >/dev/null || fail "prune of A failed after a kill"
  run -q prune --vm "$VMB" --keep-last 1000 >/dev/null || fail "prune of B failed after a kill"
  local out
  out=$(run gc 2>&1) || fail "gc failed after a kill: $out"
  echo "$out" | grep -q '^gc:' || fail "gc said no 'gc:' line: $out"
  echo "$out" | grep -q 'skipped' && fail "gc was skipped with nothing else running: $out"
  local now ok=0 want
  now=$(points_now)
  for want in "$@"; do [ "$now" = "$want" ] && ok=1; done
  [ $ok = 1 ] || fail "after a kill the points are '$now'; want one of: $*"
  local vm
  for vm in "$VMA" "$VMB"; do
    ls -A "$REPO/$vm" | grep -qE '^(journal\.json|\.del-|\.tmp-)' && fail "leftovers: $(ls -A "$REPO/$vm")"
  done
  # gc removed every temporary of the block store.
  out=$(cd "$REPO" && find packs index -mindepth 1 -regextype posix-extended \
    ! -regex 'packs/[0-9a-f]{2}(/[0-9a-f]{16}\.pack)?' ! -regex 'index/[0-9a-f]{16}\.idx')
  [ -z "$out" ] || fail "block store leftovers after gc: $out"
  out=$(run verify 2>&1) || fail "verify found damage after a kill: $out"
  echo "$out" | grep -q '^store: .*, 0 unreferenced' || fail "blocks left unreferenced after gc: $out"
  local ts
  for vm in "$VMA" "$VMB"; do
    local disk=$DA
    [ "$vm" = "$VMB" ] && disk=$DB
    for ts in $(points_of "$vm"); do
      [ "$(run export --vm "$vm" --disk "$disk" --point "$ts" --output - | sha256sum | cut -d' ' -f1)" = \
        "$(cat "$WORK/$vm-$ts.sum")" ] || fail "point $ts of ${vm:0:8} reads back different after a kill"
    done
  done
}

# The state an operation leaves its traces in: the points, what else is in
# the VM directories (journal, locks, .del-* and .tmp-* of a delete), and
# the block store: index files (their names are random, so only their
# count), stray temporaries, and each pack with its allocated size (dead
# blocks punched out).  A kill that leaves a state other than the one before
# and the one after the operation came inside its work.
state() {
  points_now
  (
    cd "$REPO" || exit 1
    ls -A "$VMA" "$VMB" | grep -vE '^[0-9]{8}T' || true
    echo "index: $(ls index | grep -c '\.idx$') other: $(ls index | grep -vc '\.idx$')"
    find packs -type f -printf '%p %b\n' | sort
  )
}

# span_of SRC CMD...: the fastest of three timed runs of CMD on a copy of
# SRC bounds the random kill delay: one slow run (a busy machine) would put
# most kills after the end.  Leaves the state before in $WORK/before and
# the state after in $WORK/after.
span_of() {
  local src=$1 t0 ms best=""
  shift
  for _ in 1 2 3; do
    rm -rf "$REPO"
    cp -a "$src" "$REPO"
    state >"$WORK/before"
    t0=$(date +%s%N)
    "$@" >/dev/null
    ms=$((($(date +%s%N) - t0) / 1000000))
    [ -n "$best" ] && [ "$best" -le "$ms" ] || best=$ms
  done
  state >"$WORK/after"
  echo "$best"
}

# The gc template: every other point of both VMs deleted while a shared
# hold of the store lock made their gc skip, so the blocks they alone read
# (in many packs) wait for the next gc.
cp -a "$TEMPLATE" "$TEMPLATE_GC"
gc_points=$all_points
for d in A:20260410 A:20260412 A:20260414 A:20260416 B:20260420 B:20260422; do
  vm=$VMA
  [ "${d%%:*}" = B ] && vm=$VMB
  ts=${d#*:}T000000Z
  out=$(flock -s "$TEMPLATE_GC/store.lock" "$CBT_BACKUP" --repo "$TEMPLATE_GC" delete --vm "$vm" --point "$ts" 2>&1) ||
    fail "delete $d for the gc template failed: $out"
  echo "$out" | grep -q '^gc: skipped' || fail "delete under a shared store lock did not skip its gc: $out"
  gc_points=${gc_points/$ts /}
done
out=$("$CBT_BACKUP" --repo "$TEMPLATE_GC" verify 2>&1) || fail "the gc template does not verify: $out"
echo "$out" | grep -q '^store: .*, 0 unreferenced' && fail "the deletes left nothing for gc: $out"

# Each operation runs in its own session, so one kill reaches all of it.
B="$CBT_BACKUP --repo $REPO -q"
declare -A CMD SPAN AFTER
# (a) prune of A that folds its base: blocks of that base that B still
# reads stay.
CMD[prune]="$B prune --vm $VMA --keep-last 3"
# (b) delete of B's base, then of a middle point of A: two commands, one kill.
CMD[delete]="$B delete --vm $VMB --point 20260420T000000Z && $B delete --vm $VMA --point 20260414T000000Z"
# (c) gc alone, of what the deletes of the gc template left.
CMD[gc]="$B gc"
for op in prune delete gc; do
  src=$TEMPLATE
  [ $op = gc ] && src=$TEMPLATE_GC
  SPAN[$op]=$(span_of "$src" bash -c "${CMD[$op]}")
  mv "$WORK/before" "$WORK/$op.before"
  mv "$WORK/after" "$WORK/$op.after"
  AFTER[$op]=$(head -n 1 "$WORK/$op.after")
  cmp -s "$WORK/$op.before" "$WORK/$op.after" && fail "$op changed nothing"
done
prune_after=${AFTER[prune]}
delete_after=${AFTER[delete]}
delete_half="A: ${all_a}B: ${all_b/20260420T000000Z /}"
[ "${AFTER[gc]}" = "$gc_points" ] || fail "gc changed the points: ${AFTER[gc]}"
echo "prune takes ${SPAN[prune]} ms (leaves: $prune_after); delete pair ${SPAN[delete]} ms; gc ${SPAN[gc]} ms"
case "$prune_after" in *20260410T000000Z*) fail "prune should fold the base" ;; esac
[ "$prune_after" = "A: 20260415T000000Z 20260416T000000Z 20260417T000000Z B: ${all_b}" ] ||
  fail "prune left unexpected points: $prune_after"

for op in prune delete gc; do
  span=${SPAN[$op]}
  src=$TEMPLATE
  [ $op = gc ] && src=$TEMPLATE_GC
  inside=0
  for _ in $(seq "$ROUNDS"); do
    rm -rf "$REPO"
    cp -a "$src" "$REPO"
    setsid bash -c "${CMD[$op]}" >/dev/null &
    pid=$!
    delay=$((RANDOM % (span + 1)))
    sleep "$((delay / 1000)).$(printf '%03d' $((delay % 1000)))"
    # Kill the whole session (setsid made $pid its leader), and wait until
    # all of it is gone: a process killed inside fsync holds its lock until
    # the call returns.
    kill -9 -- -$pid 2>/dev/null || true
    wait $pid 2>/dev/null || true
    while pgrep -s $pid >/dev/null; do sleep 0.01; done
    state | cmp -s - "$WORK/$op.before" || state | cmp -s - "$WORK/$op.after" || inside=$((inside + 1))
    case $op in
      prune) check "$all_points" "$prune_after" ;;
      delete) check "$all_points" "$delete_half" "$delete_after" ;;
      gc) check "$gc_points" ;;
    esac
  done
  echo "$op: $ROUNDS kill rounds, $inside killed inside the operation"
  [ "$inside" -gt 0 ] || fail "no $op was killed inside its work"
done
echo PASS
