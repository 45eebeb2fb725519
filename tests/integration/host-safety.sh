#!/usr/bin/env bash
# LABELS: asan
# The host is protected from what it backs up: guest filesystems are mounted
# nosuid,nodev,noexec in a directory private to root; repository files are
# never opened through symbolic links; read-only commands never replay a
# delete journal; plain http:// is refused unless asked for; names from the
# server or a manifest reach the terminal escaped; a password file others can
# read is warned about; cbtfs answers stat from the manifest alone.
source "$(dirname "$0")/../functions.sh"
requires_fuse
requires_loop
requires mkfs.ext4 findmnt python3 sha256sum

VM=$(new_uuid)
VDI=$(new_uuid)
ORIG=$WORK/orig
REPO=$WORK/repo
MNT=$WORK/mnt
P1=20260901T000000Z P2=20260902T000000Z
run() { "$CBT_BACKUP" --repo "$REPO" "$@"; }
fresh() { rm -rf "$REPO"; cp -a "$ORIG" "$REPO"; }
# Whatever is still mounted under $WORK when the test ends (deepest first).
cleanup_fn "awk -v w='$WORK/' 'index(\$2, w) == 1 {print \$2}' /proc/mounts | sort -r | xargs -r -n1 umount -l"
# one_line_fail CMD...: CMD fails with exactly one line; prints it.
one_line_fail() {
  local msg
  msg=$(expect_fail "$@")
  [ "$(echo "$msg" | wc -l)" = 1 ] || fail "'$*': not one line: $msg"
  echo "$msg"
}
mounts_under() { awk -v w="$1/" 'index($2, w) == 1 || $2 == substr(w, 1, length(w) - 1)' /proc/mounts; }
# opens FILE CMD...: how many times FILE (its inode, whatever the path) was
# opened or read while CMD ran; CMD's own output and status are dropped.
opens() {
  python3 - "$@" <<'PY'
import ctypes, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_NONBLOCK)
IN_ACCESS, IN_OPEN = 0x1, 0x20
if fd < 0 or libc.inotify_add_watch(fd, sys.argv[1].encode(), IN_ACCESS | IN_OPEN) < 0:
    sys.exit("inotify: " + os.strerror(ctypes.get_errno()))
subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    data = os.read(fd, 65536)
except BlockingIOError:
    data = b""
print(len(data) // 16 if data else 0)  # events without names are 16 bytes
PY
}

# A guest filesystem holding a set-uid program and a device node.
mkdir -p "$WORK/guest"
cp /bin/true "$WORK/guest/tool"
chmod 4755 "$WORK/guest/tool"
mknod -m 666 "$WORK/guest/null" c 1 3
echo "hello from the guest" >"$WORK/guest/hello.txt"
truncate -s 16M "$WORK/disk.img"
mkfs.ext4 -q -F -d "$WORK/guest" "$WORK/disk.img"
"$CBT_BACKUP" --repo "$ORIG" -q import-image --vm "$VM" --disk "$VDI" --point $P1 "$WORK/disk.img"
mkdir -p "$WORK/fs"
mount -o loop "$WORK/disk.img" "$WORK/fs"
head -c 200k /dev/urandom >"$WORK/fs/second.bin"
umount "$WORK/fs"
"$CBT_BACKUP" --repo "$ORIG" -q import-image --vm "$VM" --disk "$VDI" --point $P2 "$WORK/disk.img"
cp "$WORK/disk.img" "$WORK/p2.img"

# --- 1. cbt-backup mount -----------------------------------------------------------
fresh
# check_mounted DIR: DIR is root's, 0700, and every guest filesystem in it is
# nosuid,nodev,noexec (in the options and in effect).
check_mounted() {
  local dir=$1 n=0 target opts
  [ "$(stat -c '%a %u %F' "$dir")" = "700 0 directory" ] ||
    fail "mount directory $dir is $(stat -c '%a %u %F' "$dir"), want 700 0 directory"
  while read -r target; do
    [ "$target" = "$dir/.cbtfs" ] && continue
    opts=$(findmnt -no OPTIONS "$target")
    for o in ro nosuid nodev noexec; do
      echo ",$opts," | grep -q ",$o," || fail "$target mounted without $o: $opts"
    done
    n=$((n + 1))
  done < <(mounts_under "$dir" | awk '{print $2}')
  [ $n -ge 1 ] || fail "nothing mounted in $dir"
  grep -q "hello from the guest" "$dir/$VDI/hello.txt" || fail "guest file not readable in $dir"
  "$dir/$VDI/tool" 2>/dev/null && fail "a guest program ran from $dir (noexec)"
  head -c 1 "$dir/$VDI/null" >/dev/null 2>&1 && fail "a guest device node opened in $dir (nodev)"
  return 0
}
# The default directory (under $TMPDIR).
out=$(TMPDIR=$WORK run mount --vm "$VM" --point latest 2>"$WORK/mount.err") ||
  fail "mount: $(cat "$WORK/mount.err")"
