# shellcheck shell=bash
# Storage controllers (issue 14): prepare_live's ext4 live ISO, booted with
# the medium on the controllers real machines have. QEMU loads our kernel
# and initramfs (-kernel), so what is tested is init's path: the driver
# set loaded by modalias, the medium found through it. Each scenario checks
# the disk init found and the drivers bound along its path to the PCI bus
# (guest/init.sh's BLOCKDEV line: only a working driver binds), and that
# the controller's module is loaded (MODULES).
#
#   ahci          q35, the CD on the ICH9 AHCI controller
#   nvme-findiso  the ISO file on an ext4 partition of an NVMe disk, findiso=
#   usb-xhci      the ISO as a USB stick (usb-storage) on qemu-xhci
#   uas           the ISO on a UAS disk (usb-uas) on qemu-xhci
#   virtio-scsi   the CD as scsi-cd on virtio-scsi
#   sdhci         the ISO on an SD card on sdhci-pci (mmc_block is loaded
#                 by the MODALIAS=mmc:block of the card's uevent file: the
#                 mmc bus has no modalias attribute)
ALL_SCENARIOS+=(ahci nvme-findiso usb-xhci uas virtio-scsi sdhci)

# storage_boot NAME DETAIL MEDIUM-REGEX BLOCKDEV-REGEX MODULE [APPEND] -- QEMU ARGS...
storage_boot() {
    local name=$1 detail=$2 medium=$3 blockdev=$4 module=$5 append=$6
    shift 7
    prepare_live
    boot "$name" "$UNTIL_LIVE" -kernel "$KERNEL" -initrd "$WORK/initrd.gz" -append "$APPEND_BASE $append" "$@"
    check "$name" "$detail" "cloopbox: medium: $medium" "BLOCKDEV: $blockdev" "MODULES: (.* )?$module " \
        "${BLOCK_COW_CHECKS[@]}"
}

scenario_ahci() {
    storage_boot ahci "q35, CD on AHCI: sr0 through ahci" "/dev/sr0 \\(iso9660" "sr0 sr( .*)? ahci" ahci "" -- \
        -machine q35 -drive if=none,id=cd,media=cdrom,readonly=on,file="$WORK/cd-ext4.iso" -device ide-cd,bus=ide.2,drive=cd
}

scenario_nvme-findiso() {
    prepare_live
    part_disk "$WORK/nvme-iso.img" ext4 NVDATA 120 "$WORK/cd-ext4.iso:isos/live.iso"
    storage_boot nvme-findiso "findiso=/isos/live.iso on ext4 on NVMe: nvme0n1 through nvme" \
        "/dev/loop[0-9]+ \\(iso9660" "nvme0n1( .*)? nvme" nvme "findiso=/isos/live.iso" -- \
        -drive if=none,id=nv,format=raw,file="$WORK/nvme-iso.img" -device nvme,serial=cloopbox0,drive=nv
}

scenario_usb-xhci() {
    storage_boot usb-xhci "ISO as a usb-storage stick on xHCI: sda through usb-storage, xhci_hcd" \
        "/dev/sd[a-z]" "sd[a-z] sd .*usb-storage .*xhci_hcd" usb_storage "" -- \
        -device qemu-xhci,id=xhci -drive if=none,id=stick,format=raw,readonly=on,file="$WORK/cd-ext4.iso" \
        -device usb-storage,bus=xhci.0,drive=stick
}

scenario_uas() {
    storage_boot uas "ISO on a UAS disk on xHCI: sda through uas, xhci_hcd" \
        "/dev/sd[a-z]" "sd[a-z] sd .*uas .*xhci_hcd" uas "" -- \
        -device qemu-xhci,id=xhci -device usb-uas,id=uas,bus=xhci.0 \
        -drive if=none,id=stick,format=raw,readonly=on,file="$WORK/cd-ext4.iso" \
        -device scsi-hd,bus=uas.0,scsi-id=0,lun=0,drive=stick
}

scenario_virtio-scsi() {
    storage_boot virtio-scsi "CD as scsi-cd on virtio-scsi: sr0 through virtio_scsi" \
        "/dev/sr0 \\(iso9660" "sr0 sr .*virtio_scsi" virtio_scsi "" -- \
        -device virtio-scsi-pci,id=scsi -drive if=none,id=cd,media=cdrom,readonly=on,file="$WORK/cd-ext4.iso" \
        -device scsi-cd,bus=scsi.0,drive=cd
}

# QEMU's sd-card wants a power-of-2 size: the ISO, padded.
scenario_sdhci() {
    prepare_live
    local img=$WORK/sdcard.img size=1048576 len
    len=$(stat -c %s "$WORK/cd-ext4.iso")
    while [ "$size" -lt "$len" ]; do size=$((size * 2)); done
    cp "$WORK/cd-ext4.iso" "$img" && truncate -s "$size" "$img"
    storage_boot sdhci "ISO on an SD card on sdhci-pci: mmcblk0 through mmcblk, sdhci-pci" \
        "/dev/mmcblk0" "mmcblk0 mmcblk .*sdhci-pci" sdhci_pci "" -- \
        -device sdhci-pci -drive if=none,id=sd,format=raw,file="$img" -device sd-card,drive=sd
}
