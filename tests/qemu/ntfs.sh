# shellcheck shell=bash
# ISO files where Windows users keep them (issue 14): findiso= on an NTFS
# disk. The kernel's NTFS driver is ntfs3 (Linux 5.15 and later), which
# Debian 13's 6.12 kernel has and Debian 12's 6.1 does not. So this
# scenario expects, by KERNEL_SUITE:
#   trixie    the ISO found on the NTFS partition through ntfs3, attached
#             to a loop device, and the live system up;
#   bookworm  the boot fails with init's clear reason: the partition is
#             NTFS and this kernel has no ntfs3 driver (then the rescue
#             shell), never a silent skip or a hang.
ALL_SCENARIOS+=(findiso-ntfs)

scenario_findiso-ntfs() {
    prepare_live
    part_disk "$WORK/ntfs-iso.img" ntfs WINDATA 120 "$WORK/cd-ext4.iso:knoppix.iso"
    local args=(-kernel "$KERNEL" -initrd "$WORK/initrd.gz" -drive if=virtio,format=raw,file="$WORK/ntfs-iso.img")
    if [ "$KERNEL_SUITE" = bookworm ]; then
        boot findiso-ntfs "cloopbox rescue|Kernel panic|CHECKS-DONE" "${args[@]}" \
            -append "$APPEND_BASE findiso=/knoppix.iso rootdelay=5"
        check findiso-ntfs "findiso= on NTFS under $KVER (no ntfs3): the reason named, rescue shell" \
            "boot failed: no medium with knoppix.iso" \
            "/dev/vda1: cannot mount \(ntfs3: this kernel has no ntfs3 driver \(NTFS needs the ntfs3 driver" \
            "cloopbox rescue"
    else
        boot findiso-ntfs "$UNTIL_LIVE" "${args[@]}" -append "$APPEND_BASE findiso=/knoppix.iso"
        check findiso-ntfs "findiso=/knoppix.iso on NTFS through ntfs3 ($KVER), loop-mounted" \
            "/knoppix.iso on /dev/vda1 \(ntfs3\): attached to /dev/loop[0-9]+" "MODULES: (.* )?ntfs3 " \
            "${BLOCK_COW_CHECKS[@]}"
    fi
}
