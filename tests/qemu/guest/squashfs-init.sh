#!/bin/sh
# /init of the benchmarks' contender, the usual live boot reduced to its
# steps: modules (lib/modules/load, in dependency order), the CD, the
# compressed root (squashfs or EROFS, named in /fstype) on a loop device,
# overlayfs with a tmpfs upper, switch_root to init= of the kernel command
# line (default /sbin/init). Each step is marked on the console and in the
# kernel log.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs -o mode=0755 devtmpfs /dev
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mark() { echo "bench-init: $*"; echo "bench-init: $*" > /dev/kmsg; }
mark start
while read -r m; do insmod "/lib/modules/$m"; done < /lib/modules/load
mark modules loaded
mkdir -p /run/live/medium /run/live/rootfs /run/live/overlay
# Polled every 250 ms, as cloopbox's init polls for its medium.
n=0
until mount -t iso9660 -o ro /dev/sr0 /run/live/medium 2> /dev/null; do
    n=$((n + 1))
    [ $n -lt 240 ] || { echo "bench-init: no CD"; exec sh; }
    sleep 0.25
done
mark medium mounted
read -r fstype < /fstype
losetup -r /dev/loop0 /run/live/medium/KNOPPIX/KNOPPIX
mount -t "$fstype" -o ro /dev/loop0 /run/live/rootfs
mount -t tmpfs -o mode=0755 tmpfs /run/live/overlay
mkdir -p /run/live/overlay/upper /run/live/overlay/work
mount -t overlay -o lowerdir=/run/live/rootfs,upperdir=/run/live/overlay/upper,workdir=/run/live/overlay/work overlay /newroot
mark root mounted
init=/sbin/init
for a in $(cat /proc/cmdline); do case $a in init=*) init=${a#init=} ;; esac; done
for d in dev proc sys run; do mount --move /$d /newroot/$d; done
mark switching to the new root
exec switch_root /newroot "$init"