dir=$(echo "$out" | tail -n 1)
case $dir in "$WORK"/cbt-backup-*) ;; *) fail "mount did not use \$TMPDIR: $out" ;; esac
check_mounted "$dir"
run umount "$dir" >/dev/null 2>&1 || fail "umount $dir failed"
[ -e "$dir" ] && fail "umount left $dir"
[ -z "$(mounts_under "$dir")" ] || fail "umount left mounts under $dir"
# A --dir that does not exist yet, and an existing empty one of mode 0755.
mkdir -m 755 "$WORK/m755"
for dir in "$WORK/new/sub" "$WORK/m755"; do
  run mount --vm "$VM" --point $P1 --dir "$dir" >/dev/null 2>"$WORK/mount.err" ||
    fail "mount --dir $dir: $(cat "$WORK/mount.err")"
  check_mounted "$dir"
  run umount "$dir" >/dev/null 2>&1 || fail "umount $dir failed"
  [ -z "$(mounts_under "$dir")" ] || fail "umount left mounts under $dir"
done
# Refused: a symbolic link to a directory, a directory of another user, one
# that others can write, one that is not empty.
mkdir -m 700 "$WORK/real" "$WORK/theirs" "$WORK/full"
ln -s "$WORK/real" "$WORK/link"
chown 65534 "$WORK/theirs"
mkdir -m 777 "$WORK/open"
touch "$WORK/full/x"
for dir in "$WORK/link" "$WORK/theirs" "$WORK/open" "$WORK/full"; do
  msg=$(one_line_fail run mount --vm "$VM" --point $P1 --dir "$dir")
  echo "$msg" | grep -qF "$dir" || fail "mount --dir $dir: the error does not name it: $msg"
  [ -z "$(mounts_under "$dir")" ] || fail "mount --dir $dir was refused but mounted something"
done
[ -z "$(mounts_under "$WORK/real")" ] && [ -z "$(ls -A "$WORK/real")" ] || fail "mount went through the link"
[ "$(stat -c '%a %u' "$WORK/real" "$WORK/theirs" "$WORK/open")" = "$(printf '700 0\n700 65534\n777 0')" ] ||
  fail "a refused directory was changed: $(stat -c '%n %a %u' "$WORK/real" "$WORK/theirs" "$WORK/open")"
[ -z "$(mounts_under "$WORK")" ] || fail "mounts left: $(mounts_under "$WORK")"

# --- 2. no repository file is opened through a symbolic link ------------------------
# (a) A manifest that is a link to a valid copy elsewhere.
fresh
mkdir -p "$WORK/elsewhere"
M=$REPO/$VM/$P2/manifest.json
cp "$M" "$WORK/elsewhere/manifest.json"
ln -sf "$WORK/elsewhere/manifest.json" "$M"
[ "$(opens "$WORK/elsewhere/manifest.json" cat "$M")" -gt 0 ] || fail "opens() does not see an open"
msg=$(one_line_fail run list)
echo "$msg" | grep -qF "$M" || fail "list does not name the linked manifest: $msg"
echo "$msg" | grep -q "symbolic link" || fail "list does not say why: $msg"
out=$(run verify 2>&1) && fail "verify passed with a linked manifest"
echo "$out" | grep -qF "$M" || fail "verify does not name the linked manifest: $out"
for cmd in "list" "list --json" "verify" "export --vm $VM --point $P2 --disk $VDI --output $WORK/out.raw"; do
  # shellcheck disable=SC2086
  n=$(opens "$WORK/elsewhere/manifest.json" "$CBT_BACKUP" --repo "$REPO" $cmd)
  [ "$n" = 0 ] || fail "'$cmd' read the manifest through the link ($n events)"
done
rm -f "$WORK/out.raw"

