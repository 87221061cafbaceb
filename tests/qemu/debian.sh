# shellcheck shell=bash
# A real Debian system with systemd as the live root, and the root-storage
# daemon under signals. Sourced by qemu-test.sh; uses tests/qemu/lib.sh
# (prepare_debian builds the root, the image and the CD, shared with
# dracut.sh and bench/boot-systemd.sh).
#
# In the guest, cloopbox-test.service (wanted by multi-user.target) hands
# /usr/local/sbin/cloopbox-check (guest/debian-check.sh) to systemd-run
# --no-block: the check waits for `systemctl is-system-running --wait`,
# which a unit inside the boot transaction could not do without waiting for
# itself. The check prints its markers on /dev/ttyS0.

ALL_SCENARIOS+=(debian-systemd sigstop)
# debian13-systemd: the same with a Debian 13 root (systemd 257), run by
# name under KERNEL_SUITE=trixie (test.sh does), as DEBIAN_SUITE=trixie.
# debian13-ublk: debian13-systemd with cloopbox.transport=ublk (the root on
# /dev/ublkbN through ublk_drv), also by name under KERNEL_SUITE=trixie.

# --- scenario: debian-systemd ------------------------------------------------
# Debian bookworm (systemd, udev) from a CD through our initramfs: ext4 in
# cloop on /dev/nbdN with the cowfile on tmpfs, up to multi-user; writes,
# fstrim giving the tmpfs memory back, then systemctl poweroff through
# systemd-shutdown into our exit initramfs, which must detach cleanly.
# Takes 45-75 s under TCG on the shared 2-core machine (multi-user at
# 22-39 s), plus about 20 s to build the image on a first run and, without
# a tarball, 40 s to 2 min for debootstrap.
scenario_debian-systemd() {
    debian_systemd debian-systemd
}

scenario_debian13-systemd() {
    # Locals: prepare_debian's results for this root stay out of the way of
    # a debian-systemd in the same run.
    local DEBIAN_SUITE=trixie DEBIAN_TAR=$QEMU_LIB_ROOT/work/qemu/debian-trixie-root.tar DEBIAN_READY=""
    local DEBIAN_TREE DEBIAN_CLOOP DEBIAN_ISO DEBIAN_APPEND
    debian_systemd debian13-systemd
}

# --- scenario: debian13-ublk -------------------------------------------------
# The same boot with the root daemon on ublk: init loads ublk_drv and
# starts `cloopd --transport ublk`, so the root is /dev/ublkbN; cowdev,
# fstrim (ublk discards into the cowfile) and the exit initramfs's detach
# through @cloopbox/ublkbN must all work as they do over NBD.
scenario_debian13-ublk() {
    local DEBIAN_SUITE=trixie DEBIAN_TAR=$QEMU_LIB_ROOT/work/qemu/debian-trixie-root.tar DEBIAN_READY=""
    local DEBIAN_TREE DEBIAN_CLOOP DEBIAN_ISO DEBIAN_APPEND
    prepare_debian
    local iso=$WORK/debian-trixie/debian-ublk.iso
    make_iso "$iso" "$DEBIAN_APPEND cloopbox.transport=ublk" "$DEBIAN_CLOOP"
    SERVED_DEV=ublkb debian_systemd debian13-ublk -cdrom "$iso" -boot d
}

