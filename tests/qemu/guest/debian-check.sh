#!/bin/bash
# The guest side of debian-systemd (tests/qemu/debian.sh), installed as
# /usr/local/sbin/cloopbox-check and run by systemd-run once the unit that
# starts it is done. Every marker is a line of its own on the serial port.
# With cloopbox.test=boot it only reports the boot (bench/boot-systemd.sh).
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
    for d in nbd0 ublkb0 loop0; do
        # reads, read sectors, writes, write sectors, discards, flushes
        [ -r /sys/block/$d/stat ] && say "BOOT-DISK: $d $(awk "{ print \$1, \$3, \$5, \$7, \$12, \$16 }" /sys/block/$d/stat)"
    done
    daemon=""
    for p in /proc/[0-9]*; do
        case $(tr "\0" " " 2>/dev/null < "$p/cmdline") in
            @*)
                daemon=$p/exe
                say "BOOT-DAEMON-CPU: ${p#/proc/} $(sed "s/^.*) //" "$p/stat" | cut -d" " -f12,13)"
                for t in "$p"/task/*; do
                    say "BOOT-DAEMON-THREAD: $(cat "$t/comm") $(sed "s/^.*) //" "$t/stat" | cut -d" " -f12,13)"
                done ;;
        esac
    done
    # The root device's cache counters, from its server's control socket,
    # asked by a daemon's own binary as cowdev (a multicall binary picks
    # the applet by the name it is started as); once per device.
    for d in nbd0 ublkb0; do
        [ -n "$daemon" ] && [ -e /sys/block/$d ] || continue
        (exec -a cowdev "$daemon" -l -v /dev/$d) 2> /dev/null |
            sed -n "s/^ *\(cache [a-z ]*[a-z]\): *\([0-9]*\)$/BOOT-DAEMON-COUNT: \1=\2/p" > /dev/ttyS0
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
