# shellcheck shell=bash
# Failures in a live session (issue 14), on prepare_live's busybox root;
# sourced by qemu-test.sh with the helpers of tests/qemu/lib.sh.
#
#   cow-full          the block cow on a 24 MiB tmpfs (cowsize=24M), filled
#                     from the guest (guest/cow-full.sh): the writer fails,
#                     the console says once that the cow space is full and
#                     how to get more, the system stays up, the file
#                     written before is intact after drop_caches, and after
#                     deleting and fstrim writing works again
#   cow-full-overlay  the same with the overlayfs upper on that tmpfs
#                     (iso9660 image): the root daemon's --watch-space
#                     says it
#   rescue-restart    the rescue shell restarts when it exits
#   reboot, halt      the exitrd with those verbs
#   kexec             the exitrd's kexec verb into a kernel loaded by
#                     `cloopbox kexec -l`
#   oom               a memory hog: killed, the root daemon never
ALL_SCENARIOS+=(cow-full cow-full-overlay)


# cow_full NAME ISO DETAIL EXTRA-PATTERN...: boots ISO's image with a
# small cow tmpfs and the fill; the full message must be on the console
# exactly once.
cow_full() {
    local name=$1 iso=$2 detail=$3 n
    shift 3
    prepare_live
    boot "$name" "$UNTIL_LIVE" -kernel "$KERNEL" -initrd "$WORK/initrd.gz" -cdrom "$iso" \
        -append "$APPEND_BASE cowsize=24M cloopbox.test=cow-full"
    if [ "$INTERACTIVE" != 1 ]; then
        # Anywhere in a line (the guest's output interleaves), and the
        # kernel does not echo warnings at loglevel=4.
        n=$(grep -ao "cloopd: copy-on-write space full: " "$LOGS/$name.log" | wc -l || true)
        echo "HOST: the full message is on the console $n time(s)" >> "$LOGS/$name.log"
    fi
    check "$name" "$detail" "$@" "COWFULL: before written, sha256 [0-9a-f]{64}" \
        "COWFULL: writer failed after [0-9]+ MiB: .*(No space left on device|Input/output error)" \
        "cowsize=SIZE|larger cowsize=" "COWFULL: still up" "COWFULL: before intact after drop_caches" \
        "COWFULL: writing works again, read back" "HOST: the full message is on the console 1 time\(s\)" "CHECKS-DONE"
}

scenario_cow-full() {
    cow_full cow-full "$WORK/cd-ext4.iso" \
        "block cow on a 24 MiB tmpfs filled: ENOSPC/EIO, said once, root up, data intact, fstrim gives room" \
        "ROOTFS: /dev/nbd[0-9]+ ext4" "COWFULL: root is ext4, cow tmpfs 24576 KiB" \
        "cloopd: copy-on-write space full: cowfile /run/initramfs/cow/KNOPPIX.cow cannot grow" \
        "COWFULL-TRIM: /: [1-9][0-9]* bytes trimmed" \
        "COWFULL-MOUNT: /dev/nbd[0-9]+ / ext4 rw"
}

scenario_cow-full-overlay() {
    cow_full cow-full-overlay "$WORK/cd-iso.iso" \
        "overlay upper on a 24 MiB tmpfs filled: ENOSPC, said once by the watch, root up, data intact, delete gives room" \
        "ROOTFS: overlay overlay" "COWFULL: root is overlay, cow tmpfs 24576 KiB" \
        "cloopd: copy-on-write space full: /run/initramfs/cow has no space left" "DAEMON: [0-9]+ @cloopd .*--watch-space /run/initramfs/cow"
}

# rescue-restart: no medium, so init drops to the rescue shell; the host
# types a command and exit into it, init starts a new shell, and the
# host's next command is answered by that one. The first shell leaves its
# answer in a file, not on the console: when a session leader exits, the
# kernel hangs up its controlling terminal (tty_vhangup_session), and the
# hangup discards output still waiting for the serial port. "echo X; exit"
# lost its X that way under load (1 run in 8 with both host cores busy).
# The second shell computes its answer from that file, so "RESCUE-TWO 42"
# proves that both shells ran the host's commands. Its answer also needs
# the rescue shell's tools (the busybox of scripts/build-busybox.sh):
# mounting, the kernel log, processes, awk, sed and tee must all work for
# the words after 42 to appear (the typed command holds none of the line).
ALL_SCENARIOS+=(rescue-restart)
scenario_rescue-restart() {
    prepare_live
    local two='echo RESCUE-TWO $(($(cat /rescue-one)*7))'
    two+=' $(mount -t tmpfs r /mnt && echo ok | tee /mnt/t | sed s/ok/MOUNT-OK/ && cat /mnt/t)'
    two+=' $(dmesg | grep -q "Linux version" && echo DMESG-OK) $(ps | awk '"'"'$NF == "/init" { print "PS-OK"; exit }'"'"')'
    local BOOT_TYPE=('dropping to the rescue shell' 'echo $((2*3)) > /rescue-one; exit\n'
        'the rescue shell exited; starting it again' "$two\n")
    boot rescue-restart "RESCUE-TWO 42|Kernel panic" -kernel "$KERNEL" -initrd "$WORK/initrd.gz" \
        -append "$APPEND_BASE rootdelay=3"
    check rescue-restart "the rescue shell exits, init starts it again, the new one answers with the old one's result, using its tools" \
        "boot failed: no medium" "the rescue shell exited; starting it again" "RESCUE-TWO 42 MOUNT-OK ok DMESG-OK PS-OK"
}

