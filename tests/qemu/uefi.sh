# shellcheck shell=bash
# The hybrid media of initramfs/mklive.sh on PC firmware, all on the q35
# machine (the CD on AHCI, as real PCs have it), sourced by qemu-test.sh
# with the helpers of tests/qemu/lib.sh:
#
#   uefi-secureboot       OVMF with Secure Boot enforced and Microsoft's
#                         keys (a fresh copy of the variable store each
#                         run): Debian's signed shim, signed GRUB and
#                         signed kernel from the CD; the guest proves Secure
#                         Boot from its own view (guest/efi.sh), nbd.ko
#                         loads under lockdown, the root is on nbd and
#                         takes writes; poweroff through the exit initramfs
#   uefi                  OVMF without Secure Boot, the ISO made with
#                         --no-secure-boot (unsigned GRUB) written to a USB
#                         disk: the same checks say Secure Boot is off
#   bios-usb-persistence  SeaBIOS, the ISO made with --persistence written
#                         to a USB disk: a file written in one boot is
#                         found in the next, with no boot option typed
#                         (init mounts the medium through the disk's first
#                         partition, so the persistence partition is free).
ALL_SCENARIOS+=(uefi-secureboot uefi bios-usb-persistence)

OVMF=/usr/share/OVMF
UEFI_WORK=$WORK/uefi

