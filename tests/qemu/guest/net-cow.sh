# Persistence under a network root (net-cow): the first boot writes its
# boot id into a file and shuts down cleanly; the next finds that file.
if [ -f /root/net-cow ]; then
    echo "NETCOW-2: found $(cat /root/net-cow), this boot $(cat /proc/sys/kernel/random/boot_id)"
else
    cat /proc/sys/kernel/random/boot_id > /root/net-cow
    sync
    echo "NETCOW-1: written $(cat /root/net-cow)"
fi
. /tests/exitrd.sh
