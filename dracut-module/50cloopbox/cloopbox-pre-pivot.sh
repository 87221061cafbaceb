#!/bin/sh
# pre-pivot hook 90: the exit initramfs that `cloopbox liveroot` staged in
# /run/initramfs must be the one systemd-shutdown finds, and it must be
# able to run it. Sourced by dracut: no exit.

# shellcheck source=/dev/null # dracut-lib.sh exists in the initramfs only
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh

if [ -e /run/cloopbox/root-ready ]; then
    # dracut-shutdown.service (in a root that has dracut) unpacks the boot
    # initramfs over /run/initramfs when .need_shutdown exists; that would
    # replace our shutdown with dracut's, which kills every process whose
    # files are under /oldroot, our root daemons included.
    if [ -e /run/initramfs/.need_shutdown ]; then
        rm -f /run/initramfs/.need_shutdown
        info "cloopbox: removed /run/initramfs/.need_shutdown: cloopbox's exit initramfs detaches the root"
    fi
    # dracut's shell init mounts /run noexec; systemd-shutdown then skips
    # /run/initramfs/shutdown (it checks access(X_OK)) and powers off with
    # the root still attached. systemd's own initrd mounts /run exec.
    if grep -q '^[^ ]* /run [^ ]* [^ ]*noexec' /proc/mounts; then
        mount -o remount,exec /run && info "cloopbox: /run remounted exec for the exit initramfs"
    fi
    if [ -x /run/initramfs/shutdown ] && [ -f /run/initramfs/etc/initrd-release ]; then
        echo "<5>cloopbox-dracut: exit initramfs staged in /run/initramfs" > /dev/kmsg
    else
        warn "cloopbox: no usable /run/initramfs/shutdown: shutdown cannot detach the root cleanly"
    fi
    while read -r _cb_dev _cb_pid _cb_image; do
        if [ -d "/proc/$_cb_pid" ]; then
            echo "<5>cloopbox-dracut: pre-pivot: $_cb_dev daemon pid $_cb_pid alive" > /dev/kmsg
        else
            warn "cloopbox: the daemon for $_cb_dev (pid $_cb_pid, $_cb_image) is gone"
        fi
    done < /run/cloopbox/served
    unset _cb_dev _cb_pid _cb_image
fi
