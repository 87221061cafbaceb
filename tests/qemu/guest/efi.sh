# UEFI and Secure Boot as the guest itself sees them (the uefi scenarios):
# the firmware's SecureBoot variable through efivarfs (a module in Debian's
# kernel, signed: the root carries it as /lib/modules/efivarfs.ko), what the
# kernel logged, the lockdown state, whether nbd.ko (loaded by init) is
# tainted as unsigned, and where the CD drive sits. Then a clean shutdown
# through the exit initramfs.
[ -d /sys/firmware ] || mount -t sysfs sysfs /sys
if [ -d /sys/firmware/efi ]; then echo "EFI: booted through UEFI"; else echo "EFI: no UEFI firmware"; fi
[ -d /sys/module/efivarfs ] || insmod /lib/modules/efivarfs.ko 2>&1 | sed "s/^/EFI-INSMOD: /"
[ -d /sys/module/efivarfs ] && echo "EFI: efivarfs module loaded"
mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>&1 | sed "s/^/EFI-MOUNT: /"
# Four bytes of attributes, then the value: 1 when Secure Boot is on
# (read whole: efivarfs files do not seek).
v=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
[ -r $v ] && echo "EFI-SECUREBOOT-VAR: $(od -An -tu1 < $v | awk '{ print $5 }')"
# systemd's EFI stub (a unified kernel image) leaves its name here.
s=/sys/firmware/efi/efivars/StubInfo-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
[ -r $s ] && echo "EFI-STUB: $(tail -c +5 < $s | tr -d '\0')"
dmesg | grep -oE "secureboot: Secure boot (enabled|disabled)|Kernel is locked down from EFI Secure Boot" | sed "s/^/EFI-KMSG: /"
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
echo "EFI-LOCKDOWN: $(cat /sys/kernel/security/lockdown 2>&1)"
# Under lockdown the kernel loads only modules signed with a key it trusts;
# one without a good signature would taint it ("E").
if [ -d /sys/module/nbd ]; then echo "EFI-NBD: loaded, taint '$(cat /sys/module/nbd/taint)'"; fi
echo "EFI-CDROM: $([ -e /sys/block/sr0 ] && readlink -f /sys/block/sr0/device)"
. /tests/exitrd.sh
