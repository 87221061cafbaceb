#!/usr/bin/env bash
# mklive: a root filesystem -> one bootable hybrid live ISO (BIOS and UEFI,
# from CD or USB, with Secure Boot through Debian's signed shim and GRUB).
#
# Usage: initramfs/mklive.sh -o OUT.iso --root DIR|ROOTFS.tar|FS.img [options]
#   -o FILE            the ISO to write (required)
#   --root SRC         the root filesystem: a directory, a tar archive (any
#                      compression tar knows), or a filesystem image, which
#                      is compressed as it is
#   --image FILE       an already compressed image instead of --root;
#                      repeatable: KNOPPIX/KNOPPIX, KNOPPIX/KNOPPIX1, ...
#   --kernel VMLINUZ   the kernel (default: BOOT/vmlinuz-KVER of --modules)
#   --modules DIR      the tree that holds lib/modules/KVER or
#                      usr/lib/modules/KVER (default /)
#   --kver KVER        kernel version (default: the newest under --modules)
#   --initrd FILE      use this initramfs instead of building one
#   --binary FILE      the static cloopbox (default: $CLOOPBOX, the tree's
#                      scripts/build-static.sh, or cloopbox on PATH); it
#                      compresses the image, and goes into the initramfs
#                      too when given
#   --boot-binary FILE the cloopbox of the initramfs (default:
#                      $CLOOPBOX_BOOT, --binary when given, else the tree's
#                      boot build, scripts/build-static.sh --boot, else the
#                      cloopbox on PATH)
#   --append ARGS      kernel arguments of the boot menu (GRUB and isolinux);
#                      cloopbox.preload= naming the cloop images' filesystems
#                      (cloopinfo) comes first unless ARGS has its own
#   --fs ext4|iso9660  the filesystem made of a directory or tar (default
#                      ext4: block-level copy-on-write root; iso9660: read-
#                      only, overlayfs root, as Knoppix ships it)
#   --fs-size MIB      ext4 size (default: the tree * 5/4 + 256 MiB of room
#                      for the changes of a live session)
#   --codec NAME       zlib (default), xz, lz4, zstd or none (lz4: the fastest
#                      to decode, about 1.2x zlib's size)
#   --block-size N     cloop block size (default 65536)
#   --level N          compression level (create_compressed_fs -L)
#   --label LABEL      ISO volume label (default KNOPPIX)
#   --persistence SIZE[:ext4|vfat|exfat]
#                      append a partition of SIZE (k/M/G suffixes) with a
#                      filesystem labelled "persistence" (default ext4); the
#                      default menu entry keeps changes there, a second one
#                      boots without it
#   --timeout SECS     show the menu this long (default 0: boot at once)
#   --add DIR          copy DIR's files onto the medium last (may replace
#                      generated ones, such as sha256sum.txt)
#   --no-secure-boot   UEFI through an unsigned GRUB image (also used, with a
#                      note, when shim-signed or grub-efi-amd64-signed is
#                      not installed)
#   --verity           a dm-verity hash tree next to each image
#                      (KNOPPIX/KNOPPIX.verity), its root hash in the
#                      command line of every boot entry (cloopbox.verity=);
#                      an --image needs its tree beside it (IMAGE.verity),
#                      which is checked against the image; prints
#                      "root hash: HEX NAME" per image on stdout
#   --uki KEY,CERT     UEFI boots a unified kernel image (kernel, initramfs
#                      and the default entry's command line in one PE file,
#                      systemd's EFI stub) signed for Secure Boot with KEY
#                      and CERT (PEM, sbsign) instead of shim and GRUB
#   --image-only       write the compressed image to -o and stop
#   -N                 a network initramfs (mkinitramfs.sh -N: Ethernet
#                      drivers for httpfs=, root=live:URL and fetch=)
#   --ca FILE          PEM certificates the initramfs trusts for https://
#                      images besides the built-in roots (mkinitramfs.sh
#                      --ca: /etc/cloopbox/ca.pem)
#   --media LIST       a smaller initramfs, for these boot media only
#                      (mkinitramfs.sh --media: cd, usb, disk, mmc, virtio,
#                      keyboard), with the drivers of the images'
#                      filesystems only (--fs, or cloopinfo of --image) and,
#                      without -N and --ca, the boot build without https://
#                      (scripts/build-static.sh --boot-offline). Default:
#                      every medium, filesystem and https://
#   -q                 quiet; -h, --help: this text
# SOURCE_DATE_EPOCH makes the output reproducible: the same inputs give the
# same bytes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

# The header comment, to its end (a fixed line range went stale as it grew).
usage() { awk 'NR > 1 { if (!/^#/ || /^# shellcheck/) exit; print }' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "mklive: $*" >&2; exit 1; }
bad() { echo "mklive: $*" >&2; echo "mklive: see --help" >&2; exit 2; }

