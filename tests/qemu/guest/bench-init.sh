#!/bin/sh
# PID 1 of the benchmark's root: report, time a whole-tree read, power off.
BB=/opt/bench/busybox
read up _ < /proc/uptime
echo "ROOT-UP uptime=$up"
echo "ROOTFS: $($BB awk '$2 == "/" { l = $1 " " $3 } END { print l }' /proc/mounts)"
$BB dmesg | $BB grep -E 'Run /init|cloopbox|bench-init' | $BB sed 's/^/DMESG: /'
snap() {
    echo "SNAP-$1 uptime $($BB cut -d' ' -f1 /proc/uptime)"
    echo "SNAP-$1 $($BB grep '^cpu ' /proc/stat)"
    # sectors read, reads completed
    $BB awk -v s="SNAP-$1" '$3 ~ /^(sr0|nbd0|loop0)$/ { print s, "disk", $3, $6, $4 }' /proc/diskstats
    # CPU ticks (user, system) of every task; root-storage daemons ('@' in
    # argv[0]) are named @daemon.
    for p in /proc/[0-9]*; do
        name=$($BB cat $p/comm 2> /dev/null) || continue
        case $($BB tr '\0' ' ' < $p/cmdline 2> /dev/null) in @*) name=@daemon ;; esac
        echo "SNAP-$1 task ${p#/proc/} $name $($BB sed 's/^.*) //' $p/stat | $BB awk '{ print $12, $13 }')"
    done
}
for q in /sys/block/nbd0 /sys/block/loop0; do
    [ -e $q/size ] && [ "$($BB cat $q/size)" != 0 ] || continue
    echo "QUEUE: ${q##*/} lbs $($BB cat $q/queue/logical_block_size) max_sectors_kb $($BB cat $q/queue/max_sectors_kb) read_ahead_kb $($BB cat $q/queue/read_ahead_kb)"
done
$BB sync
echo 3 > /proc/sys/vm/drop_caches
cd /
set --
for d in *; do
    case $d in proc | sys | dev | run | tmp | mnt-system | lost+found) ;; *) set -- "$@" "$d" ;; esac
done
snap A
$BB sh -c '/opt/bench/busybox tar cf /dev/null "$@" 2> /dev/null; echo "TAR-STATUS $?";
    /opt/bench/busybox sed -n "s/^rchar: /TAR-RCHAR /p" /proc/$$/io
    echo "TAR-CPU $(/opt/bench/busybox sed "s/^.*) //" /proc/$$/stat | /opt/bench/busybox cut -d" " -f14,15)"' sh "$@"
snap B
# What one extra pass over the data costs here: 210 MB written into and
# read out of a pipe (two copies, as through the NBD socket).
t0=$($BB cut -d' ' -f1 /proc/uptime)
$BB dd if=/dev/zero bs=131072 count=1600 2> /dev/null | $BB dd of=/dev/null bs=131072 2> /dev/null
echo "PIPE-210MB $t0 $($BB cut -d' ' -f1 /proc/uptime)"
echo "BENCH-DONE"
$BB poweroff -f
