# The persistence partition that initramfs/mklive.sh --persistence appends
# (bios-usb-persistence): the first boot writes a file with its boot id,
# the next finds it. Both shut down cleanly through the exit initramfs.
if [ -f /root/kept ]; then
    echo "USB-PERSIST-2: found $(cat /root/kept)"
else
    echo "kept from boot $(cat /proc/sys/kernel/random/boot_id)" > /root/kept
    sync
    echo "USB-PERSIST-1: wrote $(cat /root/kept)"
fi
. /tests/exitrd.sh
