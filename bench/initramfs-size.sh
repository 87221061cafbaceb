#!/usr/bin/env bash
# Where the bytes of the live initramfs are: builds it with
# initramfs/mkinitramfs.sh (uncompressed), then prints what each part
# costs on its own compressed by gzip -9, xz -9 --check=crc32 (as mkinitramfs.sh) and
# zstd -19, and the whole archive in each format.
#
#   bench/initramfs-size.sh [-b BINARY] [-k KVER -m MODROOT] [-s BUSYBOX]
#
# Defaults: scripts/build-static.sh --boot's binary (the boot build), the Debian 12 kernel the QEMU
# tests unpack (work/qemu/kernel/pkg, KVER from work/qemu/kernel/version),
# the rescue busybox of scripts/build-busybox.sh (mkinitramfs.sh's own
# default; -s /bin/busybox for Debian's busybox-static). Parts: the binary, busybox, the module files grouped by
# their directory under kernel/ (fs/NAME, drivers/NAME, the rest as
# "lib, crypto, block"), and the module indexes. The parts are compressed
# one by one, so their sum is a little more than the whole archive (one
# stream finds matches across parts). Results: BENCHMARKS.md, "Initramfs
# size".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BIN="" KVER="" MODROOT="" BUSYBOX=""
while getopts "b:k:m:s:h" opt; do
    case $opt in
        b) BIN=$OPTARG ;;
        k) KVER=$OPTARG ;;
        m) MODROOT=$OPTARG ;;
        s) BUSYBOX=$OPTARG ;;
        *) awk 'NR > 1 { if (!/^#/ || /^# shellcheck/) exit; print }' "$0"; exit 2 ;;
    esac
done
[ -n "$BIN" ] || BIN=$("$root/scripts/build-static.sh" --boot)
[ -n "$BUSYBOX" ] || BUSYBOX=$("$root/scripts/build-busybox.sh" -q)
[ -n "$MODROOT" ] || MODROOT=$root/work/qemu/kernel/pkg
[ -n "$KVER" ] || KVER=$(cat "$root/work/qemu/kernel/version")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$root/initramfs/mkinitramfs.sh" -q -z none -b "$BIN" -k "$KVER" -m "$MODROOT" -s "$BUSYBOX" -o "$work/initrd.cpio"
mkdir "$work/t"
(cd "$work/t" && cpio -id --quiet < "$work/initrd.cpio")

row() { # NAME FILE...
    local name=$1
    shift
    printf '| %s | %d | %d | %d | %d | %d |\n' "$name" "$#" "$(cat "$@" | wc -c)" \
        "$(cat "$@" | gzip -9 -n | wc -c)" "$(cat "$@" | xz -9 --check=crc32 | wc -c)" \
        "$(cat "$@" | zstd -19 -q | wc -c)"
}
echo "| part | files | bytes | gzip -9 | xz -9 | zstd -19 |"
echo "|---|---|---|---|---|---|"
row "cloopbox binary (/init)" "$work/t/init"
[ ! -f "$work/t/bin/busybox" ] || row "busybox (rescue shell)" "$work/t/bin/busybox"
mods=$work/t/lib/modules/$KVER
if [ -d "$mods/kernel" ]; then
    declare -A group=()
    while IFS= read -r -d '' f; do
        rel=${f#"$mods/kernel/"}
        case $rel in
            fs/*/* | drivers/*/*) key=${rel%%/*}/$(cut -d/ -f2 <<< "$rel") ;;
            *) key="lib, crypto, block" ;;
        esac
        group[$key]+="$f"$'\n'
    done < <(find "$mods/kernel" -type f -print0 | LC_ALL=C sort -z)
    mapfile -t keys < <(printf '%s\n' "${!group[@]}" | LC_ALL=C sort)
    for key in "${keys[@]}"; do
        mapfile -t files < <(printf '%s' "${group[$key]}")
        row "modules: $key" "${files[@]}"
    done
    mapfile -t all < <(find "$mods/kernel" -type f | LC_ALL=C sort)
    row "modules: all" "${all[@]}"
    mapfile -t idx < <(find "$mods" -maxdepth 1 -type f | LC_ALL=C sort)
    row "module indexes" "${idx[@]}"
fi
printf '| **whole archive** | %d | %d | %d | %d | %d |\n' "$(find "$work/t" -type f | wc -l)" \
    "$(stat -c %s "$work/initrd.cpio")" "$(gzip -9 -n < "$work/initrd.cpio" | wc -c)" \
    "$(xz -9 --check=crc32 < "$work/initrd.cpio" | wc -c)" "$(zstd -19 -q < "$work/initrd.cpio" | wc -c)"
