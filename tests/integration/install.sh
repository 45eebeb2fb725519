#!/usr/bin/env bash
# install: "cmake --install --prefix /usr" lays out a system install (programs,
# man pages, bash completions, systemd units, mount.cbtfs, examples) and
# nothing else, with the right modes and the install paths filled in; the man
# pages render without warnings and name every command and option the
# program has; systemd-analyze accepts the units; bash completion offers
# commands, options, job names and the repository's VMs; mount.cbtfs reads
# its arguments as mount(8) gives them, and a repository mounts through
# "mount -t cbtfs" and from an fstab line; cpack makes a .deb holding all
# of it, configured for /usr.
source "$(dirname "$0")/../functions.sh"
requires cmake man scdoc systemd-analyze

# missing WHAT: a part of this test cannot run; a failure in strict mode.
missing() {
  [ "${CBT_TEST_STRICT:-0}" = 1 ] && fail "required part missing in strict mode: $*"
  echo "  skipped: $*"
}
# have TOOL...: true if every TOOL is there, else says what is missing.
have() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || { missing "$c not found"; return 1; }
  done
}
# command_options CMD: the options "cbt-backup CMD --help" lists for CMD,
# but those that carry a positional argument.
command_options() {
  "$BIN/cbt-backup" "$1" --help |
    awk '/ options:$/ && !/^Global/ { on = 1; next } /^Global options:/ { on = 0 } on && /^  -/' |
    { grep -o -- '--[a-z][a-z-]*' || true; } | while read -r opt; do
    case "$1$opt" in umount--dir | import-legacy--source | import-image--image | run--job) continue ;; esac
    echo "$opt"
  done
}

STAGE=$WORK/stage
DESTDIR=$STAGE cmake --install "$CBT_BUILD_DIR" --prefix /usr >"$WORK/install.log" 2>&1 || {
  cat "$WORK/install.log" >&2
  fail "cmake --install failed"
}
BIN=$STAGE/usr/bin
MAN=$STAGE/usr/share/man/man8
UNITS=$STAGE/usr/lib/systemd/system
COMPLETIONS=$STAGE/usr/share/bash-completion/completions
DOC=$STAGE/usr/share/doc/cbt-backup
HELPER=$STAGE/usr/sbin/mount.cbtfs

# 1. Exactly these files, with these modes.
cat >"$WORK/expected.txt" <<'EOF'
755 usr/bin/cbt-backup
755 usr/bin/cbtfs
755 usr/sbin/mount.cbtfs
644 usr/lib/systemd/system/cbt-backup@.service
644 usr/lib/systemd/system/cbt-backup@.timer
644 usr/share/bash-completion/completions/cbt-backup
644 usr/share/bash-completion/completions/cbtfs
644 usr/share/doc/cbt-backup/cbt-backup.conf.example
644 usr/share/doc/cbt-backup/mnt-backups.mount
644 usr/share/man/man8/cbt-backup.8
644 usr/share/man/man8/cbtfs.8
644 usr/share/man/man8/mount.cbtfs.8
EOF
(cd "$STAGE" && find . ! -type d -printf '%m %P\n') | LC_ALL=C sort -k2 >"$WORK/installed.txt"
LC_ALL=C sort -k2 "$WORK/expected.txt" | diff - "$WORK/installed.txt" >&2 ||
  fail "installed files (>) differ from the list (<)"

# Install paths filled in for /usr; nothing names the build or source tree.
grep -qx 'ExecStart=/usr/bin/cbt-backup run %i' "$UNITS/cbt-backup@.service" ||
  fail "ExecStart: $(grep ExecStart "$UNITS/cbt-backup@.service")"
grep -qx 'CBTFS=/usr/bin/cbtfs' "$HELPER" || fail "mount.cbtfs: $(grep '^CBTFS=' "$HELPER")"
grep -rl '@CMAKE_' "$STAGE/usr" --exclude-dir=bin && fail "placeholder left in the files above"
grep -rlF -e "$CBT_BUILD_DIR" -e "$CBT_SOURCE_DIR" "$STAGE/usr" --exclude-dir=bin &&
  fail "the files above name the build or source tree"
[[ $("$BIN/cbt-backup" --version) == "cbt-backup "[0-9]* ]] || fail "cbt-backup --version"
[[ $("$BIN/cbtfs" --version) == "cbtfs "[0-9]* ]] || fail "cbtfs --version"
echo "  ok: layout"

