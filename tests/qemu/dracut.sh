# shellcheck shell=bash
# dracut scenarios, sourced by qemu-test.sh (helpers from tests/qemu/lib.sh):
# live roots booted by a dracut
# initramfs that carries dracut-module/50cloopbox instead of our own init,
# with -kernel/-initrd/-append and the medium as a CD.
#
#   dracut          systemd in the initrd (dracut's systemd modules), the
#                   Debian systemd root of tests/qemu/debian.sh
#                   (lib.sh's prepare_debian, its CD as it is) up to multi-user,
#                   then systemctl poweroff through our exit initramfs
#   dracut-shell    the same with dracut's shell init (no systemd in the
#                   initrd)
#   dracut-iso9660  systemd in the initrd, the busybox root of lib.sh
#                   in an iso9660 image: read-only on nbd, overlayfs root;
#                   selected Knoppix-style by rd.cloopbox, without root=
#   dracut-no-medium  dracut's shell init and no medium: the reason, then
#                   dracut's emergency shell, within rootdelay
#   dracut13        as dracut, but the initramfs built by Debian 13's
#                   dracut (106, dracut-ng) inside a trixie chroot
#                   (tests/qemu/mkdracut-chroot.sh, the root of mkdebian.sh
#                   with SUITE=trixie), the same module and builder
#   dracut-net-shell  dracut-net with dracut's shell init
#   dracut13-net    dracut-net with the initramfs of Debian 13's dracut 106
#                   (its dracut-network in the trixie chroot)
#   dracut-net      as dracut, with dracut's network (mkdracut.sh -n:
#                   network-legacy, dhclient) and no medium at all: the root
#                   is root=live:http://images.test/KNOPPIX, from an nginx on
#                   the host's loopback reached through QEMU's guestfwd, the
#                   name resolved by net.sh's DNS responder (nameserver=,
#                   written to resolv.conf by dracut's ifup); the daemon's
#                   argv names the URL, and nginx's access log shows a small
#                   part of the image sent
#
# The initramfs images are built by tests/qemu/mkdracut.sh with the host's
# dracut (Debian package dracut-core); each image's flavour is checked
# there from its file list and here from the initrd's own pid 1, which the
# module's initqueue job reports with the daemon's pid:
#   cloopbox-dracut: /dev/nbdN served by pid P (IMAGE), initrd pid 1: systemd|init
# The root then has to show that same pid alive as @cloopd.
ALL_SCENARIOS+=(dracut dracut-shell dracut-iso9660 dracut-no-medium dracut13 dracut-net dracut-net-shell dracut13-net)

DRACUT_WORK=$WORK/dracut
DRACUT_FAILED="Kernel panic|no live root|Entering emergency mode|Could not boot|dracut Warning: FATAL|Failed to start .*Switch Root"

# build_dracut NAME FLAVOUR [SUITE]: the initramfs, rebuilt when the
# binary, the module or the builder changed: by the host's dracut, or with
# SUITE by that Debian release's dracut in a chroot of its root
# (initrd-FLAVOUR-SUITE.img). FLAVOUR systemd-net or shell-net: with
# dracut's network (mkdracut.sh -n). Returns non-zero (after recording a FAIL for
# NAME) if dracut could not build it.
# Under a lock: the parallel jobs of qemu-test.sh share DRACUT_WORK.
build_dracut() { # NAME FLAVOUR
    local fd rc=0
    mkdir -p "$DRACUT_WORK"
    exec {fd}> "$DRACUT_WORK/.lock"
    flock "$fd"
    build_dracut_locked "$@" || rc=$?
    exec {fd}>&-
    return "$rc"
}
build_dracut_locked() { # NAME FLAVOUR [SUITE]
    local name=$1 flavour=$2 suite=${3:-} out=$DRACUT_WORK/initrd-$2${3:+-$3}.img t0=$SECONDS
    if [ -n "$suite" ]; then
        local tar=$QEMU_LIB_ROOT/work/qemu/debian-$suite-root.tar
        MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null ||
            echo http://deb.debian.org/debian) SUITE=$suite tests/qemu/mkdebian.sh "$tar" > "$LOGS/$name.build.log" 2>&1 ||
            { record "$name" FAIL 0 "mkdebian.sh $suite: $(tail -n 1 "$LOGS/$name.build.log")"; return 1; }
        if ! tests/qemu/mkdracut-chroot.sh "$out" "$flavour" "$CLOOPBOX_BIN" "$KVER" "$KERNEL_DIR/pkg" "$tar" \
            "$suite" >> "$LOGS/$name.build.log" 2>&1; then
            record "$name" FAIL 0 "mkdracut-chroot $suite -f $flavour: $(tail -n 1 "$LOGS/$name.build.log")"
            return 1
        fi
        log "dracut $(cat "$out.version") ($suite): $flavour initramfs ready in $((SECONDS - t0))s"
        return 0
    fi
    if [ -f "$out" ] && [ "$out" -nt "$CLOOPBOX_BIN" ] &&
        [ -z "$(find dracut-module tests/qemu/mkdracut.sh -newer "$out" -print -quit)" ]; then
        return 0
    fi
    local net=()
    [ "${flavour%-net}" = "$flavour" ] || net=(-n)
    if ! tests/qemu/mkdracut.sh -o "$out" -f "${flavour%-net}" -b "$CLOOPBOX_BIN" -k "$KVER" \
        -m "$KERNEL_DIR/pkg" -w "$DRACUT_WORK" "${net[@]}" > "$LOGS/$name.build.log" 2>&1; then
        record "$name" FAIL 0 "mkdracut -f $flavour: $(tail -n 1 "$LOGS/$name.build.log")"
        return 1
    fi
    log "dracut: $flavour initramfs built in $((SECONDS - t0))s"
}

