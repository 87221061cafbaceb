#!/bin/sh
# /sbin/init of the busybox live root (tests/qemu/lib.sh make_rootfs): reports
# how / is mounted, the NBD mounts, the cow tmpfs, the root-storage daemons
# and that a write sticks; cloopbox.test=NAME runs /tests/NAME.sh; then it
# powers off (or, with cloopbox.demo=shell, leaves a shell).
PATH=/bin:/sbin
echo "ROOT-UP"
echo "ROOTFS: $(awk '$2 == "/" { line = $1 " " $3 } END { print line }' /proc/mounts)"
awk '$1 ~ /^\/dev\/nbd/ { print "NBDMOUNT: " $1 " " $2 " " $3 }' /proc/mounts
awk '$2 == "/run/initramfs/cow" { print "COWMOUNT: " $3 }' /proc/mounts
for f in /run/initramfs/cow/*; do echo "COWFILE: ${f##*/}"; done
for p in /proc/[0-9]*; do
    c=$(tr "\0" " " < $p/cmdline 2>/dev/null)
    case "$c" in @*) echo "DAEMON: ${p#/proc/} $c"; echo "DAEMON-oom: $(cat $p/oom_score_adj)";
        grep VmLck $p/status | sed "s/^/DAEMON-/"
        # The build the initramfs carried (cd-small: without https), asked
        # of the daemon's own binary through a link to /proc/PID/exe named
        # cloopbox (the front door has --version): it still runs the
        # deleted initramfs's file.
        if [ -z "$features" ]; then
            ln -sf "$p/exe" /tmp/cloopbox
            features=$(/tmp/cloopbox --version 2>&1 | sed -n 's/^features: //p')
            echo "DAEMON-FEATURES: $features."
            rm -f /tmp/cloopbox
        fi ;;
    esac
done
echo "written at boot $(cat /proc/sys/kernel/random/boot_id)" > /root/written && sync && echo "WRITE: $(cat /root/written)"
[ -f /etc/knoppix1 ] && echo "MULTI: $(cat /etc/knoppix1)"
# A file in both images: the multi scenario checks that KNOPPIX's wins.
echo "ISSUE: $(cat /etc/issue)"
# The control sockets are abstract: they still answer after switch_root.
cowdev -l -v 2>&1 | sed "s/^/CTL: /"
[ -e /mnt-system/KNOPPIX/KNOPPIX ] && echo "MNT-SYSTEM: ok"
[ -e /run/initramfs/live/KNOPPIX/KNOPPIX ] && echo "LIVE: ok"
# Every disk with the drivers bound along its path to the root bus (the
# storage-controller scenarios check theirs), and the modules loaded.
for b in /sys/block/*; do
    case ${b##*/} in loop* | nbd* | ram* | zram*) continue ;; esac
    p=$(readlink -f "$b/device" 2>/dev/null) || continue
    d=""
    while [ -n "$p" ] && [ "$p" != /sys/devices ]; do
        [ -e "$p/driver" ] && d="$d $(basename "$(readlink "$p/driver")")"
        p=${p%/*}
    done
    echo "BLOCKDEV: ${b##*/}$d"
done
echo "MODULES: $(cut -d" " -f1 /proc/modules | sort | tr "\n" " ")"
# Scenario-specific steps: cloopbox.test=NAME runs /tests/NAME.sh here.
for t in $(tr " " "\n" < /proc/cmdline | sed -n "s/^cloopbox.test=//p"); do
    [ -f /tests/$t.sh ] && . /tests/$t.sh
done
echo "CHECKS-DONE"
sync
if grep -q cloopbox.demo=shell /proc/cmdline; then
    echo "This is the live system: / is writable, changes go to the tmpfs under /run/initramfs/cow."
    echo "Type poweroff -f to leave."
    exec setsid -c sh
fi
poweroff -f
