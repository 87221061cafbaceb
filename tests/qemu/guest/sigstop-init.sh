#!/bin/sh
# /sbin/init of the sigstop scenario (tests/qemu/debian.sh): the controller
# (sigstop.sh) runs from a tmpfs copy of busybox and of itself: while the
# daemon is stopped, every page-cache miss on the root blocks, and the
# process that has to send SIGCONT must not be the one that waits.
PATH=/bin:/sbin
echo "ROOT-UP"
mount -t tmpfs -o size=96m ram /mnt/ram || { echo "SIGSTOP: FAIL mount the tmpfs"; poweroff -f; }
mkdir /mnt/ram/bin
cp /bin/busybox /mnt/ram/busybox
for a in $(busybox --list); do ln -s ../busybox /mnt/ram/bin/$a; done
cp /sigstop.sh /data/sums /mnt/ram/
exec /mnt/ram/busybox sh /mnt/ram/sigstop.sh
