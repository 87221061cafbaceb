# shellcheck shell=bash
# Debian's own initramfs-tools with the cloopbox Debian package: boot=cloopbox.
# Sourced by qemu-test.sh; uses tests/qemu/lib.sh.
#
#   initramfs-tools  scripts/build-deb.sh makes the package; in a chroot of
#                    the Debian systemd root (tests/qemu/mkdebian.sh),
#                    tests/qemu/mkinitramfs-tools.sh installs initramfs-tools,
#                    the package and the test kernel, whose postinst runs
#                    update-initramfs. That initramfs boots the Debian
#                    systemd CD of debian.sh with boot=cloopbox to
#                    multi-user (the root ext4 on /dev/nbdN, served by a
#                    root-storage daemon that initramfs-tools' /init left
#                    running), and systemctl poweroff goes through
#                    cloopbox's exit initramfs, which detaches that server.
ALL_SCENARIOS+=(initramfs-tools)

scenario_initramfs-tools() {
    prepare_debian
    local dir=$WORK/initramfs-tools deb kdeb t0=$SECONDS
    mkdir -p "$dir"
    deb=$("$QEMU_LIB_ROOT/scripts/build-deb.sh" -b "$CLOOPBOX_BIN" --no-lintian 2>/dev/null)
    kdeb=$(find "$KERNEL_DIR" -maxdepth 1 -name 'linux-image-*.deb' | head -n1)
    if ! "$QEMU_LIB_ROOT/tests/qemu/mkinitramfs-tools.sh" "$dir/initrd.img" "$kdeb" "$deb" "$DEBIAN_TAR" \
        2> "$LOGS/initramfs-tools-build.log"; then
        record initramfs-tools FAIL "$((SECONDS - t0))" "update-initramfs in the chroot failed: see $LOGS/initramfs-tools-build.log"
        return 0
    fi
    MKLIVE_INITRD=$dir/initrd.img make_iso "$dir/debian-initramfs-tools.iso" "boot=cloopbox $DEBIAN_APPEND" "$DEBIAN_CLOOP"
    local TIMEOUT=${QEMU_TIMEOUT:-600} log=$LOGS/initramfs-tools.log
    boot initramfs-tools "reboot: Power down|Kernel panic|boot failed|cloopbox rescue|\\(initramfs\\)" \
        -cdrom "$dir/debian-initramfs-tools.iso" -boot d
    local pid pids=() forbid
    mapfile -t pids < <(tr -d '\r' < "$log" | awk '$1 == "DAEMON:" { print $2 }')
    pid=${pids[0]:-NONE}
    forbid=("I/O error" "nbd[0-9]*:? .*(timed out|Dead connection|shutting down)" "KMSG-BAD"
        "Killing process .*cloopd" "Killing process $pid " "cloopbox-shutdown: unclean" "SD-VERDICT: FAIL"
        "TIMEOUT" "\\(initramfs\\)")
    check_absent initramfs-tools \
        "Debian's update-initramfs with our .deb, boot=cloopbox: multi-user at ${BOOT_SECS:-?}s on /dev/nbdN, clean exitrd poweroff; run $((SECONDS - t0))s" \
        forbid "Loading, please wait" "cloopbox: /dev/nbd[0-9]+ served by pid $pid " \
        "SD-STATE: (running|degraded)" "SD-VERDICT: ok" "ROOTFS: /dev/nbd[0-9]+ ext4" \
        "DAEMON: $pid @cloopd .*--root-daemon" "DAEMON-oom: -1000" "WRITE-READBACK: ok" "CHECKS-DONE" \
        "cloopbox-shutdown: /dev/nbd[0-9]+ \\(pid $pid\\)" \
        "cloopbox-shutdown: clean shutdown, poweroff, 1 server flushed and detached" "reboot: Power down"
}