# ovmf_args SECURE VARS: QEMU arguments for OVMF (4 MiB flash), with a
# fresh copy of the variable store at VARS: Microsoft's keys with Secure
# Boot enforced (SECURE=1; needs SMM and secure flash), or none.
ovmf_args() {
    local secure=$1 vars=$2
    if [ "$secure" = 1 ]; then
        cp "$OVMF/OVMF_VARS_4M.ms.fd" "$vars"
        OVMF_ARGS=(-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on
            -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF/OVMF_CODE_4M.secboot.fd")
    else
        cp "$OVMF/OVMF_VARS_4M.fd" "$vars"
        OVMF_ARGS=(-machine q35 -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF/OVMF_CODE_4M.fd")
    fi
    OVMF_ARGS+=(-drive "if=pflash,format=raw,unit=1,file=$vars")
}

# usb_stick ISO STICK: the ISO written to a USB stick 64 MiB larger than it,
# as dd does to a real one; USB_ARGS plug it into xHCI, booted first.
usb_stick() {
    cp "$1" "$2"
    truncate -s +64M "$2"
    USB_ARGS=(-device qemu-xhci,id=xhci -drive "if=none,id=stick,format=raw,file=$2"
        -device usb-storage,bus=xhci.0,drive=stick,bootindex=0)
}

EFI_ROOT_CHECKS=("ROOTFS: /dev/nbd[0-9]+ ext4" "COWFILE: KNOPPIX.cow" "DAEMON: [0-9]+ @cloopd" "WRITE: written at boot"
    "CTL: +cowblocks in use: +[1-9]" "EFI: booted through UEFI" "EFI: efivarfs module loaded"
    "cloopbox-shutdown: /dev/nbd[0-9]+ \\(pid [0-9]+\\): /dev/nbd[0-9]+ detached, cowfile flushed"
    "cloopbox-shutdown: clean shutdown, poweroff, 1 server flushed and detached")

scenario_uefi-secureboot() {
    prepare_live
    mkdir -p "$UEFI_WORK"
    local iso=$UEFI_WORK/secureboot.iso
    make_iso "$iso" "$APPEND_BASE cloopbox.test=efi" "$WORK/root-ext4.cloop"
    ovmf_args 1 "$UEFI_WORK/vars-secureboot.fd"
    local TIMEOUT=${QEMU_TIMEOUT:-600}
    boot uefi-secureboot "$SHUTDOWN_UNTIL" "${OVMF_ARGS[@]}" -drive "file=$iso,media=cdrom,readonly=on"
    check uefi-secureboot "OVMF Secure Boot (MS keys): shim, signed GRUB and kernel from CD on AHCI; guest sees SecureBoot=1, lockdown, signed nbd.ko; root on nbd; exitrd poweroff" \
        "EFI-SECUREBOOT-VAR: 1" "EFI-KMSG: secureboot: Secure boot enabled" \
        "EFI-KMSG: Kernel is locked down from EFI Secure Boot" "EFI-LOCKDOWN: none \\[integrity\\] confidentiality" \
        "EFI-NBD: loaded, taint ''" "EFI-CDROM: /sys/devices/pci0000:00/0000:00:1f\\.2/ata[0-9]+/" \
        "cloopbox: medium: /dev/sr0 \\(iso9660, label 'KNOPPIX'\\)" "${EFI_ROOT_CHECKS[@]}"
}

scenario_uefi() {
    prepare_live
    mkdir -p "$UEFI_WORK"
    local iso=$UEFI_WORK/uefi.iso
    local MKLIVE_ARGS=(--no-secure-boot)
    make_iso "$iso" "$APPEND_BASE cloopbox.test=efi" "$WORK/root-ext4.cloop"
    ovmf_args 0 "$UEFI_WORK/vars-uefi.fd"
    usb_stick "$iso" "$UEFI_WORK/uefi-usb.img"
    local TIMEOUT=${QEMU_TIMEOUT:-600}
    boot uefi "$SHUTDOWN_UNTIL" "${OVMF_ARGS[@]}" "${USB_ARGS[@]}"
    check uefi "OVMF without Secure Boot, unsigned GRUB, ISO on a USB disk: guest sees SecureBoot=0, no lockdown; root on nbd; exitrd poweroff" \
        "Booting .cloopbox live" "EFI-SECUREBOOT-VAR: 0" "EFI-LOCKDOWN: \\[none\\] integrity confidentiality" \
        "cloopbox: medium: /dev/sd[a-z][0-9]* \\(iso9660, label 'KNOPPIX'\\)" "${EFI_ROOT_CHECKS[@]}"
}

scenario_bios-usb-persistence() {
    prepare_live
    mkdir -p "$UEFI_WORK"
    local iso=$UEFI_WORK/persistence.iso
    local MKLIVE_ARGS=(--persistence 64M)
    make_iso "$iso" "$APPEND_BASE cloopbox.test=usb-persist" "$WORK/root-ext4.cloop"
    usb_stick "$iso" "$UEFI_WORK/persistence-usb.img"
    local cow=/run/initramfs/persist/live/knoppix.cow
    boot bios-usb-persistence-1 "$SHUTDOWN_UNTIL" -machine q35 "${USB_ARGS[@]}"
    check bios-usb-persistence-1 "BIOS from a USB disk: the appended partition found by its label, cowfile created, file written, clean shutdown" \
        "cloopbox: medium: /dev/sd[a-z][0-9]* \\(iso9660" "persistence: /live/knoppix.cow on /dev/sd[a-z][0-9]+" \
        "persistence: creating $cow" "served on /dev/nbd0 by pid [0-9]+ with the persistent cowfile" \
        "USB-PERSIST-1: wrote kept from boot" "cloopbox-shutdown: clean shutdown, poweroff, 1 server flushed and detached"
    local id
    id=$(tr -d '\r' < "$LOGS/bios-usb-persistence-1.log" | sed -n 's/^USB-PERSIST-1: wrote kept from boot //p')
    boot bios-usb-persistence-2 "$SHUTDOWN_UNTIL" -machine q35 "${USB_ARGS[@]}"
    check bios-usb-persistence-2 "second boot from the same disk: the file of boot one (its boot id) is there" \
        "persistence: using $cow" "USB-PERSIST-2: found kept from boot ${id:-NONE}" \
        "cloopbox-shutdown: clean shutdown, poweroff, 1 server flushed and detached"
}
