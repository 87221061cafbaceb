# dracut scenarios, sourced by qemu-test.sh: the live root booted by a dracut
# initramfs that carries dracut-module/50cloopbox instead of our own init.
#
#   dracut        systemd in the initrd (dracut's systemd modules)
#   dracut-shell  dracut's shell init, no systemd in the initrd
#
# Both boot the same CD (KNOPPIX/KNOPPIX, an ext4 root in a cloop image)
# with -kernel/-initrd/-append and root=live:cloop. The root's /sbin/init
# reports how it was started and then runs qemu-test.sh's GUEST_INIT checks.
# The initramfs is built by tests/qemu/mkdracut.sh with the host's dracut
# (Debian package dracut-core).
ALL_SCENARIOS+=(dracut dracut-shell)

DRACUT_WORK=$WORK/dracut
UNTIL_DRACUT="CHECKS-DONE|Kernel panic|no live root|Entering emergency mode|Could not boot|dracut Warning: FATAL"

# What the root sees of the initrd that booted it: the flavour, each
# daemon the initrd started (by the pid its hook logged to kmsg) still
# alive with its argv, and the exit initramfs systemd-shutdown would use.
DRACUT_ROOT_INIT='#!/bin/sh
PATH=/bin:/sbin
echo "DRACUT-ROOT: up"
if dmesg | grep -q "systemd\[1\]: .*Switching root"; then echo "DRACUT-FLAVOUR: systemd";
elif dmesg | grep -q "dracut: Switching root"; then echo "DRACUT-FLAVOUR: shell"; fi
dmesg | sed -n "s/.*cloopbox-dracut: /DRACUT-KMSG: /p"
for pid in $(dmesg | sed -n "s/.*cloopbox-dracut: \/dev\/nbd[0-9]* served by pid \([0-9]*\) .*/\1/p"); do
    if [ -r /proc/$pid/cmdline ]; then
        echo "SURVIVED: pid $pid argv $(tr "\0" " " < /proc/$pid/cmdline)"
        echo "SURVIVED-cgroup: pid $pid $(cat /proc/$pid/cgroup)"
    else
        echo "LOST: pid $pid"
    fi
done
[ -x /run/initramfs/shutdown ] && echo "EXITRD: /run/initramfs/shutdown executable"
[ -f /run/initramfs/etc/initrd-release ] && echo "EXITRD: etc/initrd-release"
[ -e /run/initramfs/.need_shutdown ] && echo "EXITRD: .need_shutdown present"
exec /sbin/init.guest
'

# build_dracut FLAVOUR: the initramfs, rebuilt when the binary, the module
# or the builder changed.
build_dracut() {
    local flavour=$1 out=$DRACUT_WORK/initrd-$1.img
    mkdir -p "$DRACUT_WORK"
    if [ -f "$out" ] && [ "$out" -nt "$CLOOPBOX_BIN" ] &&
        [ -z "$(find dracut-module tests/qemu/mkdracut.sh -newer "$out" -print -quit)" ]; then
        return 0
    fi
    tests/qemu/mkdracut.sh -o "$out" -f "$flavour" -b "$CLOOPBOX_BIN" -k "$KVER" \
        -m "$WORK/kernel/pkg" -w "$DRACUT_WORK"
}

prepare_dracut_live() {
    [ -n "${DRACUT_LIVE_READY:-}" ] && return 0
    local root=$DRACUT_WORK/rootfs tree=$DRACUT_WORK/isotree
    mkdir -p "$DRACUT_WORK"
    make_rootfs "$root"
    mv "$root/sbin/init" "$root/sbin/init.guest"
    printf '%s' "$DRACUT_ROOT_INIT" > "$root/sbin/init"
    chmod 0755 "$root/sbin/init"
    rm -rf "$tree" && mkdir -p "$tree/KNOPPIX"
    cloop_of ext4 "$root" "$tree/KNOPPIX/KNOPPIX"
    xorriso -as mkisofs -quiet -R -J -V KNOPPIX -o "$DRACUT_WORK/cd.iso" "$tree"
    DRACUT_LIVE_READY=1
}

DRACUT_CHECKS=("DRACUT-KMSG: /dev/nbd[0-9]+ served by pid [0-9]+ \(/run/initramfs/live/KNOPPIX/KNOPPIX\)"
    "DRACUT-KMSG: pre-pivot: /dev/nbd[0-9]+ daemon pid [0-9]+ alive"
    "DRACUT-KMSG: exit initramfs staged in /run/initramfs"
    "SURVIVED: pid [0-9]+ argv @cloopd /run/initramfs/live/KNOPPIX/KNOPPIX --device auto --root-daemon"
    "EXITRD: /run/initramfs/shutdown executable" "EXITRD: etc/initrd-release"
    "${BLOCK_COW_CHECKS[@]}")

# run_dracut NAME FLAVOUR: boots the CD with the FLAVOUR initramfs.
run_dracut() {
    local name=$1 flavour=$2
    if ! build_dracut "$flavour" > "$LOGS/$name.build.log" 2>&1; then
        record "$name" FAIL 0 "mkdracut -f $flavour failed: $(tail -n 1 "$LOGS/$name.build.log")"
        return 0
    fi
    prepare_dracut_live
    boot "$name" "$UNTIL_DRACUT" -kernel "$KERNEL" -initrd "$DRACUT_WORK/initrd-$flavour.img" \
        -append "$APPEND_BASE root=live:cloop" -cdrom "$DRACUT_WORK/cd.iso"
    check "$name" "dracut $flavour-flavour initramfs, module 50cloopbox: ext4 root on nbd, daemon survived" \
        "DRACUT-FLAVOUR: $flavour" "${DRACUT_CHECKS[@]}"
}

scenario_dracut() { run_dracut dracut systemd; }
scenario_dracut-shell() { run_dracut dracut-shell shell; }