# daemon_pid NAME: the pid the initrd's hook reported for the first image.
daemon_pid() {
    tr -d '\r' < "$LOGS/$1.log" |
        sed -n 's/^cloopbox-dracut: \/dev\/nbd[0-9]* served by pid \([0-9]*\) .*/\1/p' | sed -n 1p
}

# dracut_debian NAME FLAVOUR PID1 CGROUP [SUITE]: the Debian systemd CD,
# booted by dracut (SUITE's, as build_dracut). CGROUP is where the daemon
# must be found in the running system: what keeps it alive differs between
# the flavours (docs/dracut.md). DRACUT_CHECKS (an array) adds patterns.
# Where the root comes from: DRACUT_ROOT (default root=live:cloop, the CD
# found by content), DRACUT_MEDIUM (QEMU arguments; default the CD),
# DRACUT_IMAGE (the image the daemon serves; default the one on the CD).
dracut_debian() {
    local name=$1 flavour=$2 pid1=$3 cgroup=$4 suite=${5:-} t0=$SECONDS
    local initrd=$DRACUT_WORK/initrd-$flavour${suite:+-$suite}.img made="dracut"
    build_dracut "$name" "$flavour" "$suite" || return 0
    if [ -n "$suite" ]; then
        made="dracut $(cat "$initrd.version") of $suite,"
        # dracut-ng's numbering goes on from 059 at 100.
        local v
        v=$(cat "$initrd.version")
        [ "${v%%[!0-9]*}" -ge 100 ] 2>/dev/null ||
            { record "$name" FAIL 0 "the $suite chroot has dracut '$v', not dracut-ng (100 or later)"; return 0; }
    fi
    prepare_debian
    local medium=(-cdrom "$DEBIAN_ISO") image=/run/initramfs/live/KNOPPIX/KNOPPIX
    [ -z "${DRACUT_MEDIUM+x}" ] || medium=("${DRACUT_MEDIUM[@]}")
    image=${DRACUT_IMAGE:-$image}
    # The image as a pattern: its dots literal.
    image=${image//./\\.}
    # shellcheck disable=SC2034 # boot() reads it
    local TIMEOUT=${QEMU_TIMEOUT:-600}
    boot "$name" "reboot: Power down|$DRACUT_FAILED" -kernel "$KERNEL" \
        -initrd "$initrd" -append "$DEBIAN_APPEND ${DRACUT_ROOT:-root=live:cloop}" \
        "${medium[@]}"
    local pid forbid
    pid=$(daemon_pid "$name")
    pid=${pid:-NONE}
    # shellcheck disable=SC2034 # check_absent reads it by name
    forbid=("I/O error" "nbd[0-9]*:? .*(timed out|Dead connection|shutting down)" "KMSG-BAD"
        "Sending SIGKILL to PID" "Killing process .*cloopd" "Killing process $pid " "likely to block re-mounting"
        "cloopbox-shutdown: unclean" "SD-VERDICT: FAIL" "TIMEOUT" "$DRACUT_FAILED")
    check_absent "$name" \
        "$made $flavour initrd: daemon pid $pid kept through switch-root, systemd multi-user at ${BOOT_SECS:-?}s, clean exitrd poweroff; run $((SECONDS - t0))s" \
        forbid "cloopbox-dracut: /dev/nbd[0-9]+ served by pid $pid \($image\), initrd pid 1: $pid1" \
        "SD-STATE: (running|degraded)" "SD-VERDICT: ok" "SD-MULTI-USER: active" "ROOTFS: /dev/nbd[0-9]+ ext4" \
        "COWMOUNT: tmpfs" "DAEMON: $pid @cloopd $image --device auto --root-daemon" \
        "DAEMON-cgroup: 0::$cgroup" \
        "DAEMON-oom: -1000" "WRITE: written at boot" "WRITE-READBACK: ok" "TRIM: OK" "DAEMON-ALIVE: $pid [RS]" \
        "CHECKS-DONE" "cloopbox-shutdown: /dev/nbd[0-9]+ \\(pid $pid\\)" \
        "cloopbox-shutdown: clean shutdown, poweroff, 1 server flushed and detached" "reboot: Power down" \
        ${DRACUT_CHECKS[@]+"${DRACUT_CHECKS[@]}"}
}

# systemd in the initrd: the daemon stays in the initqueue unit's cgroup
# (KillMode=process). Shell init: systemd moves it into init.scope.
scenario_dracut() { dracut_debian dracut systemd systemd /system.slice/dracut-initqueue.service; }
scenario_dracut-shell() { dracut_debian dracut-shell shell init /init.scope; }
# The initrd's pid 1 is trixie's systemd (257), the root's bookworm's (252).
scenario_dracut13() {
    local DRACUT_CHECKS=("systemd 257\\.[0-9.]+-[0-9]+~deb13u[0-9]+ running in system mode"
        "systemd 252\\.[0-9.]+-[0-9]+~deb12u[0-9]+ running in system mode")
    dracut_debian dracut13 systemd systemd /system.slice/dracut-initqueue.service trixie
}

# --- dracut-net --------------------------------------------------------------
# No medium: the image only on net.sh's nginx (a hard link to the Debian
# CD's image, named KNOPPIX), by name; dracut's network module brings eth0
# up with DHCP and writes nameserver= into /etc/resolv.conf, which the
# daemon's resolver reads. The daemon's argv must name the URL; nginx
# must have answered range requests only, less than the image in all
# (measured: about half of the compressed image for the boot to multi-user
# plus debian-check's reads, 35 MB uncompressed from the root device).
# dracut-net-shell: the same with dracut's shell init; dracut13-net: with
# Debian 13's dracut 106 and its dracut-network.
scenario_dracut-net() { dracut_net dracut-net systemd systemd /system.slice/dracut-initqueue.service; }
scenario_dracut-net-shell() { dracut_net dracut-net-shell shell init /init.scope; }
scenario_dracut13-net() {
    local DRACUT_CHECKS=("systemd 257\\.[0-9.]+-[0-9]+~deb13u[0-9]+ running in system mode")
    dracut_net dracut13-net systemd systemd /system.slice/dracut-initqueue.service trixie
}
# dracut_net NAME FLAVOUR PID1 CGROUP [SUITE]: as dracut_debian, the
# initramfs with dracut's network (FLAVOUR-net), the root from nginx.
dracut_net() {
    local name=$1 flavour=$2 pid1=$3 cgroup=$4 suite=${5:-} nd=$DRACUT_WORK/net-$1
    prepare_debian
    rm -rf "$nd" && mkdir -p "$nd/www"
    ln -f "$DEBIAN_CLOOP" "$nd/www/KNOPPIX" 2> /dev/null || cp "$DEBIAN_CLOOP" "$nd/www/KNOPPIX"
    # shellcheck disable=SC2034 # net_nginx_start and net_dns_start set them, net_netdev reads them
    NGINX_PORT="" DNS_PORT="" DNS_PID=""
    net_nginx_start "$nd" || { record "$name" FAIL 0 "nginx did not start"; return 0; }
    net_dns_start "$nd"
    net_netdev
    # shellcheck disable=SC2054 # commas inside QEMU's arguments
    local DRACUT_MEDIUM=(-netdev "$NET_NETDEV" -device virtio-net-pci,netdev=n0)
    local DRACUT_ROOT="no_timer_check root=live:http://images.test/KNOPPIX ip=dhcp nameserver=10.0.2.101"
    local DRACUT_IMAGE=http://images.test/KNOPPIX
    local DRACUT_CHECKS=(${DRACUT_CHECKS[@]+"${DRACUT_CHECKS[@]}"} "image on the server: ")
    dracut_debian "$name" "$flavour-net" "$pid1" "$cgroup" "$suite"
    net_nginx_stop "$nd"
    kill "$DNS_PID" 2> /dev/null || true
    local size sent whole read
    size=$(stat -c %s "$nd/www/KNOPPIX")
    sent=$(net_bytes "$nd" /KNOPPIX)
    # Responses that were not a range (200: the whole file).
    whole=$(awk '$3 == "/KNOPPIX" && $1 != 206' "$nd/access.log" | wc -l)
    read=$(tr -d '\r' < "$LOGS/$name.log" | sed -n 's/^CTL: *bytes read: *\([0-9]*\)$/\1/p' | head -n 1)
    log "$name: nginx sent $sent bytes of the $size-byte image in range requests ($whole other answers); the root device read ${read:-?} bytes (uncompressed) by the checks"
    grep -q "query images.test -> 10.0.2.100" "$nd/dns.log" ||
        record "$name-dns" FAIL - "the guest never asked our DNS responder for images.test"
    # Lazy: range requests only, and less than the image in all (the boot
    # and the checks read a part of the root; the figures are logged).
    if ! { [ "$sent" -gt 0 ] && [ "$sent" -lt "$size" ] && [ "$whole" = 0 ]; }; then
        record "$name-bytes" FAIL - "nginx sent $sent bytes of the $size-byte image, $whole answers not ranges: not lazy"
    fi
}

# --- dracut-iso9660 ----------------------------------------------------------
# The busybox root (lib.sh's make_rootfs) behind a first /sbin/init
# (guest/dracut-root-init.sh) that reports what the root sees of the
# initrd: each daemon the hook logged, by pid, still alive with its argv and
# cgroup, and the exit initramfs as systemd-shutdown would check it.
scenario_dracut-iso9660() {
    local name=dracut-iso9660 root=$DRACUT_WORK/rootfs
    build_dracut "$name" systemd || return 0
    make_rootfs "$root"
    mv "$root/sbin/init" "$root/sbin/init.guest"
    install -m 0755 "$GUEST/dracut-root-init.sh" "$root/sbin/init"
    # systemctl switch-root refuses a new root without os-release.
    printf 'NAME="cloopbox test root"\nID=cloopbox-test\n' > "$root/etc/os-release"
    cloop_of iso9660 "$root" "$DRACUT_WORK/root-iso.cloop"
    MKLIVE_INITRD=$DRACUT_WORK/initrd-systemd.img make_iso "$DRACUT_WORK/cd-iso.iso" "$APPEND_BASE rd.cloopbox" \
        "$DRACUT_WORK/root-iso.cloop"
    boot "$name" "CHECKS-DONE|$DRACUT_FAILED" -kernel "$KERNEL" -initrd "$DRACUT_WORK/initrd-systemd.img" \
        -append "$APPEND_BASE rd.cloopbox" -cdrom "$DRACUT_WORK/cd-iso.iso"
    local pid
    pid=$(daemon_pid "$name")
    check "$name" "dracut systemd initrd, rd.cloopbox, iso9660 image read-only on nbd, overlayfs root, daemon pid ${pid:-?} kept" \
        "cloopbox-dracut: /dev/nbd[0-9]+ served by pid ${pid:-NONE} \(/run/initramfs/live/KNOPPIX/KNOPPIX\), initrd pid 1: systemd" \
        "DRACUT-KMSG: pre-pivot: /dev/nbd[0-9]+ daemon pid ${pid:-NONE} alive" \
        "DRACUT-KMSG: exit initramfs staged in /run/initramfs" \
        "SURVIVED: pid ${pid:-NONE} argv @cloopd /run/initramfs/live/KNOPPIX/KNOPPIX --device auto --root-daemon" \
        "SURVIVED-cgroup: pid ${pid:-NONE} 0::/system.slice/dracut-initqueue.service" \
        "EXITRD: /run/initramfs/shutdown executable" "EXITRD: etc/initrd-release" "${OVERLAY_CHECKS[@]}"
}

# --- dracut-no-medium --------------------------------------------------------
# Nothing to boot from: liveroot gives up after rootdelay=3, the job prints
# why and starts dracut's emergency shell (named after the module), instead
# of dracut's initqueue waiting out its own 180 s.
scenario_dracut-no-medium() {
    local name=dracut-no-medium
    build_dracut "$name" shell || return 0
    boot "$name" "cloopbox:/#|Kernel panic|Could not boot" -kernel "$KERNEL" \
        -initrd "$DRACUT_WORK/initrd-shell.img" -append "$APPEND_BASE root=live:cloop rootdelay=3"
    check "$name" "no medium: liveroot's reason after rootdelay=3, then dracut's emergency shell" \
        "waiting for a medium with KNOPPIX/KNOPPIX: 2s of 3s" \
        "cloopbox: liveroot: no medium with KNOPPIX/KNOPPIX found within 3 s" \
        "cloopbox: no live root \\(exit 1\\); leave the shell to search again" "cloopbox:/#"
}
