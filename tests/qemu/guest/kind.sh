# Image kinds (tests/qemu/kinds.sh): what the medium's image is, as our
# cloopinfo reads it, then every file under /kinds read back through the
# root after the page cache is dropped, with its sha256 (the host compares
# them with the files it put into the image). cloopbox.rawlba=LBA:LEN:FILE
# also reads LEN bytes of the device that holds the image's filesystem at
# 2 KiB block LBA, where the host found FILE (kind-over4g: past 4 GiB).
img=/run/initramfs/live/KNOPPIX/KNOPPIX
cloopbox cloopinfo "$img" 2>&1 | sed -n -E 's/^(version|header|block size|blocks|uncompressed size|codecs): +/KIND-INFO: \1: /p'
dev=$(awk '$1 ~ /^\/dev\/nbd/ && ($2 == "/" || $2 == "/run/initramfs/images/0") { print $1; exit }' /proc/mounts)
case $dev in /dev/nbd*) echo "KIND-DEV: $dev $(blockdev --getsize64 "$dev") bytes" ;; esac
sync
echo 3 > /proc/sys/vm/drop_caches
(cd / && find kinds -type f | sort | xargs sha256sum) | sed 's/^/KIND-SUM: /'
for spec in $(tr " " "\n" < /proc/cmdline | sed -n "s/^cloopbox.rawlba=//p"); do
    lba=${spec%%:*} rest=${spec#*:}
    len=${rest%%:*} file=${rest#*:}
    sum=$(dd if="$dev" bs=2048 skip="$lba" count=$(((len + 2047) / 2048)) 2>/dev/null | head -c "$len" | sha256sum | cut -d" " -f1)
    echo "KIND-RAW: $sum $file at byte $((lba * 2048)) of $dev"
done
echo "KIND: done"