# (b) The VM's lock file is a link to a file outside: writers refuse it and
# neither truncate nor write the target, nor create a missing one.
fresh
echo "precious, not a lock" >"$WORK/x"
touch -d @1000000000 "$WORK/x"
ln -s "$WORK/x" "$REPO/$VM/lock"
before=$(ls "$REPO/$VM")
for cmd in "import-image --vm $VM --disk $VDI --point 20260903T000000Z $WORK/disk.img" \
  "prune --vm $VM --keep-last 1" "delete --vm $VM --point $P1"; do
  # shellcheck disable=SC2086
  msg=$(one_line_fail run $cmd)
  echo "$msg" | grep -q "symbolic link" || fail "'$cmd' with a linked lock: $msg"
  echo "$msg" | grep -qF "$REPO/$VM/lock" || fail "'$cmd' does not name the lock: $msg"
done
[ "$(cat "$WORK/x")" = "precious, not a lock" ] || fail "the lock's link target was written"
[ "$(stat -c '%s %Y' "$WORK/x")" = "21 1000000000" ] || fail "the lock's link target was modified"
[ "$(ls "$REPO/$VM")" = "$before" ] || fail "a writer changed the VM directory past a linked lock"
rm "$REPO/$VM/lock"
ln -s "$WORK/not-there" "$REPO/$VM/lock"
expect_fail run prune --vm "$VM" --keep-last 1 >/dev/null
[ -e "$WORK/not-there" ] && fail "a linked lock created its target"
rm "$REPO/$VM/lock"

# (c) A point directory (or a VM directory) that is a link is no point.
fresh
ln -s $P1 "$REPO/$VM/20260905T000000Z"
ln -s "$ORIG/$VM" "$REPO/$(new_uuid)"
run list --json >"$WORK/list.json" || fail "list fails with a linked point directory"
python3 - "$WORK/list.json" "$VM" $P1 $P2 <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert [v["vm"] for v in d["vms"]] == [sys.argv[2]], d["vms"]
pts = [p["point"] for p in d["vms"][0]["points"]]
assert pts == sys.argv[3:], pts
PY
mount_cbtfs "$REPO" "$MNT"
[ -e "$MNT/$VM/20260905T000000Z" ] && fail "cbtfs shows a linked point directory"
[ "$(ls "$MNT" | wc -l)" = 1 ] || fail "cbtfs shows a linked VM directory: $(ls "$MNT")"
umount_cbtfs "$MNT"

# (d) A data file that is a link to a valid copy.
fresh
F=$REPO/$VM/$P1/$VDI.cbd
cp "$F" "$WORK/elsewhere/data.cbd"
ln -sf "$WORK/elsewhere/data.cbd" "$F"
out=$(run verify 2>&1) && fail "verify passed with a linked data file"
echo "$out" | grep -qF "$F" || fail "verify does not name the linked data file: $out"
msg=$(one_line_fail run export --vm "$VM" --point $P2 --disk "$VDI" --output "$WORK/out.raw")
echo "$msg" | grep -qF "$F" || fail "export does not name the linked data file: $msg"
for cmd in "verify" "export --vm $VM --point $P2 --disk $VDI --output $WORK/out.raw"; do
  # shellcheck disable=SC2086
  n=$(opens "$WORK/elsewhere/data.cbd" "$CBT_BACKUP" --repo "$REPO" $cmd)
  [ "$n" = 0 ] || fail "'$cmd' read the data file through the link ($n events)"
done
rm -f "$WORK/out.raw"

# --- 3. read-only commands never replay a delete journal -------------------------------
fresh
run export --vm "$VM" --point $P2 --disk "$VDI" --output "$WORK/p2.before" -q
cmp "$WORK/p2.before" "$WORK/p2.img" || fail "point 2 does not export the image"
printf '{"version": 1, "operation": "delete", "delete": ["%s"], "started": "20260904T000000Z"}\n' $P1 \
  >"$REPO/$VM/journal.json"
