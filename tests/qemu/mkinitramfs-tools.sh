#!/usr/bin/env bash
# Builds an initramfs the Debian way, with Debian's own initramfs-tools and
# the cloopbox Debian package installed, for the initramfs-tools scenario:
#
#   tests/qemu/mkinitramfs-tools.sh OUT.initrd KERNEL.deb CLOOPBOX.deb DEBIAN.tar
#
# DEBIAN.tar is the root tests/qemu/mkdebian.sh builds (bookworm, systemd).
# In a disposable chroot of it: apt installs initramfs-tools, then our .deb
# (dpkg -i), then the kernel package, whose postinst runs update-initramfs
# as on any Debian system; OUT is the /boot/initrd.img-KVER that made.
# Checks that the image holds our binary, hook result and boot script.
# Reruns with the same inputs (by content) reuse OUT. Needs root and the
# Debian mirror (MIRROR, default the host's first debian.sources URI).
#
# This is a program, not a scenario file: sourced, it defines nothing.
# shellcheck disable=SC2317
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0
set -euo pipefail
[ $# = 4 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
OUT=$1 KDEB=$(readlink -f "$2") CDEB=$(readlink -f "$3") TAR=$(readlink -f "$4")
# shellcheck source=tests/lib/chroot.sh
. "$(dirname "$0")/../lib/chroot.sh"
say() { printf '[mkinitramfs-tools] %s\n' "$*" >&2; }

key=$(cat "$KDEB" "$CDEB" "$0" | sha256sum | cut -c1-32)-$(stat -c '%s %Y' "$TAR" | tr ' ' -)
if [ -s "$OUT" ] && [ "$(cat "$OUT.key" 2>/dev/null)" = "$key" ]; then
    exit 0
fi
chroot_open "$(mktemp -d "${TMPDIR:-/tmp}/mkinitramfs-tools.XXXXXX")" "$TAR"
work=$CHROOT_DIR root=$CHROOT
chroot_sources "deb $MIRROR bookworm main"
cp "$KDEB" "$root/tmp/kernel.deb"
cp "$CDEB" "$root/tmp/cloopbox.deb"

say "apt-get install initramfs-tools in a chroot of $(basename "$TAR")"
in_root apt-get update -qq
in_root apt-get install -y -qq --no-install-recommends initramfs-tools > "$work/apt.log" 2>&1 ||
    { tail -n 20 "$work/apt.log" >&2; exit 1; }
say "dpkg -i $(basename "$CDEB")"
in_root dpkg -i /tmp/cloopbox.deb > "$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; exit 1; }
say "apt-get install $(basename "$KDEB") (its postinst runs update-initramfs)"
in_root apt-get install -y -qq --no-install-recommends /tmp/kernel.deb > "$work/kernel.log" 2>&1 ||
    { tail -n 30 "$work/kernel.log" >&2; exit 1; }
initrd=$(find "$root/boot" -maxdepth 1 -name 'initrd.img-*' | head -n1)
[ -n "$initrd" ] || { tail -n 30 "$work/kernel.log" >&2; echo "mkinitramfs-tools: no /boot/initrd.img-* was made" >&2; exit 1; }
list=$(in_root lsinitramfs "/boot/$(basename "$initrd")")
for f in usr/bin/cloopbox scripts/cloopbox; do
    grep -qx "$f" <<<"$list" || { echo "mkinitramfs-tools: $f is not in $(basename "$initrd")" >&2; exit 1; }
done
grep -q '/nbd.ko' <<<"$list" || { echo "mkinitramfs-tools: nbd.ko is not in $(basename "$initrd")" >&2; exit 1; }
cp "$initrd" "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$key" > "$OUT.key"
say "$OUT: $(stat -c %s "$OUT") bytes, made by Debian's update-initramfs"