# debian_systemd NAME [QEMU ARGS...]: boots prepare_debian's CD (or what
# the QEMU ARGS give: net.sh's net-debian boots the image over HTTP) as
# scenario NAME.
debian_systemd() {
    local name=$1 dev=${SERVED_DEV:-nbd}
    shift
    prepare_debian
    [ $# -gt 0 ] || set -- -cdrom "$DEBIAN_ISO" -boot d
    local TIMEOUT=${QEMU_TIMEOUT:-600} log=$LOGS/$name.log t0=$SECONDS
    boot "$name" "reboot: Power down|Kernel panic|boot failed|cloopbox rescue" "$@"
    local pid pids=() forbid
    mapfile -t pids < <(tr -d '\r' < "$log" | awk '$1 == "DAEMON:" { print $2 }')
    pid=${pids[0]:-NONE}
    forbid=("I/O error" "nbd[0-9]*:? .*(timed out|Dead connection|shutting down)" "KMSG-BAD" "serving over NBD"
        "Sending SIGKILL to PID" "Killing process .*cloopd" "Killing process $pid "
        "likely to block re-mounting" "cloopbox-shutdown: unclean" "SD-VERDICT: FAIL" "TIMEOUT")
    local multi=${BOOT_SECS:-?}
    check_absent "$name" \
        "systemd multi-user at ${multi}s on /dev/${dev}N ext4, fstrim freed tmpfs, clean exitrd poweroff; run $((SECONDS - t0))s" \
        forbid "SD-STATE: (running|degraded)" "SD-VERDICT: ok" "SD-MULTI-USER: active" \
        "cloopbox: loaded ahead: ([a-z0-9_]+ )*ext4( [a-z0-9_]+)* \([0-9.]+ s on their own thread; waited for [0-9.]+ s\)" \
        "ROOTFS: /dev/${dev}[0-9]+ ext4" "COWMOUNT: tmpfs" "DAEMON: $pid @cloopd .*--root-daemon" \
        "DAEMON-oom: -1000" "DAEMON-VmLck:[[:space:]]+[1-9]" "WRITE: written at boot" "WRITE-READBACK: ok" \
        "TRIM-OUT: /: .* trimmed" "TRIM: OK" "CTL: +copy-on-write file: /run/initramfs/cow/KNOPPIX.cow" \
        "DAEMON-ALIVE: $pid [RS]" "CHECKS-DONE" "cloopbox-shutdown: /dev/${dev}[0-9]+ \\(pid $pid\\)" \
        "cloopbox-shutdown: clean shutdown, poweroff, 1 server flushed and detached" "reboot: Power down"
}

# --- scenario: sigstop -------------------------------------------------------
# The busybox live root (ext4 in cloop on /dev/nbdN, cowfile on tmpfs)
# under heavy I/O: a writer rewrites files with fsync, a reader drops the
# page cache and checksums files of the image, while the root-storage
# daemon gets SIGSTOP for 4 s and SIGCONT, three times (what systemd's
# broadcast_signal does at switch-root and shutdown), then SIGTERM and
# SIGHUP, which a root daemon ignores. The I/O must stall while it is
# stopped, resume, and read back right; same daemon, quiet kernel log.
# Takes 50-60 s under TCG on the shared 2-core machine.
#
# The controller runs from a tmpfs copy of busybox and of itself: while
# the daemon is stopped, every page-cache miss on the root blocks, and the
# process that has to send SIGCONT must not be the one that waits.
scenario_sigstop() {
    build_initrd
    local dir=$WORK/sigstop root=$WORK/sigstop/root t0=$SECONDS
    rm -rf "$dir" && mkdir -p "$dir"
    make_rootfs "$root"
    install -m 0755 "$GUEST/sigstop-init.sh" "$root/sbin/init"
    cp "$GUEST/sigstop.sh" "$root/sigstop.sh"
    mkdir -p "$root/data" "$root/mnt/ram"
    head -c 8M /dev/urandom > "$root/data/base.bin"
    (cd "$root" && sha256sum data/base.bin bin/cloopbox bin/busybox) > "$root/data/sums"
    cloop_of ext4 "$root" "$dir/root.cloop"
    make_iso "$dir/sigstop.iso" "$APPEND_BASE" "$dir/root.cloop"
    boot sigstop "SIGSTOP: (DONE|FAIL)|Kernel panic|boot failed|cloopbox rescue" -cdrom "$dir/sigstop.iso" -boot d
    local forbid=("SIGSTOP: FAIL" "I/O error" "nbd[0-9]*:? .*(timed out|Dead connection|shutting down)" "TIMEOUT")
    check_absent sigstop "3x SIGSTOP 4s/SIGCONT, SIGTERM, SIGHUP under fsync writes and cold reads; run $((SECONDS - t0))s" \
        forbid "SIGSTOP: daemon [0-9]+ serves /dev/nbd[0-9]+" "SIGSTOP: round 1: daemon state T" \
        "SIGSTOP: round 2: daemon state T" "SIGSTOP: round 3: daemon state T" "SIGSTOP: SIGTERM: daemon [0-9]+ state [RSD]" \
        "SIGSTOP: SIGHUP: daemon [0-9]+ state [RSD]" "SIGSTOP: data ok" "SIGSTOP: same daemon" \
        "SIGSTOP: kernel log clean" "SIGSTOP: DONE"
}
