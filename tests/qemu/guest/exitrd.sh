# What systemd-shutdown does at its very end, for roots without systemd:
# everything synced and / read-only, then a pivot into the exit initramfs
# staged by init, and /shutdown exec'd as PID 1 with the verb
# (cloopbox.verb= on the command line: reboot, halt, kexec; default
# poweroff).
verb=$(tr " " "\n" < /proc/cmdline | sed -n "s/^cloopbox.verb=//p")
echo "EXITRD: handing over to /run/initramfs/shutdown"
sync
mount -o remount,ro / || echo "EXITRD: cannot remount / read-only"
mount --make-rprivate /
mount -o rbind /run/initramfs /run/initramfs
cd /run/initramfs
mkdir -p oldroot
pivot_root . oldroot || echo "EXITRD: pivot_root failed"
exec chroot . /shutdown "${verb:-poweroff}"
