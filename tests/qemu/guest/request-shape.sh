# cloopbox.test=request-shape (sourced by guest/init.sh): the request shape
# init asked of cloopd (cloopbox.readahead=512 cloopbox.maxrequest=512
# cloopbox.connections=2) is what the root's NBD device has, and a cold
# sequential read of the device then comes in requests larger than the
# kernel's nbd default of 128 KiB allows.
dev=$(awk '$2 == "/run/initramfs/images/0" { print $1 }' /proc/mounts)
nbd=${dev#/dev/}
q=/sys/block/$nbd/queue
echo "REQSHAPE: $nbd read_ahead_kb $(cat $q/read_ahead_kb) max_sectors_kb $(cat $q/max_sectors_kb) queues $(ls -d /sys/block/$nbd/mq/* | wc -l)"
sync
echo 3 > /proc/sys/vm/drop_caches
set -- $(cat /sys/block/$nbd/stat)
reads=$1 sectors=$3
dd if=$dev of=/dev/null bs=1M count=8 2> /dev/null
set -- $(cat /sys/block/$nbd/stat)
n=$(($1 - reads)) kib=$((($3 - sectors) / 2))
echo "REQSHAPE: $kib KiB in $n requests"
[ "$n" -gt 0 ] && [ $((kib / n)) -gt 128 ] && echo "REQSHAPE: more than 128 KiB per request ($((kib / n)) KiB)"
