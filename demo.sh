#!/usr/bin/env bash
# The main job: builds the static cloopbox, compresses a sample ext4
# filesystem image into a cloop image, and reads it back through the
# reference peers (Debian's cloop-utils and QEMU's cloop driver) and through
# cloopbox itself, checking that every path gives the original bytes. Then
# it builds a demo live ISO (an iso9660 root inside cloop, as Knoppix ships
# it) with initramfs/mklive.sh and boots it in QEMU with cloopbox as the
# initramfs /init.
#
# Usage: ./demo.sh [-i|--interactive]   (-i: a shell in the booted live system)
set -euo pipefail
cd "$(dirname "$0")"
WORK=${WORK:-$PWD/work/demo}
INTERACTIVE=()
case "${1:-}" in
    -i | --interactive) INTERACTIVE=(--interactive) ;;
    "") ;;
    *) awk 'NR > 1 { if (!/^#/ || /^# shellcheck/) exit; print }' "$0"; exit 2 ;;
esac
mkdir -p "$WORK"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

say "setup and static build"
scripts/setup.sh
BIN=$(scripts/build-static.sh)
ls -l "$BIN" >&2
# The initramfs's binary: the boot build, without the writer (README "Boot build").
BOOT_BIN=$(scripts/build-static.sh --boot)
ls -l "$BOOT_BIN" >&2
"$BOOT_BIN" --version >&2

say "a sample filesystem: an ext4 image holding /usr/share/doc and /usr/share/man"
IMG=$WORK/sample.ext4
if [ ! -f "$IMG" ]; then
    rm -rf "$WORK/tree" && mkdir -p "$WORK/tree"
    cp -a /usr/share/doc /usr/share/man "$WORK/tree/" 2>/dev/null || true
    # Room for the files plus half again for metadata; whole MiB, so the
    # image is a whole number of 64 KiB blocks and reads back bit-exact.
    mib=$(($(du -sm "$WORK/tree" | cut -f1) * 3 / 2 + 16))
    truncate -s "${mib}M" "$IMG.tmp"
    mkfs.ext4 -q -F -L cloopdemo -d "$WORK/tree" "$IMG.tmp"
    mv "$IMG.tmp" "$IMG"
fi

say "compress with cloopbox create_compressed_fs"
"$BIN" create_compressed_fs -B 65536 "$IMG" "$WORK/sample.cloop"
"$BIN" cloopinfo "$WORK/sample.cloop"

check() { # NAME FILE
    if cmp -s "$IMG" "$2"; then
        printf '  %-44s identical\n' "$1" >&2
    else
        printf '  %-44s DIFFERENT\n' "$1" >&2
        exit 1
    fi
}

say "read it back"
extract_compressed_fs "$WORK/sample.cloop" "$WORK/back.cloop-utils" 2>/dev/null
check "cloop-utils extract_compressed_fs" "$WORK/back.cloop-utils"
qemu-img convert -f cloop -O raw "$WORK/sample.cloop" "$WORK/back.qemu"
check "qemu-img convert -f cloop" "$WORK/back.qemu"
"$BIN" extract_compressed_fs -q "$WORK/sample.cloop" "$WORK/back.cloopbox"
check "cloopbox extract_compressed_fs" "$WORK/back.cloopbox"
"$BIN" cloopinfo --verify "$WORK/sample.cloop" >/dev/null
printf '  %-44s every block decodes\n' "cloopbox cloopinfo --verify" >&2
rm -f "$WORK"/back.*

say "compression round trip done: $(stat -c %s "$IMG") bytes -> $(stat -c %s "$WORK/sample.cloop") bytes"

say "boot the demo live ISO (a hybrid BIOS/UEFI ISO made by initramfs/mklive.sh) in QEMU (Debian kernel, TCG; cloopbox is /init)"
./qemu-test.sh "${INTERACTIVE[@]}" cd-iso9660
if [ ${#INTERACTIVE[@]} -eq 0 ]; then
    say "what the live system reported on its console"
    grep -aE "^cloopbox: (medium|/run|switching)|^(ROOT-UP|ROOTFS|NBDMOUNT|COWMOUNT|DAEMON|WRITE|CHECKS-DONE)" \
        work/qemu/logs/cd-iso9660.log | tr -d '\r' >&2
    say "run ./demo.sh --interactive for a shell in the live system"
fi
