#!/usr/bin/env bash
# Builds a dracut initramfs with the cloopbox module by another Debian
# release's dracut: tests/qemu/mkdracut.sh run inside a disposable chroot of
# that release's root, where apt has installed its dracut-core.
#
#   tests/qemu/mkdracut-chroot.sh OUT FLAVOUR CLOOPBOX KVER MODROOT ROOT.tar SUITE
#
# FLAVOUR is systemd or shell (mkdracut.sh -f), or systemd-net or shell-net:
# with dracut's network (mkdracut.sh -n; the chroot's apt adds
# dracut-network and isc-dhcp-client); CLOOPBOX the static binary;
# MODROOT the tree holding lib/modules/KVER (hard-linked into the chroot,
# so it must be on the same filesystem as $WORK_DIR, default the directory
# of OUT); ROOT.tar a root of SUITE from tests/qemu/mkdebian.sh (trixie:
# Debian 13, dracut 106 of dracut-ng). The chroot's apt uses the machine's
# mirror (MIRROR, tests/lib/chroot.sh); nothing of the machine's own apt or
# dracut is touched. OUT.version gets the dracut version that built OUT.
# Reruns with the same inputs (by content) reuse OUT.
#
# This is a program, not a scenario file: sourced, it defines nothing.
# shellcheck disable=SC2317
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0
set -euo pipefail
[ $# = 7 ] || { awk 'NR > 1 { if (!/^#/ || /^# shellcheck/) exit; print }' "$0" >&2; exit 2; }
OUT=$1 FLAVOUR=$2 BIN=$(readlink -f "$3") KVER=$4 MODROOT=$(readlink -f "$5") TAR=$(readlink -f "$6") SUITE=$7
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/lib/chroot.sh
. "$repo/tests/lib/chroot.sh"
say() { printf '[mkdracut-chroot] %s\n' "$*" >&2; }
die() { echo "mkdracut-chroot: $*" >&2; exit 1; }
[ -d "$MODROOT/lib/modules/$KVER" ] || die "no modules at $MODROOT/lib/modules/$KVER"

key=$( (cat "$BIN" "$0" "$here/mkdracut.sh"; find "$repo/dracut-module" -type f -print0 | sort -z | xargs -0 cat) |
    sha256sum | cut -c1-32)-$FLAVOUR-$KVER-$SUITE-$(stat -c '%s %Y' "$TAR" | tr ' ' -)
if [ -s "$OUT" ] && [ "$(cat "$OUT.key" 2>/dev/null)" = "$key" ]; then
    exit 0
fi
chroot_open "$(mktemp -d "${WORK_DIR:-$(dirname "$OUT")}/mkdracut-$SUITE.XXXXXX")" "$TAR"
work=$CHROOT_DIR root=$CHROOT
chroot_sources "deb $MIRROR $SUITE main"

pkgs=(dracut-core binutils) net=()
if [ "${FLAVOUR%-net}" != "$FLAVOUR" ]; then
    pkgs+=(dracut-network isc-dhcp-client) net=(-n)
fi
say "apt-get install ${pkgs[*]} in a chroot of $(basename "$TAR") ($SUITE)"
in_root apt-get update -qq > "$work/apt.log" 2>&1 || { tail -n 20 "$work/apt.log" >&2; exit 1; }
in_root apt-get install -y -qq --no-install-recommends "${pkgs[@]}" > "$work/apt.log" 2>&1 ||
    { tail -n 20 "$work/apt.log" >&2; exit 1; }
version=$(in_root dracut --version 2>/dev/null | awk '{ print $2 }')
say "dracut $version ($SUITE)"

# The builder and the module as the tree has them, the binary, and the
# kernel's modules as hard links (depmod in mkdracut.sh only adds files).
mkdir -p "$root/src/tests/qemu" "$root/kmods/lib/modules"
cp "$here/mkdracut.sh" "$root/src/tests/qemu/"
cp -a "$repo/dracut-module" "$root/src/"
cp "$BIN" "$root/src/cloopbox"
cp -al "$MODROOT/lib/modules/$KVER" "$root/kmods/lib/modules/$KVER"
if ! in_root /src/tests/qemu/mkdracut.sh -o /src/initrd.img -f "${FLAVOUR%-net}" -b /src/cloopbox -k "$KVER" -m /kmods \
    -w /src/work "${net[@]}" 2> "$work/mkdracut.err"; then
    cat "$work/mkdracut.err" >&2
    tail -n 30 "$root/src/work/dracut-${FLAVOUR%-net}.log" >&2 2>/dev/null || true
    die "mkdracut.sh failed in the $SUITE chroot"
fi
cat "$work/mkdracut.err" >&2
cp "$root/src/initrd.img" "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$version" > "$OUT.version"
echo "$key" > "$OUT.key"
say "$OUT: $(stat -c %s "$OUT") bytes, dracut $version of $SUITE, $FLAVOUR flavour"
