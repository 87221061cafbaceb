#!/bin/sh
# initqueue job (installed as /sbin/cloopbox-root): finds the live medium
# (or, for root=live:URL, takes the image on the server once the network
# is up: queued by the online hook), serves its cloop images through @cloopd root-storage daemons on free
# /dev/nbdN devices and mounts the root at $NEWROOT, all by
# `cloopbox liveroot`. On failure: the reason, the emergency shell, and a
# new attempt when the shell is left.

# shellcheck source=/dev/null # dracut-lib.sh exists in the initramfs only
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh

NEWROOT=${NEWROOT:-/sysroot}
state=/run/cloopbox
mkdir -p "$state"
[ -e "$state/root-ready" ] && exit 0

# The daemons inherit liveroot's stderr. A file in the initramfs keeps them
# off this job's console or journal stream (which would outlive its reader);
# switch_root deletes the file, the open descriptor stays harmless.
err=/tmp/cloopbox-liveroot.err
/usr/bin/cloopbox liveroot --root "$NEWROOT" > "$state/served" 2> "$err"
rc=$?
if [ "$rc" = 0 ]; then
    # One line per image on the console and in the kernel log: the daemon's
    # pid as the initrd saw it, to compare with after switch_root.
    pid1=$(cat /proc/1/comm)
    while read -r dev pid image; do
        msg="cloopbox-dracut: $dev served by pid $pid ($image), initrd pid 1: $pid1"
        echo "<5>$msg" > /dev/kmsg
        echo "$msg" > /dev/console
    done < "$state/served"
    : > "$state/root-ready"
    exit 0
fi
echo "<3>cloopbox-dracut: cloopbox liveroot failed (exit $rc)" > /dev/kmsg
while read -r line; do
    warn "cloopbox: $line"
done < "$err"
emergency_shell -n cloopbox "cloopbox: no live root (exit $rc); leave the shell to search again"
if [ -e "$state/net-root" ]; then
    /sbin/initqueue --onetime --unique --name cloopbox-root /sbin/cloopbox-root
else
    /sbin/initqueue --settled --onetime --unique --name cloopbox-root /sbin/cloopbox-root
fi
exit 0