OUT="" SRC="" KERNEL="" MODDIR=/ KVER="" INITRD="" BIN=${CLOOPBOX:-} BOOT_BIN=${CLOOPBOX_BOOT:-} APPEND="" FS=ext4 FS_SIZE=""
CODEC=zlib BLOCK=65536 LEVEL="" LABEL=KNOPPIX PERSIST="" TIMEOUT=0 ADD="" SECURE=1 IMAGE_ONLY=0 NET=0 QUIET=0
VERITY=0 UKI="" CA="" MEDIA=""
IMAGES=()
while [ $# -gt 0 ]; do
    opt=$1
    case $opt in
        -q) QUIET=1; shift; continue ;;
        -N) NET=1; shift; continue ;;
        -h | --help) usage; exit 0 ;;
        --no-secure-boot) SECURE=0; shift; continue ;;
        --image-only) IMAGE_ONLY=1; shift; continue ;;
        --verity) VERITY=1; shift; continue ;;
        -o | --root | --image | --kernel | --modules | --kver | --initrd | --binary | --boot-binary | --append | --fs | --fs-size | \
            --codec | --block-size | --level | --label | --persistence | --timeout | --add | --uki | --ca | --media)
            [ $# -ge 2 ] || bad "$opt needs a value" ;;
        *) bad "unknown option '$opt'" ;;
    esac
    val=$2
    shift 2
    case $opt in
        -o) OUT=$val ;;
        --root) SRC=$val ;;
        --image) IMAGES+=("$val") ;;
        --kernel) KERNEL=$val ;;
        --modules) MODDIR=$val ;;
        --kver) KVER=$val ;;
        --initrd) INITRD=$val ;;
        --binary) BIN=$val ;;
        --boot-binary) BOOT_BIN=$val ;;
        --append) APPEND=$val ;;
        --fs) FS=$val ;;
        --fs-size) FS_SIZE=$val ;;
        --codec) CODEC=$val ;;
        --block-size) BLOCK=$val ;;
        --level) LEVEL=$val ;;
        --label) LABEL=$val ;;
        --persistence) PERSIST=$val ;;
        --timeout) TIMEOUT=$val ;;
        --add) ADD=$val ;;
        --uki) UKI=$val ;;
        --ca) CA=$val ;;
        --media) MEDIA=$val ;;
    esac
done

# --- arguments ----------------------------------------------------------
[ -n "$OUT" ] || bad "-o OUT is required"
[ -z "$CA" ] || [ -z "$INITRD" ] || bad "--ca goes into the initramfs mklive builds: not with --initrd"
[ -z "$MEDIA" ] || [ -z "$INITRD" ] || bad "--media shapes the initramfs mklive builds: not with --initrd"
if [ -n "$SRC" ] && [ ${#IMAGES[@]} -gt 0 ]; then bad "--root and --image exclude each other"; fi
[ -n "$SRC" ] || [ ${#IMAGES[@]} -gt 0 ] || bad "--root DIR|ROOTFS.tar|FS.img is required"
[ -z "$SRC" ] || [ -e "$SRC" ] || die "--root $SRC: no such file or directory"
for i in "${IMAGES[@]}"; do [ -f "$i" ] || die "--image $i: no such file"; done
case $FS in ext4 | iso9660) ;; *) bad "--fs ext4|iso9660, not '$FS'" ;; esac
case $CODEC in zlib | xz | lz4 | zstd | none) ;; *) bad "--codec zlib|xz|lz4|zstd|none, not '$CODEC'" ;; esac
[[ $TIMEOUT =~ ^[0-9]+$ ]] || bad "--timeout takes whole seconds, not '$TIMEOUT'"
[ -z "$FS_SIZE" ] || [[ $FS_SIZE =~ ^[0-9]+$ ]] || bad "--fs-size takes MiB, not '$FS_SIZE'"
[ -z "$ADD" ] || [ -d "$ADD" ] || die "--add $ADD: not a directory"
[ -z "$INITRD" ] || [ -f "$INITRD" ] || die "--initrd $INITRD: no such file"
[[ $LABEL =~ ^[A-Za-z0-9_.-]{1,32}$ ]] || bad "--label: 1 to 32 letters, digits, '_', '.' or '-', not '$LABEL'"
UKI_KEY="" UKI_CERT=""
if [ -n "$UKI" ]; then
    UKI_KEY=${UKI%%,*} UKI_CERT=${UKI#*,}
    [ "$UKI_KEY" != "$UKI" ] && [ -n "$UKI_KEY" ] && [ -n "$UKI_CERT" ] || bad "--uki KEY,CERT, not '$UKI'"
    [ -f "$UKI_KEY" ] || die "--uki: no key file $UKI_KEY"
    [ -f "$UKI_CERT" ] || die "--uki: no certificate file $UKI_CERT"
fi
PERSIST_FS="" PERSIST_BYTES=0
if [ -n "$PERSIST" ]; then
    size=${PERSIST%%:*} PERSIST_FS=ext4
    [ "$size" = "$PERSIST" ] || PERSIST_FS=${PERSIST#*:}
    case $PERSIST_FS in ext4 | vfat | exfat) ;; *) bad "--persistence SIZE[:ext4|vfat|exfat], not ':$PERSIST_FS'" ;; esac
    PERSIST_BYTES=$(numfmt --from=iec "${size^^}" 2>/dev/null) || bad "--persistence: '$size' is not a size (64M, 1G...)"
    [ "$PERSIST_BYTES" -ge $((16 << 20)) ] || bad "--persistence: at least 16M, not '$size'"
