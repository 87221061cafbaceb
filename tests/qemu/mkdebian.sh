#!/usr/bin/env bash
# Builds, once, a small Debian bookworm root filesystem with systemd as
# init and stores it as an uncompressed tarball (numeric owners, so it
# unpacks the same anywhere). The systemd scenarios and benchmarks unpack
# it and add their own test pieces; nothing scenario-specific is in here.
#
#   tests/qemu/mkdebian.sh OUT.tar
#
# Reruns with OUT present do nothing. Concurrent runs (two worktrees, two
# scenario files) wait for one another on OUT.lock instead of running
# debootstrap twice; the tarball is written under a temporary name and
# renamed, so a reader never sees half of it.
#
# Environment: MIRROR (default http://deb.debian.org/debian), SUITE
# (default bookworm). Needs root, network and debootstrap.

# qemu-test.sh sources every tests/qemu/*.sh for scenarios; this one is a
# program, not a scenario file: sourced, it defines nothing.
# shellcheck disable=SC2317
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0
set -euo pipefail

[ $# = 1 ] || { awk 'NR > 1 { if (!/^#/ || /^# shellcheck/) exit; print }' "$0" >&2; exit 2; }
OUT=$1
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=${SUITE:-bookworm}
PACKAGES=systemd-sysv,udev,kmod,e2fsprogs,procps,util-linux
say() { printf '[mkdebian] %s\n' "$*" >&2; }

[ -s "$OUT" ] && exit 0
[ "$(id -u)" = 0 ] || { echo "mkdebian: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "mkdebian: missing debootstrap (apt-get install debootstrap)" >&2; exit 1; }
dir=$(cd "$(dirname "$OUT")" 2>/dev/null && pwd) || { mkdir -p "$(dirname "$OUT")"; dir=$(cd "$(dirname "$OUT")" && pwd); }
OUT=$dir/$(basename "$OUT")

exec 9> "$OUT.lock"
flock 9
[ -s "$OUT" ] && exit 0 # another run built it while this one waited

tmp=$(mktemp -d "$dir/mkdebian.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
say "debootstrap --variant=minbase $SUITE from $MIRROR (a few minutes)"
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" > "$tmp/debootstrap.log" 2>&1; then
    tail -n 30 "$tmp/debootstrap.log" >&2
    [ ! -f "$root/debootstrap/debootstrap.log" ] || tail -n 30 "$root/debootstrap/debootstrap.log" >&2
    echo "mkdebian: debootstrap failed" >&2
    exit 1
fi

# Small is fast: every byte goes through mkfs, compression and, in the
# guest, the emulated CD. Nothing here is needed to boot or to test.
say "trimming apt lists, caches, docs, man pages and locales"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
    "$root"/var/log/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/lintian "$root"/usr/share/linda "$root"/usr/share/bash-completion \
    "$root"/usr/share/zsh "$root"/usr/share/fish
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
# The host's name and resolver leak in through debootstrap.
echo debian-live > "$root/etc/hostname"
: > "$root/etc/resolv.conf"

tar --numeric-owner --xattrs -C "$root" -cf "$OUT.tmp.$$" .
mv "$OUT.tmp.$$" "$OUT"
say "wrote $OUT: $(du -sh --apparent-size "$OUT" | cut -f1) ($(du -sh "$root" | cut -f1) unpacked)"
