# shellcheck shell=bash
# A real Debian system with systemd as the live root, and the root-storage
# daemon under signals. Sourced by qemu-test.sh (its helpers: boot, check,
# record, make_iso, build_initrd, make_rootfs, cloop_of, WORK, LOGS,
# CLOOPBOX_BIN, APPEND_BASE); bench/boot-systemd.sh sources it for
# debian_tree.
#
# For other scenario files: prepare_debian builds, once per run,
#   DEBIAN_TREE    the unpacked root with the test pieces (debian_tree)
#   DEBIAN_CLOOP   that tree as ext4 in cloop (64 KiB blocks)
#   DEBIAN_ISO     a bootable CD with our initramfs and DEBIAN_CLOOP
#   DEBIAN_APPEND  its kernel command line
# The root comes from tests/qemu/mkdebian.sh as a tarball, DEBIAN_TAR
# (default $WORK/debian-root.tar; set it to share one across worktrees).
#
# In the guest, cloopbox-test.service (wanted by multi-user.target) hands
# /usr/local/sbin/cloopbox-check to systemd-run --no-block: the check
# waits for `systemctl is-system-running --wait`, which a unit inside the
# boot transaction could not do without waiting for itself. The check
# prints its markers on /dev/ttyS0. With cloopbox.test=boot on the kernel
# command line it only reports the boot (for the benchmark).

ALL_SCENARIOS+=(debian-systemd sigstop)
DEBIAN_TAR=${DEBIAN_TAR:-$WORK/debian-root.tar}

