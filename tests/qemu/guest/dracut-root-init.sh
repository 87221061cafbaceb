#!/bin/sh
# First /sbin/init of the dracut-iso9660 root (tests/qemu/dracut.sh): what
# the root sees of the initrd, then the busybox root's own init (init.guest).
PATH=/bin:/sbin
echo "DRACUT-ROOT: up"
dmesg | sed -n "s/.*cloopbox-dracut: /DRACUT-KMSG: /p"
for pid in $(dmesg | sed -n "s/.*cloopbox-dracut: \/dev\/nbd[0-9]* served by pid \([0-9]*\) .*/\1/p"); do
    if [ -r /proc/$pid/cmdline ]; then
        echo "SURVIVED: pid $pid argv $(tr "\0" " " < /proc/$pid/cmdline)"
        echo "SURVIVED-cgroup: pid $pid $(cat /proc/$pid/cgroup)"
    else
        echo "LOST: pid $pid"
    fi
done
echo "RUN-MOUNT: $(awk "\$2 == \"/run\" { print \$4 }" /proc/mounts)"
[ -x /run/initramfs/shutdown ] && echo "EXITRD: /run/initramfs/shutdown executable"
[ -f /run/initramfs/etc/initrd-release ] && echo "EXITRD: etc/initrd-release"
[ -e /run/initramfs/.need_shutdown ] && echo "EXITRD: .need_shutdown present"
exec /sbin/init.guest