# 2. Man pages: no groff warning, and every command and option the program
# knows is in cbt-backup(8).
for page in "$MAN/cbt-backup.8" "$MAN/cbtfs.8"; do
  warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
  [ -z "$warnings" ] || fail "$page: $warnings"
done
MANWIDTH=80 man -l "$MAN/cbt-backup.8" 2>/dev/null >"$WORK/cbt-backup.txt"
MANPATH=$STAGE/usr/share/man MANWIDTH=80 man mount.cbtfs >"$WORK/mount.cbtfs.txt" 2>&1 || true
grep -q 'cbtfs, mount\.cbtfs - ' "$WORK/mount.cbtfs.txt" ||
  fail "man mount.cbtfs does not show cbtfs(8): $(head -3 "$WORK/mount.cbtfs.txt")"
"$BIN/cbt-backup" --help >"$WORK/help.txt"
awk '/^commands:/ { on = 1; next } on && NF == 0 { exit } on { print $1 }' "$WORK/help.txt" \
  >"$WORK/commands.txt"
[ -s "$WORK/commands.txt" ] || fail "no commands in cbt-backup --help"
while read -r cmd; do
  grep -q "^   $cmd\$" "$WORK/cbt-backup.txt" || fail "cbt-backup(8) has no section for $cmd"
  command_options "$cmd" >"$WORK/options.txt"
  while read -r opt; do
    grep -q -- "$opt" "$WORK/cbt-backup.txt" || fail "cbt-backup(8) does not mention $cmd $opt"
  done <"$WORK/options.txt"
done <"$WORK/commands.txt"
awk '/^Global options:/ { on = 1; next } on && /^  -/' "$WORK/help.txt" |
  grep -o -- '--[a-z][a-z-]*' >"$WORK/options.txt"
while read -r opt; do
  grep -q -- "$opt" "$WORK/cbt-backup.txt" || fail "cbt-backup(8) does not mention $opt"
done <"$WORK/options.txt"
echo "  ok: man pages"

# 3. systemd-analyze verify, on the installed units as they are, but for
# ExecStart: the staged program stands in for /usr/bin/cbt-backup, which
# verify requires to exist.  MANPATH lets it find the Documentation= pages.
mkdir "$WORK/units"
sed "s|^ExecStart=/usr/bin/|ExecStart=$BIN/|" "$UNITS/cbt-backup@.service" >"$WORK/units/cbt-backup@.service"
cp "$UNITS/cbt-backup@.timer" "$DOC/mnt-backups.mount" "$WORK/units/"
rc=0
out=$(cd "$WORK/units" && MANPATH=$STAGE/usr/share/man systemd-analyze verify \
  ./cbt-backup@.service ./cbt-backup@.timer ./mnt-backups.mount 2>&1) || rc=$?
if [ "$rc" != 0 ] || [ -n "$out" ]; then fail "systemd-analyze verify (exit $rc): $out"; fi
echo "  ok: systemd units"

# 4. Bash completion, in a shell of its own (as bash loads it), without and,
# where installed, with the bash-completion package.
for f in "$COMPLETIONS/cbt-backup" "$COMPLETIONS/cbtfs"; do bash -n "$f" || fail "bash -n $f"; done
VM=$(new_uuid)
VDI=$(new_uuid)
POINT=20260301T000000Z
REPO=$WORK/repo
head -c $((8 * 65536)) /dev/urandom >"$WORK/disk.img"
"$BIN/cbt-backup" --repo "$REPO" -q import-image --vm "$VM" --disk "$VDI" --point "$POINT" "$WORK/disk.img"
printf 'repo = %s\n\n[job.weekly-db]\ntag = db\n[job.other_1]\nall = true\n' "$REPO" >"$WORK/config"