# The guest side of debian-systemd, run by systemd-run once the unit that
# starts it is done. Every marker is a line of its own on the serial port.
# shellcheck disable=SC2016 # a guest script: it expands in the guest
DEBIAN_CHECK='#!/bin/bash
set -u
say() { echo "$*" > /dev/ttyS0; }
state=$(systemctl is-system-running --wait 2>&1)
read -r up _ < /proc/uptime
say "ROOT-UP multi-user uptime=$up"
say "SD-STATE: $state"
if grep -qw cloopbox.test=boot /proc/cmdline; then
    say "SD-ANALYZE: $(systemd-analyze time 2>&1 | head -n 1)"
    # What the boot cost the storage: requests and sectors read from the
    # root device, and the CPU time (ticks) of the root-storage daemons.
    for d in nbd0 loop0; do
        # reads, read sectors, writes, write sectors, discards, flushes
        [ -r /sys/block/$d/stat ] && say "BOOT-DISK: $d $(awk "{ print \$1, \$3, \$5, \$7, \$12, \$16 }" /sys/block/$d/stat)"
    done
    for p in /proc/[0-9]*; do
        case $(tr "\0" " " 2>/dev/null < "$p/cmdline") in
            @*)
                say "BOOT-DAEMON-CPU: ${p#/proc/} $(sed "s/^.*) //" "$p/stat" | cut -d" " -f12,13)"
                for t in "$p"/task/*; do
                    say "BOOT-DAEMON-THREAD: $(cat "$t/comm") $(sed "s/^.*) //" "$t/stat" | cut -d" " -f12,13)"
                done ;;
        esac
    done
    say "BOOT-DONE uptime=$up state=$state"
    exit 0
fi
say "SD-MULTI-USER: $(systemctl is-active multi-user.target)"
say "SD-ANALYZE: $(systemd-analyze time 2>&1 | head -n 1)"
# degraded is acceptable only when no failed unit has to do with the root
# storage: mounts, fsck, udev, the journal and the units that write to /.
related=""
while read -r unit _; do
    [ -n "$unit" ] || continue
    say "SD-FAILED: $unit"
    journalctl -b -u "$unit" -n 8 -o cat --no-pager 2>&1 | sed "s/^/SD-FAILED-LOG: /" > /dev/ttyS0
    case $unit in
        *.mount | *.swap | *.automount | *nbd* | *cloop* | *fsck* | *remount* | local-fs* | systemd-udev* | \
            systemd-journal* | systemd-tmpfiles* | systemd-random-seed* | systemd-update-utmp* | *initramfs* | blk*)
            related+=" $unit" ;;
    esac
done < <(systemctl --failed --no-legend --plain 2>&1)
case $state in
    running) say "SD-VERDICT: ok (running)" ;;
    degraded)
        if [ -z "$related" ]; then
            say "SD-VERDICT: ok (degraded; the failed units above have nothing to do with the root storage)"
        else
            say "SD-VERDICT: FAIL failed units that touch the root storage:$related"
        fi ;;
    *) say "SD-VERDICT: FAIL system state $state" ;;
esac

say "ROOTFS: $(findmnt -n -o SOURCE,FSTYPE /)"
say "COWMOUNT: $(findmnt -n -o FSTYPE /run/initramfs/cow)"
pids=""
for p in /proc/[0-9]*; do
    c=$(tr "\0" " " 2>/dev/null < "$p/cmdline") || continue
    case $c in
        @*)
            pid=${p#/proc/}
            pids+=" $pid"
            say "DAEMON: $pid $c"
            say "DAEMON-oom: $(cat "$p/oom_score_adj")"
            say "DAEMON-$(grep VmLck "$p/status")"
            say "DAEMON-cgroup: $(cat "$p/cgroup")"
            ;;
    esac
done

# Writes reach the cowfile and read back after the page cache is gone.
echo "written at boot $(cat /proc/sys/kernel/random/boot_id)" > /root/written && sync && say "WRITE: $(cat /root/written)"
mkdir -p /var/tmp/cloopbox-test
for i in 1 2 3 4 5 6 7 8; do
    head -c $((512 * 1024 + i * 4099)) /dev/urandom > "/var/tmp/cloopbox-test/f$i"
done
(cd /var/tmp/cloopbox-test && sha256sum f*) > /run/sums
sync
echo 3 > /proc/sys/vm/drop_caches
if (cd /var/tmp/cloopbox-test && sha256sum -c --quiet /run/sums) > /dev/ttyS0 2>&1; then
    say "WRITE-READBACK: ok, 8 files"
else
    say "WRITE-READBACK: MISMATCH"
fi

# fstrim must give the memory of deleted data back: the cow tmpfs usage
# grows by the big file and drops again after rm + fstrim.
cow=/run/initramfs/cow
used() { df --output=used -B1 "$cow" | tail -n 1 | tr -d " "; }
alloc() { du --block-size=1 "$cow"/*.cow | awk "{ s += \$1 } END { print s }"; }
u0=$(used) a0=$(alloc)
dd if=/dev/urandom of=/root/big bs=1M count=64 conv=fsync status=none
u1=$(used) a1=$(alloc)
rm /root/big
sync
fstrim -v / 2>&1 | sed "s/^/TRIM-OUT: /" > /dev/ttyS0
u2=$(used) a2=$(alloc)
say "COW-USAGE: tmpfs used (bytes) before $u0, after a 64 MiB write $u1, after rm + fstrim $u2"
say "COW-ALLOC: cowfile allocated (bytes) before $a0, after the write $a1, after rm + fstrim $a2"
grown=$((u1 - u0)) freed=$((u1 - u2))
if [ "$grown" -ge $((60 << 20)) ] && [ "$freed" -ge $((48 << 20)) ]; then
    say "TRIM: OK grew $grown bytes, fstrim freed $freed bytes"
else
    say "TRIM: FAIL grew $grown bytes, fstrim freed $freed bytes"
fi

# The control socket is abstract: it still answers after switch_root.
cowdev -l -v 2>&1 | sed "s/^/CTL: /" > /dev/ttyS0
dmesg | grep -E "I/O error|nbd.*(timed out|Dead connection|shutting down|stuck|control failed)" | sed "s/^/KMSG-BAD: /" > /dev/ttyS0
for pid in $pids; do
    say "DAEMON-ALIVE: $pid $(cut -d" " -f3 "/proc/$pid/stat" 2>/dev/null || echo gone)"
done
say "CHECKS-DONE"
systemctl poweroff
'

# debian_tree DIR: the Debian root from DEBIAN_TAR, unpacked into DIR,
# with the test pieces: the check above, the unit that starts it, cowdev
# (our binary, staged by init as /run/initramfs/shutdown), and no getty on
# the serial port (agetty's vhangup would cut the check off its tty).
debian_tree() {
    local t=$1
    rm -rf "$t" && mkdir -p "$t"
    tar --numeric-owner -xf "$DEBIAN_TAR" -C "$t"
    install -D -m 0755 /dev/stdin "$t/usr/local/sbin/cloopbox-check" <<< "$DEBIAN_CHECK"
    ln -s /run/initramfs/shutdown "$t/usr/local/sbin/cowdev"
    cat > "$t/etc/systemd/system/cloopbox-test.service" <<'UNIT'
[Unit]
Description=cloopbox test: start the checks outside the boot transaction

[Service]
Type=oneshot
ExecStart=/usr/bin/systemd-run --no-block --unit=cloopbox-check --description="cloopbox checks" /usr/local/sbin/cloopbox-check

[Install]
WantedBy=multi-user.target
UNIT
    mkdir -p "$t/etc/systemd/system/multi-user.target.wants"
    ln -s ../cloopbox-test.service "$t/etc/systemd/system/multi-user.target.wants/cloopbox-test.service"
    ln -s /dev/null "$t/etc/systemd/system/serial-getty@ttyS0.service"
}

# debian_ext4_cloop TREE OUT: TREE as ext4 (4 KiB blocks, a quarter plus
# 256 MiB free for the writes of the checks), compressed by our
# create_compressed_fs with 64 KiB blocks. Inode tables and journal are
# written by mkfs, so the guest's ext4lazyinit has nothing to do.
debian_ext4_cloop() {
    local tree=$1 out=$2 fs=$2.ext4 mb
    mb=$(($(du -sb "$tree" | cut -f1) * 5 / 4 / 1048576 + 256))
    rm -f "$fs" && truncate -s "${mb}M" "$fs"
    mkfs.ext4 -q -F -b 4096 -L KNOPPIX_FS -d "$tree" -E lazy_itable_init=0,lazy_journal_init=0 "$fs"
    "$CLOOPBOX_BIN" create_compressed_fs -q -B 65536 "$fs" "$out.tmp"
    mv "$out.tmp" "$out"
    rm -f "$fs"
}

# prepare_debian: the tarball (built once), the tree, the image and the
# ISO. The image is rebuilt only when the tarball or this file changed.
prepare_debian() {
    [ -n "${DEBIAN_READY:-}" ] && return 0
    build_initrd
    tests/qemu/mkdebian.sh "$DEBIAN_TAR"
    local dir=$WORK/debian key
    mkdir -p "$dir"
    DEBIAN_TREE=$dir/tree
    DEBIAN_CLOOP=$dir/root-ext4.cloop
    DEBIAN_ISO=$dir/debian.iso
    # systemd logs to the console, so its kills (or their absence) and the
    # shutdown sequence are in the serial log.
    DEBIAN_APPEND="$APPEND_BASE systemd.log_target=console"
    key="$(stat -c '%s %Y' "$DEBIAN_TAR") $(sha256sum < "${BASH_SOURCE[0]}" | cut -c1-16)"
    if [ ! -f "$DEBIAN_CLOOP" ] || [ "$(cat "$dir/key" 2>/dev/null)" != "$key" ]; then
        log "debian: unpacking $DEBIAN_TAR and compressing the root"
        debian_tree "$DEBIAN_TREE"
        debian_ext4_cloop "$DEBIAN_TREE" "$DEBIAN_CLOOP"
        echo "$key" > "$dir/key"
    fi
    make_iso "$DEBIAN_ISO" "$DEBIAN_APPEND" "$DEBIAN_CLOOP"
    DEBIAN_READY=1
}

# check_absent NAME DETAIL ABSENT-ARRAY PATTERN...: check, but FAIL first
# if any regex of the array named ABSENT-ARRAY is in the log.
check_absent() {
    local name=$1 detail=$2 log=$LOGS/$1.log found="" pat
    local -n absent=$3
    shift 3
    if [ "$INTERACTIVE" != 1 ]; then
        for pat in "${absent[@]}"; do grep -qE -- "$pat" "$log" && found+="'$pat' "; done
    fi
    if [ -n "$found" ]; then
        record "$name" FAIL "${BOOT_SECS:-$BOOT_TOTAL}" "found $found- see $log"
        return 0
    fi
    check "$name" "$detail" "$@"
}

# --- scenario: debian-systemd ------------------------------------------------
# Debian bookworm (systemd, udev) from a CD through our initramfs: ext4 in
# cloop on /dev/nbdN with the cowfile on tmpfs, up to multi-user; writes,
# fstrim giving the tmpfs memory back, then systemctl poweroff through
# systemd-shutdown into our exit initramfs, which must detach cleanly.
# Takes 45-75 s under TCG on the shared 2-core machine (multi-user at
# 22-39 s), plus about 20 s to build the image on a first run and, without
# a tarball, 40 s to 2 min for debootstrap.
scenario_debian-systemd() {
    prepare_debian
    local TIMEOUT=${QEMU_TIMEOUT:-600} log=$LOGS/debian-systemd.log t0=$SECONDS
    boot debian-systemd "reboot: Power down|Kernel panic|boot failed|cloopbox rescue" \
        -cdrom "$DEBIAN_ISO" -boot d
    local pid pids=() forbid
    mapfile -t pids < <(tr -d '\r' < "$log" | awk '$1 == "DAEMON:" { print $2 }')
    pid=${pids[0]:-NONE}
    forbid=("I/O error" "nbd[0-9]*:? .*(timed out|Dead connection|shutting down)" "KMSG-BAD"
        "Sending SIGKILL to PID" "Killing process .*cloopd" "Killing process $pid "
        "likely to block re-mounting" "cloopbox-shutdown: unclean" "SD-VERDICT: FAIL" "TIMEOUT")
    local multi=${BOOT_SECS:-?}
    check_absent debian-systemd \
        "systemd multi-user at ${multi}s on /dev/nbdN ext4, fstrim freed tmpfs, clean exitrd poweroff; run $((SECONDS - t0))s" \
        forbid "SD-STATE: (running|degraded)" "SD-VERDICT: ok" "SD-MULTI-USER: active" \
        "ROOTFS: /dev/nbd[0-9]+ ext4" "COWMOUNT: tmpfs" "DAEMON: $pid @cloopd .*--root-daemon" \
        "DAEMON-oom: -1000" "DAEMON-VmLck:[[:space:]]+[1-9]" "WRITE: written at boot" "WRITE-READBACK: ok" \
        "TRIM-OUT: /: .* trimmed" "TRIM: OK" "CTL: +copy-on-write file: /run/initramfs/cow/KNOPPIX.cow" \
        "DAEMON-ALIVE: $pid [RS]" "CHECKS-DONE" "cloopbox-shutdown: /dev/nbd[0-9]+ \\(pid $pid\\)" \
        "cloopbox-shutdown: clean shutdown, poweroff" "reboot: Power down"
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
# shellcheck disable=SC2016 # a guest script: it expands in the guest
SIGSTOP_INIT='#!/bin/sh
PATH=/bin:/sbin
echo "ROOT-UP"
mount -t tmpfs -o size=96m ram /mnt/ram || { echo "SIGSTOP: FAIL mount the tmpfs"; poweroff -f; }
mkdir /mnt/ram/bin
cp /bin/busybox /mnt/ram/busybox
for a in $(busybox --list); do ln -s ../busybox /mnt/ram/bin/$a; done
cp /sigstop.sh /data/sums /mnt/ram/
exec /mnt/ram/busybox sh /mnt/ram/sigstop.sh
'

# shellcheck disable=SC2016 # a guest script: it expands in the guest
SIGSTOP_CTL='#!/bin/sh
export PATH=/mnt/ram/bin
R=/mnt/ram
pid=""
fail() {
    [ -n "$pid" ] && kill -CONT $pid 2>/dev/null
    echo "SIGSTOP: FAIL $*"
    touch $R/stop
    dmesg | grep -iE "nbd|I/O error|ext4" | tail -n 20 | sed "s/^/SIGSTOP-DMESG: /"
    sync
    poweroff -f
}
daemons() {
    for p in /proc/[0-9]*; do
        case $(tr "\0" " " 2>/dev/null < $p/cmdline) in @cloopd*) echo ${p#/proc/} ;; esac
    done
}
state() { cut -d" " -f3 /proc/$pid/stat 2>/dev/null || echo gone; }
pid=$(daemons)
case $pid in "" | *" "*) fail "expected one @cloopd daemon, found \"$pid\"" ;; esac
dev=$(awk "\$2 == \"/\" { d = \$1 } END { print d }" /proc/mounts)
case $dev in /dev/nbd[0-9]*) ;; *) fail "the root is on \"$dev\", not on nbd" ;; esac
nbd=${dev#/dev/}
echo "SIGSTOP: daemon $pid serves $dev (kernel: pid $(cat /sys/block/$nbd/pid 2>/dev/null))"
grep -E "^Sig(Ign|Blk)" /proc/$pid/status | sed "s/^/SIGSTOP-DAEMON-/"
head -c 2097152 /dev/urandom > $R/src.bin
want=$(sha256sum < $R/src.bin | cut -d" " -f1)
mkdir -p /io
echo 0 > $R/wcount
echo 0 > $R/rcount
: > $R/bad
# The writer: 2 MiB files rewritten in turn, each with fsync.
(
    n=0
    while [ ! -f $R/stop ]; do
        dd if=$R/src.bin of=/io/w$((n % 4)) bs=64k conv=fsync 2> /dev/null || echo "write $n failed" >> $R/bad
        n=$((n + 1))
        # Renamed into place: a reader never sees the file empty.
        echo $n > $R/wcount.new && mv $R/wcount.new $R/wcount
    done
) &
writer=$!
# The reader: files of the image, from the device every time.
(
    n=0
    while [ ! -f $R/stop ]; do
        echo 3 > /proc/sys/vm/drop_caches
        (cd / && sha256sum -c -s $R/sums) || echo "read pass $n: checksum mismatch" >> $R/bad
        n=$((n + 1))
        echo $n > $R/rcount.new && mv $R/rcount.new $R/rcount
    done
) &
reader=$!
sleep 4
[ "$(cat $R/wcount)" -gt 0 ] || fail "no write finished in 4 s, before any signal"
for r in 1 2 3; do
    w0=$(cat $R/wcount) r0=$(cat $R/rcount)
    kill -STOP $pid
    sleep 1
    st=$(state)
    sleep 3
    w1=$(cat $R/wcount) r1=$(cat $R/rcount)
    kill -CONT $pid
    sleep 3
    w2=$(cat $R/wcount) r2=$(cat $R/rcount)
    echo "SIGSTOP: round $r: daemon state $st while stopped; writes done $w0 -> $w1 (4 s stopped) -> $w2 (3 s after SIGCONT); read passes $r0 -> $r1 -> $r2"
    [ "$st" = T ] || fail "round $r: the daemon did not stop (state $st)"
    # One write may finish between reading the counter and the signal.
    [ $((w1 - w0)) -le 1 ] || fail "round $r: writes completed while the daemon was stopped"
    [ "$w2" -gt "$w1" ] || fail "round $r: writes did not resume after SIGCONT"
done
for sig in TERM HUP; do
    w0=$(cat $R/wcount)
    kill -$sig $pid
    sleep 3
    w1=$(cat $R/wcount)
    st=$(state)
    echo "SIGSTOP: SIG$sig: daemon $pid state $st; writes done $w0 -> $w1"
    case $st in R | S | D) ;; *) fail "SIG$sig: the daemon is gone (state $st)" ;; esac
    [ "$w1" -gt "$w0" ] || fail "SIG$sig: no write finished in 3 s"
done
touch $R/stop
wait $writer
wait $reader
if [ -s $R/bad ]; then
    sed "s/^/SIGSTOP-BAD: /" $R/bad
    fail "I/O failed or read back wrong under the signals"
fi
sync
echo 3 > /proc/sys/vm/drop_caches
for i in 0 1 2 3; do
    [ "$(sha256sum < /io/w$i | cut -d" " -f1)" = "$want" ] || fail "/io/w$i reads back wrong"
done
(cd / && sha256sum -c $R/sums) > $R/sumout 2>&1 || { sed "s/^/SIGSTOP-SUM: /" $R/sumout; fail "image files read back wrong"; }
sed "s/^/SIGSTOP-SUM: /" $R/sumout
echo "SIGSTOP: data ok: 4 rewritten files and $(wc -l < $R/sums) image files match ($(cat $R/wcount) writes, $(cat $R/rcount) read passes)"
now=$(daemons)
[ "$now" = "$pid" ] || fail "daemons now \"$now\", was $pid"
[ -e /sys/block/$nbd/pid ] || fail "$dev lost its connection"
echo "SIGSTOP: same daemon $pid, $dev still connected"
if dmesg | grep -iE "nbd.*(timed out|Dead connection|shutting down|stuck|control failed)|I/O error" > $R/kmsg; then
    sed "s/^/SIGSTOP-KMSG: /" $R/kmsg
    fail "the kernel logged NBD errors"
fi
echo "SIGSTOP: kernel log clean"
echo "SIGSTOP: DONE"
sync
poweroff -f
'

scenario_sigstop() {
    build_initrd
    local dir=$WORK/sigstop root=$WORK/sigstop/root t0=$SECONDS
    rm -rf "$dir" && mkdir -p "$dir"
    make_rootfs "$root"
    printf '%s' "$SIGSTOP_INIT" > "$root/sbin/init"
    printf '%s' "$SIGSTOP_CTL" > "$root/sigstop.sh"
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
