#!/bin/sh
# PID 1 of the boot benchmark's root (bench/boot.sh boots it with
# init=/opt/bench/init): report what the boot read, time a whole-/usr
# read, power off.
BB=/opt/bench/busybox
read up _ < /proc/uptime
echo "ROOT-UP uptime=$up"
echo "ROOTFS: $($BB awk '$2 == "/" { l = $1 " " $3 } END { print l }' /proc/mounts)"
$BB dmesg | $BB grep -E 'Run /init|cloopbox|bench-init' | $BB sed 's/^/DMESG: /'
# The root device: the NBD (or ublk) device of cloopd or the loop device
# of the busybox initramfs. /sys/block/DEV/stat: reads completed, sectors
# read.
dev=
for q in nbd0 ublkb0 loop0; do
    [ -e /sys/block/$q/size ] && [ "$($BB cat /sys/block/$q/size)" != 0 ] && dev=$q && break
done
disk() { [ -z "$dev" ] || echo "$1 $dev $($BB awk '{ print $1, $3 }' /sys/block/$dev/stat)"; }
disk BOOT-DISK
if [ -n "$dev" ]; then
    q=/sys/block/$dev/queue
    echo "QUEUE: $dev lbs $($BB cat $q/logical_block_size) max_sectors_kb $($BB cat $q/max_sectors_kb)" \
        "max_hw_sectors_kb $($BB cat $q/max_hw_sectors_kb) read_ahead_kb $($BB cat $q/read_ahead_kb)" \
        "nr_hw_queues $($BB ls -d /sys/block/$dev/mq/* 2> /dev/null | $BB wc -l)"
fi
# cloopd's own counters (with cloopbox.verity=, the 4 KiB blocks hashed
# and refused too), through its control socket (cowdev -l -v, run
# from the daemon's own binary: a multicall binary picks the applet by
# the name it is started as).
daemon_status() {
    for p in /proc/[0-9]*; do
        case $($BB tr '\0' ' ' < $p/cmdline 2> /dev/null) in
            @cloopd*)
                $BB ln -sf $p/exe /tmp/cowdev
                /tmp/cowdev -l -v /dev/$dev 2> /dev/null | $BB sed -n "s/^ *\(cache [a-z ]*[a-z]\|verity [a-z]*\|rdoreads\|bytes read\): *\([0-9]*\)$/$1 \1=\2/p"
                return ;;
        esac
    done
}
daemon_status DAEMON-BOOT
snap() {
    echo "SNAP-$1 uptime $($BB cut -d' ' -f1 /proc/uptime)"
    echo "SNAP-$1 $($BB grep '^cpu ' /proc/stat)"
    # sectors read, reads completed
    $BB awk -v s="SNAP-$1" '$3 ~ /^(sr0|nbd0|ublkb0|loop0)$/ { print s, "disk", $3, $6, $4 }' /proc/diskstats
    # CPU ticks (user, system) of every task; root-storage daemons ('@' in
    # argv[0]) are named @daemon.
    for p in /proc/[0-9]*; do
        name=$($BB cat $p/comm 2> /dev/null) || continue
        case $($BB tr '\0' ' ' < $p/cmdline 2> /dev/null) in @*) name=@daemon ;; esac
        echo "SNAP-$1 task ${p#/proc/} $name $($BB sed 's/^.*) //' $p/stat | $BB awk '{ print $12, $13 }')"
    done
}
$BB sync
echo 3 > /proc/sys/vm/drop_caches
cd /
snap A
# The whole of /usr through a pipe, as `tar cf - /usr | wc -c`.
$BB sh -c '/opt/bench/busybox tar cf - usr 2> /dev/null | /opt/bench/busybox wc -c > /tmp/usr-bytes; echo "TAR-STATUS $?"
    echo "TAR-BYTES $(/opt/bench/busybox cat /tmp/usr-bytes)"
    echo "TAR-CPU $(/opt/bench/busybox sed "s/^.*) //" /proc/$$/stat | /opt/bench/busybox cut -d" " -f16,17)"'
snap B
daemon_status DAEMON-END
echo "BENCH-DONE"
$BB poweroff -f