# candidates LIBRARY FUNCTION WORD...: what FUNCTION offers for the last
# WORD, one per line, in a shell of its own with the bash-completion LIBRARY
# loaded first unless it is "".  CBT_CONFIG is passed on, CBT_REPO is not.
candidates() {
  local lib=$1 fn=$2 file=${2#_}
  shift 2
  env -u CBT_REPO HOME="$WORK" CBT_CONFIG="${CBT_CONFIG:-}" bash -c '
    lib=$1 file=$2 fn=$3
    shift 3
    [ -z "$lib" ] || source "$lib"
    source "$file"
    COMP_WORDS=("$@")
    COMP_CWORD=$(($# - 1))
    COMP_LINE="$*"
    COMP_POINT=${#COMP_LINE}
    COMPREPLY=()
    "$fn" 2>/dev/null
    printf "%s\n" "${COMPREPLY[@]}"' _ "$lib" "$COMPLETIONS/${file//_/-}" "$fn" "$@"
}
# expect_candidates WANT LIBRARY FUNCTION WORD...: WANT is among them.
expect_candidates() {
  local want=$1 got
  shift
  got=$(candidates "$@")
  grep -qx -- "$want" <<<"$got" || fail "completing '${*:3}' does not offer $want: ${got//$'\n'/ }"
}
libs=("")
if [ -f /usr/share/bash-completion/bash_completion ]; then
  libs+=(/usr/share/bash-completion/bash_completion)
else
  missing "completion with the bash-completion package (not installed)"
fi
for lib in "${libs[@]}"; do
  expect_candidates backup "$lib" _cbt_backup cbt-backup ba
  while read -r cmd; do
    expect_candidates "$cmd" "$lib" _cbt_backup cbt-backup ''
    # Every option of the command, after it.
    command_options "$cmd" >"$WORK/options.txt"
    while read -r opt; do
      expect_candidates "$opt" "$lib" _cbt_backup cbt-backup "$cmd" --
    done <"$WORK/options.txt"
  done <"$WORK/commands.txt"
  expect_candidates --keep-weekly "$lib" _cbt_backup cbt-backup prune --keep-w
  expect_candidates vhd "$lib" _cbt_backup cbt-backup export --format ''
  expect_candidates weekly-db "$lib" _cbt_backup cbt-backup --config "$WORK/config" run ''
  expect_candidates other_1 "$lib" _cbt_backup cbt-backup --config "$WORK/config" run o
  CBT_CONFIG=$DOC/cbt-backup.conf.example expect_candidates nightly "$lib" _cbt_backup cbt-backup run ''
  expect_candidates "$VM" "$lib" _cbt_backup cbt-backup --repo "$REPO" list --vm ''
  expect_candidates "$VM" "$lib" _cbt_backup cbt-backup --config "$WORK/config" verify --vm ''
  expect_candidates latest "$lib" _cbt_backup cbt-backup --repo "$REPO" mount --vm "$VM" --point ''
  expect_candidates "$POINT" "$lib" _cbt_backup cbt-backup --repo "$REPO" export --vm "$VM" --point 2
  expect_candidates "$VDI" "$lib" _cbt_backup cbt-backup --repo "$REPO" export --vm "$VM" --disk ''
  expect_candidates mount "$lib" _cbtfs cbtfs m
  expect_candidates --readahead-kb "$lib" _cbtfs cbtfs mount --r
  expect_candidates allow_other,auto_unmount "$lib" _cbtfs cbtfs mount -o allow_other,au
done
echo "  ok: bash completion (${#libs[@]} way(s))"

# 5. mount.cbtfs reads what mount(8) passes; -f mounts nothing.
MNT=$WORK/mnt
mkdir "$MNT"
out=$("$HELPER" "$REPO" "$MNT" -f -v -o \
  rw,allow_other,nofail,_netdev,x-systemd.automount,comment=a*b,noatime,user,noexec,readahead_kb=1024 2>&1) ||
  fail "mount.cbtfs -f: $out"
[ "$out" = "mount.cbtfs: /usr/bin/cbtfs mount $REPO $MNT -o fsname=$REPO,allow_other,noexec --readahead-kb 1024" ] ||
  fail "mount.cbtfs -f -v: $out"
out=$("$HELPER" -fv "$REPO" "$MNT" -o fsname=backups,ro -t cbtfs.x 2>&1)
[ "$out" = "mount.cbtfs: /usr/bin/cbtfs mount $REPO $MNT -o fsname=backups" ] || fail "fsname given: $out"
[ -z "$("$HELPER" -f "$REPO" "$MNT" 2>&1)" ] || fail "mount.cbtfs -f without -v printed something"
mountpoint -q "$MNT" && fail "mount.cbtfs -f mounted"
for bad in "$REPO" "-x $REPO $MNT" "$REPO $MNT extra" "$REPO $WORK/none" "-N 1 $REPO $MNT" \
  "$REPO $MNT -o readahead_kb=lots" "$REPO $MNT -o"; do
  rc=0
  # shellcheck disable=SC2086  # the words of $bad are the arguments
  "$HELPER" -f $bad >/dev/null 2>&1 || rc=$?
  [ "$rc" = 1 ] || fail "mount.cbtfs -f $bad: exit $rc, expected 1"
done
echo "  ok: mount.cbtfs arguments"

# 6. A real mount through mount(8): the staged helper, pointing at the staged
# cbtfs, stands in /sbin for the test.
if [ "$(id -u)" != 0 ] || [ ! -c /dev/fuse ]; then
  missing "root and /dev/fuse, for a mount through mount(8)"
elif [ -e /sbin/mount.cbtfs ]; then
  echo "  skipped: /sbin/mount.cbtfs exists on this host; it is not replaced"
else
  cleanup_fn "rm -f /sbin/mount.cbtfs"
  sed "s|^CBTFS=.*|CBTFS=$BIN/cbtfs|" "$HELPER" >/sbin/mount.cbtfs
  chmod 755 /sbin/mount.cbtfs
  cleanup_fn "umount '$MNT'; umount '$MNT'"
  mounts() { grep -c " $MNT fuse.cbtfs " /proc/self/mounts || true; }
  mount -t cbtfs -o ro,allow_other,nofail "$REPO" "$MNT" || fail "mount -t cbtfs failed"
  [ "$(findmnt -n -o FSTYPE,SOURCE "$MNT" | tr -s ' ')" = "fuse.cbtfs $REPO" ] ||
    fail "mount table: $(findmnt -n "$MNT")"
  [ "$(readlink "$MNT/$VM/latest")" = "$POINT" ] || fail "latest: $(ls -l "$MNT/$VM")"
  cmp "$MNT/$VM/$POINT/$VDI.raw" "$WORK/disk.img" || fail "the disk under the mount differs"
  # The fstab line reads as mounted: mount -a mounts nothing more.
  printf '%s %s cbtfs ro,allow_other,nofail 0 0\n' "$REPO" "$MNT" >"$WORK/fstab"
  mount -a -T "$WORK/fstab" || fail "mount -a"
  [ "$(mounts)" = 1 ] || fail "mount -a mounted again: $(findmnt "$MNT")"
  umount "$MNT"
  [ "$(mounts)" = 0 ] || fail "still mounted after umount"
  # And mounted from that line.
  mount -T "$WORK/fstab" "$MNT" || fail "mount from the fstab line"
  cmp "$MNT/$VM/$POINT/$VDI.raw" "$WORK/disk.img" || fail "the disk under the fstab mount differs"
  umount "$MNT"
  echo "  ok: mount -t cbtfs, fstab"
fi

# 7. The Debian package.
if have cpack dpkg-deb dpkg-shlibdeps; then
  cpack --config "$CBT_BUILD_DIR/CPackConfig.cmake" -G DEB -B "$WORK/pkg" >"$WORK/cpack.log" 2>&1 || {
    cat "$WORK/cpack.log" >&2
    fail "cpack failed"
  }
  deb=$(ls "$WORK/pkg"/cbt-backup_*.deb)
  dpkg-deb -c "$deb" | awk '{ print $1, $6 }' >"$WORK/deb.txt"
  while read -r mode path; do
    want=-rwxr-xr-x
    [ "$mode" = 644 ] && want=-rw-r--r--
    grep -qx -- "$want ./$path" "$WORK/deb.txt" || fail "the package has no $want ./$path"
  done <"$WORK/expected.txt"
  [ "$(dpkg-deb -f "$deb" Package)" = cbt-backup ] || fail "package name"
  [ "$(dpkg-deb -f "$deb" Section)" = admin ] || fail "section"
  depends=$(dpkg-deb -f "$deb" Depends)
  for d in fuse3 libcurl4 libnbd0 libc6 libfuse3-3; do
    [[ ", $depends," == *", $d"[\ ,]* ]] || fail "Depends lacks $d: $depends"
  done
  dpkg-deb -x "$deb" "$WORK/deb"
  grep -qx 'ExecStart=/usr/bin/cbt-backup run %i' "$WORK/deb/usr/lib/systemd/system/cbt-backup@.service" ||
    fail "the package's service does not run /usr/bin/cbt-backup"
  grep -qx 'CBTFS=/usr/bin/cbtfs' "$WORK/deb/usr/sbin/mount.cbtfs" ||
    fail "the package's mount.cbtfs does not run /usr/bin/cbtfs"
  echo "  ok: $(basename "$deb"), Depends: $depends"
fi
echo PASS
