#!/bin/bash
# Makes WORKDIR/rootfs.img once and prints its path: a Debian bookworm
# minbase root filesystem (debootstrap, needs root and network) in a
# 512 MiB ext4 image. Reruns reuse the image (and the unpacked tree).
#
#   bench/rootfs-image.sh WORKDIR
set -euo pipefail

WORK=$1
IMG=$WORK/rootfs.img
MIRROR=${MIRROR:-http://deb.debian.org/debian}
[ -f "$IMG" ] && { echo "$IMG"; exit 0; }
mkdir -p "$WORK"
if [ ! -f "$WORK/rootfs/.complete" ]; then
    [ "$(id -u)" = 0 ] || { echo "rootfs-image: debootstrap needs root" >&2; exit 1; }
    command -v debootstrap >/dev/null || { echo "rootfs-image: apt-get install debootstrap" >&2; exit 1; }
    rm -rf "$WORK/rootfs.tmp"
    debootstrap --variant=minbase bookworm "$WORK/rootfs.tmp" "$MIRROR" >&2
    rm -rf "$WORK/rootfs"
    mv "$WORK/rootfs.tmp" "$WORK/rootfs"
    touch "$WORK/rootfs/.complete"
fi
rm -f "$IMG.tmp"
truncate -s 512M "$IMG.tmp"
mkfs.ext4 -q -F -d "$WORK/rootfs" -E lazy_itable_init=0,lazy_journal_init=0 "$IMG.tmp" >&2
mv "$IMG.tmp" "$IMG"
echo "$IMG"
