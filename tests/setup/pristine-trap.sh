#!/usr/bin/env bash
# A test of scripts/setup.sh itself, on the trap that broke ./demo.sh on a
# pristine machine: the machine ships qemu-utils from bookworm-backports
# (10.0) while its apt sources list only bookworm, so installing
# qemu-system-x86 (7.2) on its own makes apt remove qemu-utils.
#
# It recreates that machine in a disposable chroot (the Debian root that
# tests/qemu/mkdebian.sh builds once for the systemd scenarios): backports
# is added to the chroot's own sources, qemu-utils installed from it, and
# backports removed again. It first proves the trap is real (a plain
# `apt-get install qemu-system-x86` would remove qemu-utils), then runs the
# real scripts/setup.sh inside the chroot on a list of those two packages
# and checks that both are installed afterwards and both commands work.
# Nothing on the host's own apt configuration is touched.
#
#   tests/setup/pristine-trap.sh        (root; network to Debian's mirror)
# Environment: DEBIAN_TAR (default work/qemu/debian-root.tar), MIRROR (default:
# the host's first URI in /etc/apt/sources.list.d/debian.sources).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DEBIAN_TAR=${DEBIAN_TAR:-$ROOT/work/qemu/debian-root.tar}
# shellcheck source=tests/lib/chroot.sh
. tests/lib/chroot.sh
say() { printf '[pristine-trap] %s\n' "$*" >&2; }
fail() { printf '[pristine-trap] FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (chroot)"
tests/qemu/mkdebian.sh "$DEBIAN_TAR"

chroot_open "$(mktemp -d "$ROOT/work/pristine-trap.XXXXXX")" "$DEBIAN_TAR"
work=$CHROOT_DIR
chroot_dir=$CHROOT

chroot_sources "deb $MIRROR bookworm main" "deb $MIRROR bookworm-backports main"
say "installing qemu-utils from bookworm-backports in the chroot"
in_root apt-get update -qq
in_root apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-utils > "$work/bpo.log" 2>&1 ||
    { tail -n 20 "$work/bpo.log" >&2; fail "could not install qemu-utils from backports"; }
chroot_sources "deb $MIRROR bookworm main" # backports gone, as on the pristine machine
in_root apt-get update -qq
bpo=$(in_root dpkg-query -W -f='${Version}' qemu-utils)
say "qemu-utils $bpo installed; the sources no longer offer it"

# The trap must be real here, or this test proves nothing.
plan=$(in_root apt-get install -s -y --no-install-recommends qemu-system-x86 2>&1 || true)
grep -q '^Remv qemu-utils' <<<"$plan" ||
    fail "the trap did not reproduce: a plain install of qemu-system-x86 would not remove qemu-utils"
say "reproduced: a plain 'apt-get install qemu-system-x86' would remove qemu-utils"

mkdir -p "$chroot_dir/project/scripts"
cp scripts/setup.sh "$chroot_dir/project/scripts/"
printf 'qemu-system-x86  # cmd: qemu-system-x86_64\nqemu-utils       # cmd: qemu-img qemu-io\n' > "$chroot_dir/project/packages.txt"
say "running scripts/setup.sh in the chroot"
in_root env SETUP_PACKAGES=/project/packages.txt bash /project/scripts/setup.sh > "$work/setup.log" 2>&1 ||
    { cat "$work/setup.log" >&2; fail "scripts/setup.sh failed"; }
for pkg in qemu-system-x86 qemu-utils; do
    in_root dpkg-query -W -f='${Status}' "$pkg" | grep -q "install ok installed" || fail "$pkg is not installed after setup"
done
in_root qemu-img --version | head -n1 >&2 || fail "qemu-img does not run"
in_root qemu-system-x86_64 --version | head -n1 >&2 || fail "qemu-system-x86_64 does not run"
echo "pristine-trap: 1 passed, 0 failed"