sums() { (cd "$REPO" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum; }
before=$(sums)
run list >/dev/null 2>"$WORK/list.err" || fail "list fails with a journal: $(cat "$WORK/list.err")"
grep -q "interrupted" "$WORK/list.err" && grep -qF "$REPO/$VM/journal.json" "$WORK/list.err" ||
  fail "list does not warn about the interrupted delete: $(cat "$WORK/list.err")"
run list --json >/dev/null 2>&1 || fail "list --json fails with a journal"
run -q verify 2>/dev/null || fail "verify fails with a journal"
run -q export --vm "$VM" --point $P1 --disk "$VDI" --output "$WORK/p1.raw" 2>/dev/null ||
  fail "export of the journalled point fails"
run -q export --vm "$VM" --point $P2 --disk "$VDI" --output "$WORK/out.raw" 2>/dev/null ||
  fail "export fails with a journal"
cmp "$WORK/out.raw" "$WORK/p2.img" || fail "export of point 2 differs with a journal"
mount_cbtfs "$REPO" "$MNT"
cmp "$MNT/$VM/$P1/$VDI.raw" "$WORK/p1.raw" || fail "cbtfs: point 1 differs with a journal"
cmp "$MNT/$VM/$P2/$VDI.raw" "$WORK/p2.img" || fail "cbtfs: point 2 differs with a journal"
umount_cbtfs "$MNT"
[ -d "$REPO/$VM/$P1" ] || fail "a read-only command replayed the journal: $P1 is gone"
[ -f "$REPO/$VM/journal.json" ] || fail "a read-only command removed the journal"
[ "$(sums)" = "$before" ] || fail "a read-only command changed the repository"
# A writer finishes the delete; point 2 still gives the same bytes.
run -q prune --vm "$VM" --keep-last 5 2>/dev/null || fail "prune did not finish the journal"
[ -e "$REPO/$VM/$P1" ] && fail "prune did not finish the delete of $P1"
[ -e "$REPO/$VM/journal.json" ] && fail "prune left the journal"
run -q export --vm "$VM" --point $P2 --disk "$VDI" --output "$WORK/out.raw"
cmp "$WORK/out.raw" "$WORK/p2.img" || fail "point 2 changed when the journal was finished"
rm -f "$WORK/out.raw" "$WORK/p1.raw" "$WORK/p2.before"

# --- 4. plain http:// ------------------------------------------------------------------
start_sim
REPO=$WORK/repo  # cbt() writes here
rm -rf "$REPO"
sessions() { "$SIMCTL" sessions | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
head -c $((4 * 65536)) /dev/urandom >"$WORK/v.img"
"$SIMCTL" create-vm plain --disk "$WORK/v.img" >"$WORK/plain.json"
PLAIN=$(json_get "$WORK/plain.json" uuid)
[ "$(sessions)" = 0 ] || fail "the simulator has sessions before any login"
msg=$(one_line_fail "$CBT_BACKUP" --server "$SIM_HTTP_URL" --password-file "$WORK/pw" --repo "$REPO" \
  backup --vm "$PLAIN")
echo "$msg" | grep -q -- "--allow-plaintext" || fail "http:// refused without naming --allow-plaintext: $msg"
[ "$(sessions)" = 0 ] || fail "a login happened over plain http://"
# --- 6. (with 4) a password file others can read is warned about -------------------------
cp "$WORK/pw" "$WORK/pw644"
chmod 644 "$WORK/pw644"
"$CBT_BACKUP" --server "$SIM_HTTP_URL" --allow-plaintext --password-file "$WORK/pw644" --repo "$REPO" \
  -q backup --vm "$PLAIN" >/dev/null 2>"$WORK/plain.err" || fail "--allow-plaintext backup: $(cat "$WORK/plain.err")"
[ "$(sessions)" -ge 1 ] || fail "no session after the --allow-plaintext backup"
[ "$(run list --json | json_get - vms.0.vm)" = "$PLAIN" ] || fail "no point after the --allow-plaintext backup"
[ "$(grep -c "chmod 600" "$WORK/plain.err")" = 1 ] ||
  fail "no (or more than one) warning about a password file of mode 0644: $(cat "$WORK/plain.err")"
grep "chmod 600" "$WORK/plain.err" | grep -qF "$WORK/pw644" || fail "the warning does not name the file"

# --- 5. names from the server are printed escaped ----------------------------------------
# xapi drops C0 controls other than TAB, LF and CR from XML-RPC (the simulator
# too), so the server can send LF, TAB, DEL and C1 controls such as CSI
# (U+009B); ESC comes in through a manifest below.
NAME=$(printf 'evil\033[31mRED\302\23331m\177\tT\nFAKE: injected line')
"$SIMCTL" create-vm "$NAME" --disk "$WORK/v.img" >"$WORK/evil.json"
EVIL=$(json_get "$WORK/evil.json" uuid)
cbt backup --vm "$EVIL" >"$WORK/evil.out" 2>"$WORK/evil.err" || fail "backup: $(cat "$WORK/evil.err")"
grep -q "chmod 600" "$WORK/evil.err" && fail "a warning about a password file of mode 0600"
# raw_free FILE...: no raw ESC, C1 control or DEL, and no line forged by a newline.
raw_free() {
  python3 - "$@" <<'PY'
import sys
for f in sys.argv[1:]:
    b = open(f, "rb").read()
    for bad in (b"\x1b", b"\xc2\x9b", b"\x7f"):
        assert bad not in b, "%s: raw %r in %r" % (f, bad, b)
    assert not any(l.startswith(b"FAKE") for l in b.split(b"\n")), "%s: forged line in %r" % (f, b)
PY
}
raw_free "$WORK/evil.out" "$WORK/evil.err" || fail "backup printed a raw server name"
grep -qF 'RED\xc2\x9b31m\x7f\x09T\x0aFAKE: injected line' "$WORK/evil.err" ||
  fail "backup does not print the name escaped: $(cat "$WORK/evil.err")"
EP=$(run list --json | python3 -c 'import json,sys; print([v for v in json.load(sys.stdin)["vms"] if v["vm"]==sys.argv[1]][0]["points"][0]["point"])' "$EVIL")
mount_cbtfs "$REPO" "$MNT"
cp "$MNT/$EVIL/$EP/point.txt" "$WORK/evil.txt"
umount_cbtfs "$MNT"
raw_free "$WORK/evil.txt" || fail "cbtfs point.txt holds a raw server name"
grep -qF '\x0aFAKE: injected line disk 0' "$WORK/evil.txt" || fail "point.txt lacks the escaped disk name"

# ESC in names read from a manifest (the repository is data from elsewhere too).
REPO=$WORK/repo-esc
rm -rf "$REPO"
cp -a "$ORIG" "$REPO"
for p in $P1 $P2; do
  python3 - "$REPO/$VM/$p/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m["vm_name"] = "vm\x1b]0;owned\x07\x1b[2J\nFAKE: vm line"
m["disks"][0]["name"] = "disk\x1b[31m\nFAKE: disk line"
json.dump(m, open(sys.argv[1], "w"))
PY
done
mount_cbtfs "$REPO" "$MNT"
cp "$MNT/$VM/$P2/point.txt" "$WORK/esc.txt"
umount_cbtfs "$MNT"
raw_free "$WORK/esc.txt" || fail "cbtfs point.txt holds a raw ESC from a manifest"
grep -qF 'disk\x1b[31m\x0aFAKE: disk line' "$WORK/esc.txt" && grep -qF 'vm\x1b]0;owned\x07' "$WORK/esc.txt" ||
  fail "point.txt does not show the names escaped: $(cat "$WORK/esc.txt")"
run list >"$WORK/esc.list" 2>&1 || fail "list: $(cat "$WORK/esc.list")"
raw_free "$WORK/esc.list" || fail "list prints a raw VM name from a manifest: $(cat -A "$WORK/esc.list")"
grep -qF 'vm\x1b]0;owned\x07' "$WORK/esc.list" || fail "list does not show the VM name escaped"
REPO=$WORK/repo
run list >"$WORK/evil.list" 2>&1 || fail "list: $(cat "$WORK/evil.list")"
raw_free "$WORK/evil.list" || fail "list prints a raw server name: $(cat -A "$WORK/evil.list")"

# --- 7. cbtfs answers stat without opening the image --------------------------------------
REPO=$WORK/repo
for how in header delete; do
  fresh
  case $how in
    header) printf 'XXXXXXXX' | dd of="$REPO/$VM/$P1/$VDI.cbd" conv=notrunc status=none ;;
    delete) rm "$REPO/$VM/$P1/$VDI.cbd" ;;
  esac
  mount_cbtfs "$REPO" "$MNT"
  for p in $P1 $P2; do
    size=$(stat -c %s "$MNT/$VM/$p/$VDI.raw") || fail "$how: stat of point $p's disk failed"
    [ "$size" = $((16 << 20)) ] || fail "$how: point $p's disk has size $size"
    rc=0
    err=$(dd if="$MNT/$VM/$p/$VDI.raw" of=/dev/null bs=64k count=1 2>&1) || rc=$?
    [ $rc -ne 0 ] || fail "$how: point $p's disk read without error"
    echo "$err" | grep -q "Input/output error" || fail "$how: reading point $p's disk: want EIO, got: $err"
  done
  umount_cbtfs "$MNT"
done
echo PASS
