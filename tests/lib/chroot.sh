# shellcheck shell=bash
# A disposable chroot of a Debian root tarball, for tests that run apt and
# dpkg inside a Debian system without touching the machine's own
# (tests/setup/pristine-trap.sh, tests/qemu/mkinitramfs-tools.sh). Sourced.
#
#   chroot_open DIR TARBALL   unpack TARBALL into DIR/root, mount /proc, /sys,
#                             /dev and /dev/pts there, copy the resolver, and
#                             remove it all (DIR too) when the shell exits
#   in_root COMMAND...        run COMMAND inside, with a clean environment
#   chroot_sources LINE...    the chroot's apt sources, one LINE each
# CHROOT is the root's path. MIRROR defaults to the machine's own mirror.
MIRROR=${MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

chroot_open() {
    CHROOT_DIR=$1
    CHROOT=$1/root
    trap chroot_close EXIT
    mkdir -p "$CHROOT"
    tar -xf "$2" -C "$CHROOT"
    mount -t proc proc "$CHROOT/proc"
    mount -t sysfs sys "$CHROOT/sys"
    mount --bind /dev "$CHROOT/dev"
    mount --bind /dev/pts "$CHROOT/dev/pts"
    cp /etc/resolv.conf "$CHROOT/etc/resolv.conf" 2>/dev/null || true
}

chroot_close() {
    local m
    for m in dev/pts dev proc sys; do umount "$CHROOT/$m" 2>/dev/null || true; done
    rm -rf "$CHROOT_DIR"
}

in_root() {
    chroot "$CHROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"
}

chroot_sources() {
    rm -f "$CHROOT"/etc/apt/sources.list.d/*
    printf '%s\n' "$@" > "$CHROOT/etc/apt/sources.list"
}
