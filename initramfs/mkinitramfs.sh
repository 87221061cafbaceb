#!/usr/bin/env bash
# Builds a cloopbox initramfs: the static binary as /init with its applet
# links, the kernel modules a live boot needs (with their dependencies,
# resolved by depmod), optionally a static busybox for the rescue shell,
# and nothing else.
#
# Usage: initramfs/mkinitramfs.sh -o OUT.cpio.gz [options]
#   -o FILE        output (required)
#   -b BINARY      the cloopbox binary (default: the boot build,
#                  scripts/build-static.sh --boot, in a source tree, else
#                  /usr/bin/cloopbox)
#   -k KVER        kernel version (default: uname -r)
#   -m DIR         the modules tree that holds lib/modules/KVER (default: /)
#   -s BUSYBOX     the static busybox of the rescue shell (/bin/sh and
#                  every applet it lists). Default: in a source tree, the
#                  small one scripts/build-busybox.sh builds from Debian's
#                  source (75 applets, 0.24 MB of the archive); installed,
#                  /bin/busybox if it is static (busybox-static, 0.92 MB);
#                  "none" leaves the rescue shell out
#   --media LIST   (or -M LIST) carry the drivers of these boot media only,
#                  a comma-separated list of: cd (SATA/PATA CD and DVD
#                  drives), usb (USB sticks and drives, with the USB
#                  keyboard), disk (an ISO file or a cloop image on a SATA
#                  or NVMe disk), mmc (SD cards), virtio (virtual disks and
#                  CDs), keyboard (a USB keyboard for the rescue shell
#                  without usb), all (the default: every one of them)
#   --fs LIST      (or -F LIST) the filesystems of the cloop image this
#                  initramfs will boot: ext4, iso9660, squashfs, erofs
#                  (each but ext4 with overlayfs), all (the default)
#   -a MODULE      add a module (repeatable) to the set
#   -N             network boot (httpfs=, root=live:URL, fetch=): add the
#                  Ethernet drivers of common virtual and real machines
#   --ca FILE      (or -C FILE) PEM certificates trusted for https:// images
#                  besides the built-in roots, put at /etc/cloopbox/ca.pem,
#                  which init uses unless cloopbox.cafile= names another
#                  (refused with a binary built without https, such as
#                  scripts/build-static.sh --boot-offline's)
#   -z zstd|gzip|xz|none   compression (default zstd -19: the smallest the
#                  kernel unpacks fast, kernels >= 5.9 with RD_ZSTD, every
#                  Debian kernel since 11; gzip for older kernels; xz is
#                  smaller still but unpacks 5x slower, BENCHMARKS.md).
#                  With compression, the modules come first in an
#                  uncompressed archive, each as .ko.zst (init and the
#                  modprobe applet decompress those they load); with none,
#                  one archive with the modules as the kernel ships them
#   -q             quiet
set -euo pipefail
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
root=$(cd "$here/.." && pwd)

OUT="" BIN="" KVER=$(uname -r) MODROOT=/ BUSYBOX=auto COMP=zstd QUIET=0 NET=0 CA="" MEDIA=all IMAGE_FS=all
EXTRA=()
# The long options, as their short forms for getopts.
args=()
for a in "$@"; do
    case $a in
        --ca) args+=(-C) ;;
        --ca=*) args+=(-C "${a#--ca=}") ;;
        --media) args+=(-M) ;;
        --media=*) args+=(-M "${a#--media=}") ;;
        --fs) args+=(-F) ;;
        --fs=*) args+=(-F "${a#--fs=}") ;;
        *) args+=("$a") ;;
    esac
done
set -- ${args[@]+"${args[@]}"}
while getopts "o:b:k:m:s:a:z:C:M:F:Nqh" opt; do
    case $opt in
        o) OUT=$OPTARG ;;
        b) BIN=$OPTARG ;;
        k) KVER=$OPTARG ;;
        m) MODROOT=$OPTARG ;;
        s) BUSYBOX=$OPTARG ;;
        a) EXTRA+=("$OPTARG") ;;
        z) COMP=$OPTARG ;;
        N) NET=1 ;;
        C) CA=$OPTARG ;;
        M) MEDIA=$OPTARG ;;
        F) IMAGE_FS=$OPTARG ;;
        q) QUIET=1 ;;
        h) awk 'NR > 1 { if (!/^#/ || /^# shellcheck/) exit; print }' "$0"; exit 0 ;;
        *) awk 'NR > 1 { if (!/^#/ || /^# shellcheck/) exit; print }' "$0" >&2; exit 2 ;;
    esac
