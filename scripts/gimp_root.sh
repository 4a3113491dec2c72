#!/usr/bin/env bash
# Build (once) a Debian 13 "trixie" root with GIMP 3 and its Python support, for the GIMP
# plug-in's end-to-end test. Debian 12 ships only GIMP 2.10, which has no Python plug-ins.
# The root is kept between runs on the same machine and rebuilt when absent.
#
#     bash scripts/gimp_root.sh [DIR]      # DIR defaults to $SRGAN_GIMP_ROOT or /var/cache/srgan/trixie-gimp
set -euo pipefail
root="${1:-${SRGAN_GIMP_ROOT:-/var/cache/srgan/trixie-gimp}}"
if [ -f "$root/.srgan-ready" ]; then
  echo "$root"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "building the GIMP 3 root needs root (debootstrap, chroot)" >&2
  exit 1
fi
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
if grep -q " $root/" /proc/mounts; then
  echo "$root: something is still mounted inside it; unmount it before rebuilding" >&2
  exit 1
fi
rm -rf "$root"
mkdir -p "$(dirname "$root")"
debootstrap --variant=minbase trixie "$root" http://deb.debian.org/debian >/dev/null
chroot "$root" apt-get update -qq
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq gimp python3-gi gir1.2-gimp-3.0 >/dev/null
chroot "$root" apt-get clean
touch "$root/.srgan-ready"
echo "$root"