# reboot, halt: a clean shutdown through the exitrd with another verb than
# poweroff. The exitrd's last line names the verb and the one server it
# flushed and detached; then the kernel's own line for the verb. With
# -no-reboot a reboot ends QEMU by itself.
ALL_SCENARIOS+=(reboot halt)
exitrd_verb() { # NAME VERB KERNEL-LINE
    prepare_live
    # A reboot ends only by QEMU's exit (-no-reboot), not by a line.
    local until="reboot: (System halted|Power down)|Kernel panic|boot failed|cloopbox rescue"
    [ "$2" = reboot ] || until+="|reboot: Restarting system"
    boot "$1" "$until" \
        -kernel "$KERNEL" -initrd "$WORK/initrd.gz" -cdrom "$WORK/cd-ext4.iso" \
        -append "$APPEND_BASE cloopbox.test=exitrd cloopbox.verb=$2"
    [ "$INTERACTIVE" = 1 ] || echo "HOST: QEMU ended by $BOOT_END" >> "$LOGS/$1.log"
    local end=until
    [ "$2" != reboot ] || end=exit
    check "$1" "clean shutdown through the exitrd with $2: one server flushed and detached, then $3" \
        "ROOTFS: /dev/nbd[0-9]+ ext4" "EXITRD: handing over" \
        "cloopbox-shutdown: /dev/nbd0 \(pid [0-9]+\): /dev/nbd0 detached, cowfile flushed" \
        "cloopbox-shutdown: clean shutdown, $2, 1 server flushed and detached" "reboot: $3" "HOST: QEMU ended by $end"
}
scenario_reboot() { exitrd_verb reboot reboot "Restarting system"; }
scenario_halt() { exitrd_verb halt halt "System halted"; }

# kexec: the exitrd's kexec verb starts a kernel loaded with `cloopbox
# kexec -l` (the medium's own); that kernel boots the medium again, with
# another boot id, and powers off cleanly.
ALL_SCENARIOS+=(kexec)
scenario_kexec() {
    prepare_live
    boot kexec "cloopbox-shutdown: (clean shutdown, poweroff|unclean)|KEXEC: FAILED|Kernel panic|boot failed|cloopbox rescue" \
        -kernel "$KERNEL" -initrd "$WORK/initrd.gz" -cdrom "$WORK/cd-ext4.iso" \
        -append "$APPEND_BASE cloopbox.test=kexec cloopbox.verb=kexec"
    local first second
    first=$(grep -a "^KEXEC: loaded" "$LOGS/kexec.log" | tr -d '\r' | sed -n 's/.*first boot id //p')
    second=$(grep -a "^KEXEC: second kernel up" "$LOGS/kexec.log" | tr -d '\r' | sed -n 's/.*boot id //p')
    [ -z "$first" ] || [ -z "$second" ] || [ "$first" = "$second" ] ||
        echo "HOST: two boots, two boot ids" >> "$LOGS/kexec.log"
    check kexec "exitrd kexec: one server flushed and detached, the loaded kernel boots the medium again" \
        "KEXEC: loaded /mnt-system/boot/vmlinuz" \
        "cloopbox-shutdown: clean shutdown, kexec, 1 server flushed and detached" \
        "KEXEC: second kernel up" "cloopbox-shutdown: clean shutdown, poweroff, 1 server flushed and detached" \
        "HOST: two boots, two boot ids"
}

# oom: 320 MiB of RAM, a memory hog while the root is read
# (guest/oom.sh): the kernel kills the hog, never the root daemon.
ALL_SCENARIOS+=(oom)
scenario_oom() {
    prepare_live
    QEMU_MEM=320 boot oom "$UNTIL_LIVE" -kernel "$KERNEL" -initrd "$WORK/initrd.gz" -cdrom "$WORK/cd-ext4.iso" \
        -append "$APPEND_BASE cloopbox.test=oom"
    local forbid=("Killed process [0-9]+ \((cloopbox|@cloopd|cloopd)\)" "OOM: hog 2 ended with status 0")
    check_absent oom "memory hog under 320 MiB while reading the root: the hog is killed, the daemon lives" forbid \
        "OOM: daemon [0-9]+, oom_score_adj -1000, VmLck: [1-9]" "Out of memory: Killed process [0-9]+ \(dd\)" \
        "OOM: hog [0-2] ended with status 137" "OOM: daemon [0-9]+ still alive: @cloopd" \
        "OOM-SUM: $(sha256sum < /bin/busybox | cut -d' ' -f1) /bin/busybox" "CHECKS-DONE"
}
