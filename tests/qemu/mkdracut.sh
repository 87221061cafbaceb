#!/usr/bin/env bash
# Builds a dracut initramfs with the cloopbox module (dracut-module/50cloopbox)
# for a kernel that is unpacked, not installed, and checks that the image
# really is the flavour asked for.
#
#   tests/qemu/mkdracut.sh -o OUT -f systemd|shell -b CLOOPBOX -k KVER -m MODROOT [-w WORKDIR] [-n]
#
#   -f systemd   systemd in the initrd (dracut's systemd and dracut-systemd
#                modules), as Fedora-style dracut images are
#   -f shell     dracut's own shell init (80base/99base init.sh), no systemd
#   -b FILE      the static cloopbox binary
#   -k KVER      kernel version
#   -m DIR       the tree holding lib/modules/KVER (an unpacked kernel package
#                has no modules.dep: a depmod'ed hard-link copy goes to WORKDIR)
#   -w DIR       scratch space kept between runs (default: a temporary directory)
#   -n           with dracut's network (modules network and network-legacy:
#                ifup and dhclient, Debian package dracut-network, and the
#                NIC drivers of kernel-network-modules), for root=live:URL
#
# The host's dracut (Debian package dracut-core) is used as it is; the module
# is made visible through a private dracutbasedir (links to the host's files
# plus our module), so nothing under /usr/lib/dracut changes.
# qemu-test.sh sources every tests/qemu/*.sh for its scenarios; this one
# is a program, not a scenario file.
# shellcheck disable=SC2317
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

OUT="" FLAVOUR="" BIN="" KVER="" MODROOT="" WORKDIR="" NET=""
while getopts "o:f:b:k:m:w:nh" opt; do
    case $opt in
        o) OUT=$OPTARG ;;
        f) FLAVOUR=$OPTARG ;;
        b) BIN=$OPTARG ;;
        k) KVER=$OPTARG ;;
        m) MODROOT=$OPTARG ;;
        w) WORKDIR=$OPTARG ;;
        n) NET=1 ;;
        h) awk 'NR > 1 { if (!/^#/ || /^# shellcheck/) exit; print }' "$0"; exit 0 ;;
        *) awk 'NR > 1 { if (!/^#/ || /^# shellcheck/) exit; print }' "$0" >&2; exit 2 ;;
    esac
done
die() { echo "mkdracut: $*" >&2; exit 1; }
if [ -z "$OUT" ] || [ -z "$BIN" ] || [ -z "$KVER" ] || [ -z "$MODROOT" ]; then die "-o, -b, -k and -m are required (see -h)"; fi
case $FLAVOUR in systemd | shell) ;; *) die "-f systemd|shell, not '$FLAVOUR'" ;; esac
command -v dracut > /dev/null || die "dracut is missing (apt-get install dracut-core)"
command -v lsinitrd > /dev/null || die "lsinitrd is missing (apt-get install dracut-core)"
[ -x "$BIN" ] || die "$BIN is not an executable"
hostbase=/usr/lib/dracut
[ -d "$hostbase/modules.d" ] || die "no $hostbase/modules.d (apt-get install dracut-core)"

tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
if [ -z "$WORKDIR" ]; then WORKDIR=$tmp; fi
mkdir -p "$WORKDIR"

# Kernel modules with their index. Hard links cost no space, and depmod
# only adds new files, so the original tree is never written to.
srcmods=$MODROOT/lib/modules/$KVER
[ -d "$srcmods" ] || die "no modules at $srcmods"
kroot=$MODROOT
if [ ! -f "$srcmods/modules.dep" ]; then
    kroot=$WORKDIR/kmods
    if [ ! -f "$kroot/lib/modules/$KVER/modules.dep" ]; then
        rm -rf "$kroot"
        mkdir -p "$kroot/lib/modules"
        cp -al "$(cd "$srcmods" && pwd)" "$kroot/lib/modules/$KVER"
        depmod -b "$kroot" "$KVER"
    fi
