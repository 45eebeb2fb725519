#!/usr/bin/env bash
# Installs every Debian 12 package that the build, the tests and the demo
# need.  Run as root (or through sudo).  Safe to run again.
set -euo pipefail
PACKAGES=(
  cmake g++ make pkg-config clang-format
  libfuse3-dev fuse3 libnbd-dev libnbd-bin nbdkit
  libcurl4-openssl-dev libpugixml-dev libboost-program-options-dev
  catch2 nlohmann-json3-dev libxxhash-dev libzstd-dev libssl-dev
  python3 openssl gnutls-bin e2fsprogs util-linux qemu-utils bc b3sum
  fdisk gdisk lvm2 xfsprogs libmount-dev
  scdoc man-db systemd dpkg-dev bash-completion
  ceph-mon ceph-osd ceph-base ceph-common radosgw
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