fi

# Where the changes go on the persistence partition: a cowfile for a
# writable filesystem (one ext4 image: --image is taken to be one), else
# the overlay's directory, which FAT cannot hold.
PERSIST_LABEL=persistence
if [ -n "$PERSIST" ]; then
    if [ -n "$SRC" ] && [ "$FS" = iso9660 ] || [ ${#IMAGES[@]} -gt 1 ]; then
        [ "$PERSIST_FS" = ext4 ] ||
            bad "--persistence :$PERSIST_FS: an overlayfs root (iso9660, several images) keeps its changes in a directory, which FAT cannot hold: use ext4"
        where=/live/overlay
    else
        where=/live/knoppix.cow
    fi
fi

say() { [ "$QUIET" = 1 ] || echo "mklive: $*" >&2; }
need() { # COMMAND PACKAGE
    command -v "$1" >/dev/null || die "$1 is missing (apt-get install $2)"
}
TTY=0
[ "$QUIET" = 0 ] && [ -t 2 ] && TTY=1

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mklive.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
OUT_DIR=$(dirname "$OUT")
[ -d "$OUT_DIR" ] || die "-o $OUT: no directory $OUT_DIR"
EPOCH=${SOURCE_DATE_EPOCH:-}
[ -z "$EPOCH" ] || [[ $EPOCH =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH='$EPOCH' is not a number of seconds"

# The initramfs gets the boot build (no writer, README "Boot build") when
# we build from the tree; an explicit --binary serves for both.
# With --media and neither -N nor --ca, the boot build without https://:
# without the Ethernet drivers of -N the initramfs cannot reach a server.
if [ -z "$BOOT_BIN" ] && [ -z "$INITRD" ]; then
    if [ -z "$BIN" ] && [ -x "$repo/scripts/build-static.sh" ] && [ -f "$repo/Cargo.toml" ]; then
        if [ -n "$MEDIA" ] && [ "$NET" = 0 ] && [ -z "$CA" ]; then
            say "building the boot build of cloopbox without https:// (scripts/build-static.sh --boot-offline)"
            BOOT_BIN=$("$repo/scripts/build-static.sh" --boot-offline)
        else
            say "building the boot build of cloopbox (scripts/build-static.sh --boot)"
            BOOT_BIN=$("$repo/scripts/build-static.sh" --boot)
        fi
    fi
fi
if [ -z "$BIN" ]; then
    if [ -x "$repo/scripts/build-static.sh" ] && [ -f "$repo/Cargo.toml" ]; then
        say "building the static cloopbox (scripts/build-static.sh)"
        BIN=$("$repo/scripts/build-static.sh")
    else
        BIN=$(command -v cloopbox) || die "no cloopbox binary: give --binary FILE or put cloopbox on PATH"
    fi
fi
[ -x "$BIN" ] || die "--binary $BIN is not an executable"
[ -n "$BOOT_BIN" ] || BOOT_BIN=$BIN
[ -n "$INITRD" ] || [ -x "$BOOT_BIN" ] || die "--boot-binary $BOOT_BIN is not an executable"
# Our applets are reached through the multicall front door's first argument.
cloopbox() { "$BIN" "$@"; }
# image_filesystem IMAGE: the filesystem inside a cloop image, as cloopinfo
# names it (what init's probe will find); nothing for an image that is not
# cloop (a squashfs of the benchmarks' baselines).
image_filesystem() { cloopbox cloopinfo --json "$1" 2>/dev/null | sed -n 's/^  "filesystem": "\(.*\)",$/\1/p'; }

# --- 1. the compressed image --------------------------------------------
# epoch_env COMMAND...: e2fsprogs with its clock at SOURCE_DATE_EPOCH, if set.
epoch_env() {
    if [ -n "$EPOCH" ]; then E2FSPROGS_FAKE_TIME=$EPOCH "$@"; else "$@"; fi
}

# clamp_times DIR IMG: mke2fs -d copies each file's atime and ctime, which
# reading and copying the tree change; with SOURCE_DATE_EPOCH both are set
# to it (mtimes are the input's own).
clamp_times() {
    local dir=$1 img=$2 p
    (cd "$dir" && find . -print0) | while IFS= read -r -d '' p; do
        p=${p#.}
        case $p in *'"'* | *$'\n'*) echo "mklive: note: times of '$p' not clamped (a quote in the name)" >&2; continue ;; esac
        printf 'sif "%s" atime @%s\nsif "%s" ctime @%s\n' "${p:-/}" "$EPOCH" "${p:-/}" "$EPOCH"
    done > "$tmp/clamp.cmds"
    epoch_env debugfs -w -f "$tmp/clamp.cmds" "$img" >/dev/null 2>"$tmp/clamp.err" ||
        { cat "$tmp/clamp.err" >&2; die "debugfs could not set the times in $img"; }
}

# fs_image DIR OUT: DIR as a filesystem image of type $FS.
fs_image() {
    local dir=$1 out=$2 mb
    case $FS in
        ext4)
            need mkfs.ext4 e2fsprogs
            mb=$FS_SIZE
            [ -n "$mb" ] || mb=$(($(du -sb "$dir" | cut -f1) * 5 / 4 / 1048576 + 256))
            say "making ext4 of $mb MiB from $dir"
            truncate -s "${mb}M" "$out"
            local repro=()
            if [ -n "$EPOCH" ]; then
                # A fixed UUID and hash seed from the inputs' date.
                local uuid
                uuid=$(printf 'mklive-fs-%s' "$EPOCH" | sha256sum |
                    sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')
                repro=(-U "$uuid" -E "hash_seed=$uuid,lazy_itable_init=0,lazy_journal_init=0")
            else
                repro=(-E lazy_itable_init=0,lazy_journal_init=0)
            fi
            epoch_env mkfs.ext4 -q -F -b 4096 -L KNOPPIX_FS "${repro[@]}" -d "$dir" "$out" ||
                die "mkfs.ext4 of $dir failed (is --fs-size $mb MiB big enough?)"
            [ -z "$EPOCH" ] || clamp_times "$dir" "$out"
            ;;
        iso9660)
            need xorriso xorriso
            say "making iso9660 from $dir"
            xorriso -as mkisofs -quiet -R -V KNOPPIX_FS -o "$out" "$dir" 2>"$tmp/xorriso.err" ||
                { cat "$tmp/xorriso.err" >&2; die "xorriso could not make iso9660 of $dir"; }
            ;;
    esac
}

make_image() { # OUT
    local out=$1 fs=$tmp/fs.img dir
    if [ -d "$SRC" ]; then
        dir=$SRC
    # A tar lists at least one member: GNU tar reads the zeros at the
    # start of an ext4 image as an empty archive, and succeeds.
    elif [ -n "$(tar -tf "$SRC" 2>/dev/null | head -n 1 || true)" ]; then
        dir=$tmp/root
        say "unpacking $SRC"
        mkdir -p "$dir"
        tar --numeric-owner -xf "$SRC" -C "$dir" || die "tar could not unpack $SRC"
    else
        dir=""
        fs=$SRC
        say "compressing the filesystem image $SRC as it is"
    fi
    [ -z "$dir" ] || fs_image "$dir" "$fs"
    local cargs=(-B "$BLOCK" --codec "$CODEC") printed
    [ -z "$LEVEL" ] || cargs+=(-L "$LEVEL")
    [ "$TTY" = 1 ] || cargs+=(-q)
    [ "$VERITY" = 0 ] || cargs+=("--verity=$out.tmp.verity")
    say "compressing ($CODEC, $BLOCK-byte blocks$( ((VERITY)) && echo ', with a hash tree'))"
    printed=$(cloopbox create_compressed_fs "${cargs[@]}" "$fs" "$out.tmp") || die "create_compressed_fs failed on $fs"
    mv "$out.tmp" "$out"
    if [ "$VERITY" = 1 ]; then
        ROOT_HASH=$(sed -n 's/^root hash: \([0-9a-f]\{64\}\)$/\1/p' <<< "$printed")
        [ -n "$ROOT_HASH" ] || die "create_compressed_fs --verity printed no root hash: $printed"
        mv "$out.tmp.verity" "$out.verity"
    fi
    [ "$fs" = "$SRC" ] || rm -f "$fs"
    [ "$dir" != "$tmp/root" ] || rm -rf "$dir"
}

# image_tree IMAGE: the root hash of IMAGE's tree IMAGE.verity, in
# ROOT_HASH, after checking every block of the image against it (the tree
# came with the image, so it is proved to match before its root hash is
# signed into a command line).
image_tree() {
    local img=$1 info
    [ -f "$img.verity" ] || die "--verity: --image $img has no hash tree $img.verity (create_compressed_fs --verity writes one)"
    info=$(cloopbox cloopinfo --json "$img") || die "cloopinfo could not read $img"
    ROOT_HASH=$(sed -n 's/.*"verity_root_hash": *"\([0-9a-f]\{64\}\)".*/\1/p' <<< "$info")
    [ -n "$ROOT_HASH" ] || die "--verity: $img.verity is not a usable hash tree for $img: $(sed -n 's/.*"verity_error": *\("[^"]*"\).*/\1/p' <<< "$info")"
    say "checking $img against $img.verity"
    cloopbox verity -q "$img" "$img.verity" "$ROOT_HASH" >/dev/null ||
        die "--verity: $img does not match its tree $img.verity"
}

if [ "$IMAGE_ONLY" = 1 ]; then
    [ -n "$SRC" ] || bad "--image-only needs --root"
    make_image "$OUT"
    say "wrote $OUT: $(stat -c %s "$OUT") bytes$( ((VERITY)) && echo ", tree $OUT.verity")"
    [ "$VERITY" = 0 ] || echo "root hash: $ROOT_HASH $OUT"
    exit 0
fi

# --- 2. kernel and initramfs --------------------------------------------
# The modules tree, as mkinitramfs.sh wants it: DIR/lib/modules/KVER.
MODROOT=$MODDIR
[ -d "$MODDIR" ] || die "--modules $MODDIR: no such directory"
if [ -z "$KVER" ]; then
    KVER=$({ ls "$MODDIR/lib/modules" "$MODDIR/usr/lib/modules" 2>/dev/null || true; } | { grep -E '^[0-9]' || true; } |
        sort -uV | tail -n 1)
    [ -n "$KVER" ] || [ -n "$INITRD" ] || die "no kernel modules under $MODDIR/lib/modules or $MODDIR/usr/lib/modules (give --modules DIR, --kver KVER)"
fi
if [ -z "$INITRD" ] && [ ! -d "$MODDIR/lib/modules/$KVER" ]; then
    [ -d "$MODDIR/usr/lib/modules/$KVER" ] || die "no modules for $KVER in $MODDIR/lib/modules or $MODDIR/usr/lib/modules"
    MODROOT=$tmp/modroot
    mkdir -p "$MODROOT/lib"
    ln -s "$(cd "$MODDIR/usr/lib/modules" && pwd)" "$MODROOT/lib/modules"
fi
if [ -z "$KERNEL" ]; then
    for k in "$MODDIR/boot/vmlinuz-$KVER" "/boot/vmlinuz-$KVER"; do
        [ -f "$k" ] && { KERNEL=$k; break; }
    done
    [ -n "$KERNEL" ] || die "no kernel $MODDIR/boot/vmlinuz-$KVER (give --kernel VMLINUZ)"
fi
[ -f "$KERNEL" ] || die "--kernel $KERNEL: no such file"

need xorriso xorriso
need mkfs.msdos dosfstools
need mcopy mtools
ISOLINUX=/usr/lib/ISOLINUX/isolinux.bin
ISOMBR=/usr/lib/ISOLINUX/isohdpfx.bin
SYSLINUX=/usr/lib/syslinux/modules/bios
[ -f "$ISOLINUX" ] && [ -f "$ISOMBR" ] || die "$ISOLINUX or $ISOMBR is missing (apt-get install isolinux)"
[ -f "$SYSLINUX/ldlinux.c32" ] || die "$SYSLINUX/ldlinux.c32 is missing (apt-get install syslinux-common)"
SHIM=/usr/lib/shim/shimx64.efi.signed
MOK=/usr/lib/shim/mmx64.efi.signed
GRUB_SIGNED=/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed
GRUB_MODS=/usr/lib/grub/x86_64-efi
UKI_STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
if [ -n "$UKI" ]; then
    [ -f "$UKI_STUB" ] || die "$UKI_STUB is missing (apt-get install systemd-boot-efi)"
    need objcopy binutils
    need sbsign sbsigntool
    need sbverify sbsigntool
elif [ "$SECURE" = 1 ] && { [ ! -f "$SHIM" ] || [ ! -f "$GRUB_SIGNED" ]; }; then
    echo "mklive: note: $SHIM or $GRUB_SIGNED is missing (apt-get install shim-signed grub-efi-amd64-signed):" \
        "UEFI boots through an unsigned GRUB, which Secure Boot refuses" >&2
    SECURE=0
fi
if [ "$SECURE" = 0 ]; then
    need grub-mkimage grub-common
    [ -f "$GRUB_MODS/linux.mod" ] || die "$GRUB_MODS is missing (apt-get install grub-efi-amd64-bin)"
fi

# make_uki KERNEL INITRD CMDLINE OUT: one PE file of systemd's EFI stub
# with the kernel, the initramfs and the command line as its sections,
# signed with --uki's key. With Secure Boot on, the stub ignores a command
# line from the firmware or a boot loader: the signed one is the only one.
# Each section is placed after the one before it, page-aligned, from the
# end of the stub's own sections (the layout ukify uses).
make_uki() {
    local kernel=$1 initrd=$2 cmdline=$3 out=$4 end offs args=() name file size
    printf '%s' "$cmdline" > "$tmp/uki.cmdline"
    printf 'NAME="cloopbox live"\nID=cloopbox\nPRETTY_NAME="cloopbox live %s"\n' "$LABEL" > "$tmp/uki.osrel"
    end=0
    while read -r _ _ size vma _; do
        [ $((0x$vma + 0x$size)) -le "$end" ] || end=$((0x$vma + 0x$size))
    done < <(objdump -h "$UKI_STUB" | grep -E '^ *[0-9]+ +\.[a-z]+ +[0-9a-f]+ +[0-9a-f]+ ')
    [ "$end" -gt 0 ] || die "objdump could not read the sections of $UKI_STUB"
    offs=$(( (end + 4095) / 4096 * 4096 ))
    for name in osrel:"$tmp/uki.osrel" cmdline:"$tmp/uki.cmdline" linux:"$kernel" initrd:"$initrd"; do
        file=${name#*:} name=${name%%:*}
        args+=(--add-section ".$name=$file" --change-section-vma ".$name=$(printf '0x%x' "$offs")")
        size=$(stat -c %s "$file")
        offs=$(( (offs + size + 4095) / 4096 * 4096 ))
    done
    objcopy "${args[@]}" "$UKI_STUB" "$tmp/uki.unsigned" 2>"$tmp/objcopy.err" ||
        { cat "$tmp/objcopy.err" >&2; die "objcopy could not build the unified kernel image"; }
    sbsign --key "$UKI_KEY" --cert "$UKI_CERT" --output "$out" "$tmp/uki.unsigned" 2>"$tmp/sbsign.err" >&2 ||
        { cat "$tmp/sbsign.err" >&2; die "sbsign could not sign the unified kernel image with $UKI_KEY and $UKI_CERT"; }
    sbverify --cert "$UKI_CERT" "$out" >/dev/null 2>&1 || die "sbverify: the signed unified kernel image does not verify with $UKI_CERT"
}

t=$tmp/iso
mkdir -p "$t/boot/isolinux" "$t/boot/grub" "$t/KNOPPIX" "$t/.disk"
cp "$KERNEL" "$t/boot/vmlinuz"
if [ -n "$INITRD" ]; then
    cp "$INITRD" "$t/boot/initrd.gz"
else
    mk=("$here/mkinitramfs.sh" -b "$BOOT_BIN" -k "$KVER" -m "$MODROOT" -o "$t/boot/initrd.gz")
    [ "$QUIET" = 0 ] || mk+=(-q)
    [ "$NET" = 0 ] || mk+=(-N)
    [ -z "$CA" ] || mk+=(--ca "$CA")
    if [ -n "$MEDIA" ]; then
        # The drivers of the images' filesystems: --fs for --root, else
        # what cloopinfo finds in each --image (mkinitramfs.sh --fs names).
        image_fs=()
        if [ -n "$SRC" ]; then image_fs=("$FS"); fi
        for i in "${IMAGES[@]}"; do
            f=$(image_filesystem "$i") || f=""
            case $f in
                ext2 | ext3 | ext4) f=ext4 ;;
                iso9660 | squashfs | erofs) ;;
                *) die "--media: cannot tell which filesystem driver --image $i needs (cloopinfo: '${f:-nothing}'); leave out --media" ;;
            esac
            [[ " ${image_fs[*]} " == *" $f "* ]] || image_fs+=("$f")
        done
        mk+=(--media "$MEDIA" --fs "$(IFS=,; echo "${image_fs[*]}")")
    fi
    say "building the initramfs for $KVER"
    "${mk[@]}" || die "mkinitramfs.sh failed"
fi

# --- 3. the medium's files ----------------------------------------------
# With --verity, HASHES collects NAME=ROOTHASH for the command line.
HASHES=()
if [ -n "$SRC" ]; then
    make_image "$t/KNOPPIX/KNOPPIX"
    [ "$VERITY" = 0 ] || HASHES+=("KNOPPIX=$ROOT_HASH")
else
    n=0
    for i in "${IMAGES[@]}"; do
        if [ $n = 0 ]; then dest=KNOPPIX; else dest=KNOPPIX$n; fi
        cp "$i" "$t/KNOPPIX/$dest"
        if [ "$VERITY" = 1 ]; then
            image_tree "$i"
            cp "$i.verity" "$t/KNOPPIX/$dest.verity"
            HASHES+=("$dest=$ROOT_HASH")
        fi
        n=$((n + 1))
    done
fi
# The filesystems inside the images (cloopinfo: what init's probe will
# find): init loads their drivers on a thread of its own from the start
# instead of after the root device is up (cloopbox.preload=,
# docs/boot-options.md), unless --append names its own.
if [[ " $APPEND " != *" cloopbox.preload="* ]]; then
    fstypes=()
    for i in "$t"/KNOPPIX/KNOPPIX*; do
        [[ $i != *.verity ]] || continue
        # Not a cloop image (a squashfs of the benchmarks' baselines): no hint.
        f=$(image_filesystem "$i") || f=""
        [ -z "$f" ] || [[ " ${fstypes[*]} " == *" $f "* ]] || fstypes+=("$f")
    done
    [ ${#fstypes[@]} = 0 ] || APPEND="cloopbox.preload=$(IFS=,; echo "${fstypes[*]}")${APPEND:+ $APPEND}"
fi
if [ "$VERITY" = 1 ]; then
    for h in "${HASHES[@]}"; do echo "root hash: ${h#*=} KNOPPIX/${h%%=*}"; done
    # One image: the bare hash (it is knoppix_name's); several: by name.
    if [ ${#HASHES[@]} = 1 ]; then
        vopt="cloopbox.verity=${HASHES[0]#*=}"
    else
        vopt="cloopbox.verity=$(IFS=,; echo "${HASHES[*]}")"
    fi
    APPEND="$vopt${APPEND:+ $APPEND}"
fi
# As Debian live media do; the media check (testcd) compares with it. The
# trees are not images: they check themselves against the root hash.
(cd "$t" && find KNOPPIX -maxdepth 1 -type f ! -name '*.verity' -print0 | sort -z | xargs -0 sha256sum > sha256sum.txt)
# Debian's signed CD GRUB finds the medium by this file.
echo "cloopbox live $LABEL" > "$t/.disk/info"

# The menu: the same entries for isolinux and GRUB.
ENTRIES=()
if [ -n "$PERSIST" ]; then
    ENTRIES+=("live|cloopbox live, changes kept on the persistence partition|cow=LABEL=$PERSIST_LABEL:$where $APPEND")
    ENTRIES+=("ram|cloopbox live, changes in RAM only|nopersistence $APPEND")
else
    ENTRIES+=("live|cloopbox live|$APPEND")
fi
{
    if [ "$TIMEOUT" = 0 ]; then
        printf 'PROMPT 0\nTIMEOUT 0\n'
    else
        cp "$SYSLINUX/menu.c32" "$SYSLINUX/libutil.c32" "$t/boot/isolinux/"
        printf 'UI menu.c32\nMENU TITLE %s\nTIMEOUT %d\n' "$LABEL" $((TIMEOUT * 10))
    fi
    printf 'SERIAL 0 115200\nDEFAULT live\n'
    for e in "${ENTRIES[@]}"; do
        IFS='|' read -r name title args <<< "$e"
        printf 'LABEL %s\n  MENU LABEL %s\n  KERNEL /boot/vmlinuz\n  APPEND initrd=/boot/initrd.gz %s\n' \
            "$name" "$title" "$args"
    done
} > "$t/boot/isolinux/isolinux.cfg"
cp "$ISOLINUX" "$SYSLINUX/ldlinux.c32" "$t/boot/isolinux/"
{
    printf 'serial --unit=0 --speed=115200\nterminal_input console serial\nterminal_output console serial\n'
    printf 'set default=0\nset timeout=%d\n' "$TIMEOUT"
    for e in "${ENTRIES[@]}"; do
        IFS='|' read -r name title args <<< "$e"
        printf "menuentry '%s' {\n  linux /boot/vmlinuz %s\n  initrd /boot/initrd.gz\n}\n" "$title" "$args"
    done
} > "$t/boot/grub/grub.cfg"

# The EFI system partition: a signed unified kernel image, shim + signed
# GRUB, or an unsigned GRUB that finds the medium the way the signed one
# does.
esp=$tmp/esp
mkdir -p "$esp"
if [ -n "$UKI" ]; then
    IFS='|' read -r _ _ uki_args <<< "${ENTRIES[0]}"
    make_uki "$t/boot/vmlinuz" "$t/boot/initrd.gz" "$uki_args" "$esp/BOOTX64.EFI"
    SECURE=uki
    say "UEFI: unified kernel image signed with $UKI_CERT"
elif [ "$SECURE" = 1 ]; then
    cp "$SHIM" "$esp/BOOTX64.EFI"
    cp "$GRUB_SIGNED" "$esp/grubx64.efi"
    cp "$MOK" "$esp/mmx64.efi"
    say "UEFI: Debian's signed shim and GRUB (Secure Boot)"
else
    cat > "$tmp/early.cfg" <<'CFG'
search --file --set=root /.disk/info
set prefix=($root)/boot/grub
configfile $prefix/grub.cfg
CFG
    grub-mkimage -O x86_64-efi -d "$GRUB_MODS" -c "$tmp/early.cfg" -p /boot/grub -o "$esp/BOOTX64.EFI" \
        iso9660 part_msdos part_gpt fat search search_fs_file configfile normal linux echo test serial \
        terminal all_video gfxterm font ||
        die "grub-mkimage failed"
    say "UEFI: unsigned GRUB (no Secure Boot)"
fi
kb=$(($(du -cb "$esp"/* | tail -n 1 | cut -f1) / 1024 * 11 / 10 + 1024))
[ "$kb" -ge 8192 ] || kb=8192
mkfs.msdos --invariant -i 434c4f4f -n EFIBOOT -C "$t/boot/grub/efi.img" "$kb" >/dev/null ||
    die "mkfs.msdos of the EFI image failed"
MTOOLS_SKIP_CHECK=1 mmd -i "$t/boot/grub/efi.img" ::/EFI ::/EFI/BOOT
for f in "$esp"/*; do
    [ -z "$EPOCH" ] || touch -d "@$EPOCH" "$f"
    MTOOLS_SKIP_CHECK=1 mcopy -m -i "$t/boot/grub/efi.img" "$f" "::/EFI/BOOT/${f##*/}"
done
if [ -n "$ADD" ]; then cp -a "$ADD"/. "$t/"; fi

# --- 4. the persistence partition ---------------------------------------
xargs_persist=()
if [ -n "$PERSIST" ]; then
    part=$tmp/persist.img
    truncate -s "$PERSIST_BYTES" "$part"
    serial=$(printf 'mklive-persist-%s' "${EPOCH:-$$}" | sha256sum | cut -c1-8)
    case $PERSIST_FS in
        ext4)
            need mkfs.ext4 e2fsprogs
            uuid=$(printf '%s' "$serial" | sha256sum | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')
            r=()
            [ -z "$EPOCH" ] || r=(-U "$uuid" -E "hash_seed=$uuid")
            epoch_env mkfs.ext4 -q -F -L "$PERSIST_LABEL" "${r[@]}" "$part"
            ptype=0x83 ;;
        vfat)
            mkfs.vfat --invariant -i "$serial" -n "$PERSIST_LABEL" "$part" >/dev/null 2>&1 ||
                die "mkfs.vfat of the persistence partition failed"
            ptype=0x0c ;;
        exfat)
            need mkfs.exfat exfatprogs
            mkfs.exfat -L "$PERSIST_LABEL" "$part" >/dev/null || die "mkfs.exfat of the persistence partition failed"
            # exfatprogs picks a random serial: fixed, for reproducible media.
            [ -z "$EPOCH" ] || tune.exfat -I "0x$serial" "$part" >/dev/null 2>&1 || true
            ptype=0x07 ;;
    esac
    xargs_persist=(-append_partition 3 "$ptype" "$part")
    say "persistence: $PERSIST_FS partition of $PERSIST_BYTES bytes labelled $PERSIST_LABEL"
fi

# --- 5. the hybrid ISO --------------------------------------------------
[ -z "$EPOCH" ] || find "$t" -exec touch -h -d "@$EPOCH" {} +
xq=(-quiet)
[ "$TTY" = 1 ] && xq=()
say "writing $OUT"
xorriso -as mkisofs "${xq[@]}" -R -J -V "$LABEL" -o "$OUT.tmp" \
    -isohybrid-mbr "$ISOMBR" \
    -b boot/isolinux/isolinux.bin -c boot/isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
    -eltorito-alt-boot -e boot/grub/efi.img -no-emul-boot -isohybrid-gpt-basdat \
    "${xargs_persist[@]}" "$t" 2>"$tmp/xorriso.err" ||
    { cat "$tmp/xorriso.err" >&2; die "xorriso could not write $OUT"; }
mv "$OUT.tmp" "$OUT"
case $SECURE in
    uki) uefi="signed unified kernel image" ;;
    1) uefi="Secure Boot" ;;
    *) uefi="unsigned UEFI" ;;
esac
say "wrote $OUT: $(stat -c %s "$OUT") bytes, kernel $KVER, $uefi, BIOS$( ((VERITY)) && echo ', verified images')"
