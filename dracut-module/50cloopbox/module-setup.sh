#!/bin/bash
# dracut module "cloopbox": a live root from a cloop image (KNOPPIX/KNOPPIX),
# found by content on any medium and served over the kernel's NBD driver by
# cloopbox's own root-storage daemon (@cloopd). See docs/dracut.md.
#
# Build-time input: the static cloopbox binary, from $CLOOPBOX_BIN (the
# environment or a dracut.conf.d line) or installed as cloopbox in
# /usr/sbin, /usr/bin or /sbin.
#
# dracut sets moddir, dracutbasedir and dracutsysrootdir before it sources this.
# shellcheck disable=SC2154

# The binary must be static: at shutdown a copy of it runs alone in
# /run/initramfs (the exit initramfs), where no shared library exists.
cloopbox_binary() {
    local b
    for b in "${CLOOPBOX_BIN:-}" "$dracutsysrootdir"/usr/sbin/cloopbox \
        "$dracutsysrootdir"/usr/bin/cloopbox "$dracutsysrootdir"/sbin/cloopbox; do
        [[ -n $b && -x $b ]] || continue
        if command -v readelf > /dev/null; then
            if readelf -lW "$b" 2> /dev/null | grep -q INTERP; then
                derror "cloopbox: $b is dynamically linked; the module needs the static binary"
                return 1
            fi
        elif LC_ALL=C ldd "$b" 2>&1 | grep -q '=>'; then
            derror "cloopbox: $b is dynamically linked; the module needs the static binary"
            return 1
        fi
        echo "$b"
        return 0
    done
    derror "cloopbox: no cloopbox binary (set CLOOPBOX_BIN=/path/to/static/cloopbox)"
    return 1
}

# 255: only when asked for (--add cloopbox, add_dracutmodules+=" cloopbox "),
# like dmsquash-live: a system installed on a disk never needs it.
check() {
    cloopbox_binary > /dev/null || return 1
    return 255
}

# dracut-ng (since 2025) has initqueue as a module of its own; older dracut
# (059 in Debian 12) keeps it in base and is told in install().
has_initqueue_module() {
    local d
    for d in "$dracutbasedir"/modules.d/[0-9][0-9]initqueue; do
        [[ -d $d ]] && return 0
    done
    return 1
}

depends() {
    has_initqueue_module && echo initqueue
    echo base
    return 0
}

# What a live boot from CD, USB stick or an ISO file on a disk needs.
# hostonly='' because the medium is not this host's disk. instmods skips
# what the kernel lacks or has built in.
installkernel() {
    hostonly='' instmods nbd overlay loop squashfs isofs udf erofs cdrom sr_mod \
        usb-storage uas sd_mod ahci ata_piix virtio_blk virtio_scsi virtio_pci \
        xhci_pci xhci_hcd ehci_pci ehci_hcd ohci_pci uhci_hcd mmc_block sdhci_pci nvme \
        vfat exfat ntfs3 ext4 crc32c_generic crc32c-intel \
        nls_cp437 nls_iso8859-1 nls_utf8 nls_ascii
}

install() {
    local bin
    bin=$(cloopbox_binary) || return 1
    inst_binary "$bin" /usr/bin/cloopbox
    # Before dmsquash-live's parse hook (cmdline 30), which would otherwise
    # take root=live:... for itself.
    inst_hook cmdline 25 "$moddir/parse-cloopbox.sh"
    inst_script "$moddir/cloopbox-root.sh" /sbin/cloopbox-root
    inst_hook pre-pivot 90 "$moddir/cloopbox-pre-pivot.sh"
    inst_multiple mount grep
    if ! has_initqueue_module && declare -F dracut_need_initqueue > /dev/null; then
        dracut_need_initqueue
    fi
}