done
MEDIA=${MEDIA// /} IMAGE_FS=${IMAGE_FS// /}
[ -n "$OUT" ] || { echo "mkinitramfs: -o OUT is required" >&2; exit 2; }
if [ -n "$CA" ]; then
    [ -r "$CA" ] || { echo "mkinitramfs: --ca $CA: cannot read it" >&2; exit 1; }
    grep -q -- "-----BEGIN CERTIFICATE-----" "$CA" ||
        { echo "mkinitramfs: --ca $CA: no PEM certificate (-----BEGIN CERTIFICATE-----) in it" >&2; exit 1; }
fi
say() { [ "$QUIET" = 1 ] || echo "mkinitramfs: $*" >&2; }

# In a source tree, the static boot build (no writer: README "Boot build");
# installed (the Debian package's cloopbox-mkinitramfs), the installed
# (full) binary.
if [ -z "$BIN" ]; then
    if [ -x "$root/scripts/build-static.sh" ]; then BIN=$("$root/scripts/build-static.sh" --boot); else BIN=/usr/bin/cloopbox; fi
fi
[ -x "$BIN" ] || { echo "mkinitramfs: $BIN is not an executable" >&2; exit 1; }
if readelf -lW "$BIN" | grep INTERP >/dev/null; then
    echo "mkinitramfs: $BIN is dynamically linked; /init must be static" >&2
    exit 1
fi

# What a live boot needs, by boot medium and by the image's filesystem
# (--media, --fs); the default, all of them, boots every medium and image
# the docs promise (docs/mklive.md, "A smaller initramfs"). Modules the
# kernel has built in are skipped by depmod's modules.builtin.
# Always: the transports (NBD, ublk), loop devices, crc32c for ext4 and the
# cowfile's filesystems.
MODULES=(crc32c_generic crc32c-intel nbd ublk_drv loop)
# The filesystems of the media: an ISO on CD/DVD, FAT, exFAT and NTFS sticks
# and disks (with persistence), ext4 disks holding an ISO file.
fs_cd=(isofs udf)
fs_stick=(isofs udf vfat fat nls_cp437 nls_iso8859-1 nls_utf8 nls_ascii exfat ntfs3)
keyboard=(xhci_pci xhci_hcd ehci_pci ehci_hcd ohci_pci uhci_hcd usbhid hid_generic)
declare -A media_modules=(
    [cd]="ahci ata_piix libata scsi_mod cdrom sr_mod ${fs_cd[*]}"
    [usb]="usb-storage uas sd_mod scsi_mod ${keyboard[*]} ${fs_stick[*]}"
    [disk]="ahci ata_piix libata sd_mod scsi_mod nvme ext4 ${fs_stick[*]}"
    [mmc]="mmc_block sdhci_pci ${fs_stick[*]}"
    [virtio]="virtio_blk virtio_scsi virtio_pci sd_mod sr_mod cdrom scsi_mod ${fs_cd[*]} vfat fat nls_cp437 nls_iso8859-1 ext4"
    [keyboard]="${keyboard[*]}"
)
declare -A fs_modules=([ext4]="ext4" [iso9660]="isofs overlay" [squashfs]="squashfs overlay" [erofs]="erofs overlay")
# pick KIND LIST TABLE: the modules of every name in LIST (or of all).
pick() {
    local kind=$1 list=$2 table=$3 name names
    declare -n tab=$table
    if [ "$list" = all ]; then names=$(printf '%s\n' "${!tab[@]}" | sort); else names=${list//,/ }; fi
    [ -n "${names// /}" ] || { echo "mkinitramfs: --$kind: an empty list" >&2; exit 2; }
    for name in $names; do
        [ -n "${tab[$name]+x}" ] || { echo "mkinitramfs: --$kind: unknown name \"$name\" (one of: $(printf '%s\n' "${!tab[@]}" | sort | tr '\n' ' ')all)" >&2; exit 2; }
        # shellcheck disable=SC2206 # a word list by design
        MODULES+=(${tab[$name]})
    done
}
pick media "$MEDIA" media_modules
pick fs "$IMAGE_FS" fs_modules
# -N: Ethernet drivers, loaded by modalias like the storage drivers (their
# dependencies, such as virtio_net's net_failover, come through depmod).
# Debian's kernel builds IPv4, packet sockets and rtnetlink in; it has no
# in-kernel IP autoconfiguration, so init brings the interface up itself.
# QEMU: virtio_net, e1000 (-device e1000, the default), e1000e (q35);
# real machines: Intel, Realtek, Broadcom, Marvell, Aquantia, VMware, Hyper-V, Xen, USB.
# No firmware files are added: drivers that cannot work without them
# (ice, bnx2) are left out.
if [ "$NET" = 1 ]; then
    MODULES+=(virtio_net e1000 e1000e igb igc ixgbe i40e r8169 8139cp 8139too tg3 bnxt_en
        atlantic sky2 vmxnet3 hv_netvsc xen-netfront usbnet cdc_ether r8152 ax88179_178a)
fi
MODULES+=(${EXTRA[@]+"${EXTRA[@]}"})

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tree=$work/root
mkdir -p "$tree"/{bin,dev,proc,sys,run,mnt,tmp,lib/modules}
cp "$BIN" "$tree/init"
chmod 0755 "$tree/init"
if [ "$MEDIA" != all ]; then
    # src/boot/init.rs MEDIA_FILE: "no medium found" then says which media
    # this initramfs has drivers for.
    mkdir -p "$tree/etc/cloopbox"
    echo "$MEDIA" > "$tree/etc/cloopbox/media"
fi
if [ -n "$CA" ]; then
    # src/boot/options.rs DEFAULT_CA_FILE
    mkdir -p "$tree/etc/cloopbox"
    install -m 0644 "$CA" "$tree/etc/cloopbox/ca.pem"
fi
# Run as "cloopbox" whatever the file is called, so --list reaches the
# multicall front door; a failure here must stop the build, not silently
# leave the initramfs without its applet links.
mkdir -p "$work/listdir"
ln -s "$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")" "$work/listdir/cloopbox"
applets=$("$work/listdir/cloopbox" --list) || { echo "mkinitramfs: $BIN --list failed" >&2; exit 1; }
[ -n "$applets" ] || { echo "mkinitramfs: $BIN lists no applets" >&2; exit 1; }
# A CA file is only for https://: a binary built without it (--boot-offline)
# would refuse the file at boot, so say it now.
if [ -n "$CA" ] && ! grep -qE '^features:( .*)? https( |$)' <<< "$("$work/listdir/cloopbox" --version)"; then
    echo "mkinitramfs: --ca $CA: $BIN is built without https:// support (cargo feature \"https\"); use scripts/build-static.sh --boot" >&2
    exit 1
fi
for applet in $applets; do
    ln -s ../init "$tree/bin/$applet"
done

srcmods=$MODROOT/lib/modules/$KVER
if [ -d "$srcmods" ]; then
    # Resolve dependencies with depmod on a scratch copy of the index, so
    # an unpacked kernel package (which ships no modules.dep) works too.
    scratch=$work/scratch
    mkdir -p "$scratch/lib/modules"
    ln -s "$(cd "$srcmods" && pwd)" "$scratch/lib/modules/$KVER"
    if [ ! -f "$srcmods/modules.dep" ]; then
        cp -a "$srcmods" "$work/modcopy"
        rm "$scratch/lib/modules/$KVER"
        ln -s "$work/modcopy" "$scratch/lib/modules/$KVER"
        depmod -b "$scratch" "$KVER"
    fi
    dep=$scratch/lib/modules/$KVER/modules.dep
    declare -A want=()
    missing=()
    resolve() {
        local name=${1//-/_} line path
        line=$(awk -v n="$name" -F: '{ p=$1; sub(/.*\//, "", p); sub(/\.ko.*/, "", p); gsub(/-/, "_", p); if (p == n) { print; exit } }' "$dep")
        if [ -z "$line" ]; then
            grep -q "/${1}.ko\|/${name}.ko" "$srcmods/modules.builtin" 2>/dev/null || missing+=("$1")
            return
        fi
        for path in ${line/:/ }; do want[$path]=1; done
    }
    for m in "${MODULES[@]}"; do resolve "$m"; done
    dst=$tree/lib/modules/$KVER
    mkdir -p "$dst"
    for path in "${!want[@]}"; do
        mkdir -p "$dst/$(dirname "$path")"
        src=$scratch/lib/modules/$KVER/$path
        # Unpacked here (Debian 13 ships .ko.xz) for depmod; a compressed
        # initramfs then carries each one as .ko.zst (below). The
        # signature is inside the uncompressed module.
        case $COMP:$path in
            none:*) cp "$src" "$dst/$path" ;;
            *:*.ko.xz) xz -dc "$src" > "$dst/${path%.xz}" ;;
            *:*.ko.zst) zstd -dcq "$src" > "$dst/${path%.zst}" ;;
            *:*.ko.gz) gzip -dc "$src" > "$dst/${path%.gz}" ;;
            *) cp "$src" "$dst/$path" ;;
        esac
    done
    for f in modules.builtin modules.builtin.modinfo modules.order; do
        [ -f "$srcmods/$f" ] && cp "$srcmods/$f" "$dst/"
    done
    depmod -b "$tree" "$KVER"
    # init reads modules.dep, modules.alias and modules.builtin (and
    # busybox's modprobe only modules.dep); the rest of depmod's indexes and
    # the kernel's whole modules.order were about 0.4 MB of the archive
    # before compression.
    (cd "$dst" && rm -f modules.order modules.builtin.modinfo modules.builtin.alias.bin modules.builtin.bin \
        modules.alias.bin modules.dep.bin modules.symbols modules.symbols.bin modules.devname modules.softdep)
    # With a compressed archive, every module goes into an uncompressed
    # archive in front of it (the kernel unpacks one after the other, as
    # Debian's early microcode; first because the kernel takes an
    # uncompressed archive only at a 4-byte boundary), each compressed on
    # its own with zstd -19, and init decompresses only those it loads
    # (src/boot/kmod.rs).
    # 10-12 % larger than the modules compressed inside the archive, but
    # the kernel no longer inflates 14 MB of modules a boot mostly never
    # loads into RAM before init can start: its unpacking took 0.21-0.24 s
    # instead of 0.42-0.58 s under QEMU TCG (BENCHMARKS.md, "Binary and
    # initramfs size").
    if [ "$COMP" != none ]; then
        modtree=$work/modules
        (cd "$tree" && find lib/modules -name '*.ko' -printf '%h\n' | sort -u | while read -r d; do mkdir -p "$modtree/$d"; done)
        (cd "$tree" && find lib/modules -name '*.ko') | while read -r ko; do
            zstd -19 -q --no-progress -o "$modtree/$ko.zst" "$tree/$ko"
            rm "$tree/$ko"
        done
        sed -i -E 's/\.ko(:| |$)/.ko.zst\1/g' "$dst/modules.dep"
    fi
    say "${#want[@]} module files for $KVER"
    [ ${#missing[@]} -eq 0 ] || say "not in this kernel (skipped): ${missing[*]}"
else
    say "no modules at $srcmods: the initramfs relies on built-in drivers"
fi

if [ "$BUSYBOX" = auto ]; then
    BUSYBOX=none
    if [ -x "$root/scripts/build-busybox.sh" ]; then
        BUSYBOX=$("$root/scripts/build-busybox.sh" -q) || { echo "mkinitramfs: scripts/build-busybox.sh failed (above); -s /bin/busybox takes Debian's busybox-static instead" >&2; exit 1; }
    elif [ -x /bin/busybox ] && ! readelf -lW /bin/busybox | grep INTERP >/dev/null; then
        BUSYBOX=/bin/busybox
    fi
fi
if [ "$BUSYBOX" != none ]; then
    [ -x "$BUSYBOX" ] || { echo "mkinitramfs: -s $BUSYBOX: not an executable" >&2; exit 1; }
    if readelf -lW "$BUSYBOX" | grep INTERP >/dev/null; then
        echo "mkinitramfs: -s $BUSYBOX is dynamically linked; the rescue shell must be static" >&2
        exit 1
    fi
    bb_applets=$("$BUSYBOX" --list) || { echo "mkinitramfs: $BUSYBOX --list failed" >&2; exit 1; }
    grep -qx sh <<< "$bb_applets" || { echo "mkinitramfs: $BUSYBOX has no sh applet" >&2; exit 1; }
    cp "$BUSYBOX" "$tree/bin/busybox"
    # Every applet it has, except where cloopbox has one of its own (its
    # modprobe reads .ko.zst; busybox's cannot) and init, which is /init.
    for a in $bb_applets; do
        case $a in init | linuxrc) continue ;; esac
        [ -e "$tree/bin/$a" ] || ln -s busybox "$tree/bin/$a"
    done
    say "rescue shell: static busybox, $(wc -l <<< "$bb_applets") applets"
fi

case $COMP in
    gzip) compress=(gzip -9 -n) ;;
    xz) compress=(xz --check=crc32 -9) ;;
    zstd) compress=(zstd -19 -q) ;;
    none) compress=(cat) ;;
    *) echo "mkinitramfs: unknown compression $COMP" >&2; exit 2 ;;
esac
# Sorted names, fixed times and --reproducible: the same inputs give the
# same archive, byte for byte.
find "$tree" -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
newc() { # DIR: its files as a newc archive, sorted, on stdout
    (cd "$1" && find . -mindepth 1 -printf '%P\0' | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --reproducible)
}
: > "$OUT.tmp"
files=$(find "$tree" -type f | wc -l) how=$COMP
if [ -n "${modtree:-}" ] && [ -d "$modtree/lib" ]; then
    find "$modtree" -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
    # cpio pads its archive to 512 bytes: the next one starts aligned.
    newc "$modtree" > "$OUT.tmp"
    files=$((files + $(find "$modtree" -type f | wc -l)))
    how="$COMP, after the modules as .ko.zst"
fi
newc "$tree" | "${compress[@]}" >> "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
say "wrote $OUT: $(stat -c %s "$OUT") bytes ($how), $files files"
