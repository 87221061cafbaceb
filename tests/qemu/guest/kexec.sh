# The kexec scenario (tests/qemu/failures.sh). The first kernel loads the
# medium's kernel and initramfs with `cloopbox kexec -l` and shuts down
# through the exitrd with the verb kexec (cloopbox.verb=kexec); the second
# kernel, from the same medium, has cloopbox.kexec=second on its command
# line, says so and powers off.
if grep -q "cloopbox.kexec=second" /proc/cmdline; then
    echo "KEXEC: second kernel up, boot id $(cat /proc/sys/kernel/random/boot_id)"
    . /tests/exitrd.sh
fi
cmdline=$(sed 's/ *cloopbox.verb=kexec//; s/ *cloopbox.test=kexec//' /proc/cmdline)
if cloopbox kexec -l /mnt-system/boot/vmlinuz --initrd=/mnt-system/boot/initrd.gz \
    --append="$cmdline cloopbox.test=kexec cloopbox.kexec=second"; then
    echo "KEXEC: loaded /mnt-system/boot/vmlinuz, first boot id $(cat /proc/sys/kernel/random/boot_id)"
else
    echo "KEXEC: FAILED to load the kernel"
fi
. /tests/exitrd.sh