fi
kmoddir=$(cd "$kroot/lib/modules/$KVER" && pwd)

# A dracutbasedir of links: the host's dracut plus our module.
base=$tmp/dracut
mkdir -p "$base/modules.d"
for f in "$hostbase"/*; do
    [ "$(basename "$f")" = modules.d ] || ln -s "$f" "$base/"
done
for m in "$hostbase"/modules.d/*; do ln -s "$m" "$base/modules.d/"; done
ln -s "$repo/dracut-module/50cloopbox" "$base/modules.d/50cloopbox"

# Only what a live boot needs, named explicitly: dracut's default set
# depends on what the build host has installed (lvm, crypt, network...).
mods=(bash base udev-rules fs-lib cloopbox)
omit=()
if [ "$FLAVOUR" = systemd ]; then
    mods+=(systemd systemd-initrd dracut-systemd systemd-udevd systemd-journald)
fi
# Each present only in some dracut versions: add what exists.
for m in shutdown initqueue systemd-sysusers systemd-tmpfiles; do
    if compgen -G "$base/modules.d/[0-9][0-9]$m" > /dev/null; then
        case $m in systemd-*) [ "$FLAVOUR" = systemd ] && mods+=("$m") ;; *) mods+=("$m") ;; esac
    fi
done
[ "$FLAVOUR" = shell ] && omit=(systemd systemd-initrd dracut-systemd)
# The network handler named, not left to dracut's choice (which depends
# on what the build host has installed): network-legacy (dhclient) in
# dracut 059 (Debian 12) and 106 (Debian 13).
if [ -n "$NET" ]; then
    compgen -G "$base/modules.d/[0-9][0-9]network-legacy" > /dev/null ||
        die "no network-legacy module in $hostbase/modules.d (apt-get install dracut-network)"
    mods+=(network network-legacy)
fi

mkdir -p "$tmp/conf.d"
log=$WORKDIR/dracut-$FLAVOUR.log
if ! CLOOPBOX_BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN") dracutbasedir=$base \
    dracut --force --no-hostonly --no-hostonly-cmdline --no-early-microcode \
    --conf /dev/null --confdir "$tmp/conf.d" \
    --kmoddir "$kmoddir" --modules "${mods[*]}" ${omit[@]:+--omit "${omit[*]}"} \
    --compress gzip "$OUT.tmp" "$KVER" > "$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "dracut failed (log: $log)"
fi

# What did we really get? The image's own listing decides.
# (lsinitrd warns about NUL bytes of the early cpio on stderr: kept quiet
# unless it fails.)
listing=$(lsinitrd "$OUT.tmp" 2> "$tmp/lsinitrd.err") || { cat "$tmp/lsinitrd.err" >&2; die "lsinitrd $OUT.tmp failed"; }
has() { grep -qE "$1" <<< "$listing"; }
has ' usr/bin/cloopbox$' || die "$OUT: no usr/bin/cloopbox in the image"
has 'hooks/cmdline/25-parse-cloopbox.sh$' || die "$OUT: no cloopbox cmdline hook in the image"
has 'kernel/drivers/block/nbd\.ko' || die "$OUT: no nbd module in the image"
if [ -n "$NET" ]; then
    has ' (usr/)?sbin/dhclient$' || die "$OUT: -n, but no dhclient in the image"
    has ' (usr/)?sbin/ifup$' || die "$OUT: -n, but no ifup in the image"
    has 'kernel/drivers/net/virtio_net\.ko' || die "$OUT: -n, but no virtio_net module in the image"
fi
if has ' usr/lib/systemd/systemd$'; then got=systemd; else got=shell; fi
[ "$got" = "$FLAVOUR" ] || die "$OUT: asked for the $FLAVOUR flavour, the image has the $got init"
mv "$OUT.tmp" "$OUT"
echo "mkdracut: wrote $OUT ($FLAVOUR flavour, $(stat -c %s "$OUT") bytes, dracut $(dracut --version 2>/dev/null | awk '{print $2}'))" >&2
