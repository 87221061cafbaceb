# The cow space filled from the guest (tests/qemu/failures.sh, cow-full
# and cow-full-overlay; the tmpfs is small: cowsize=): a file written
# first, then 1 MiB files written and synced until the writer fails;
# the system must stay up, the first file read back intact after
# drop_caches, and after deleting the fill (and fstrim for the block
# cow, whose cowfile gives the space back through NBD trims) a new file
# must be written and read back.
root=$(awk '$2 == "/" { t = $3 } END { print t }' /proc/mounts)
echo "COWFULL: root is $root, cow tmpfs $(df -k /run/initramfs/cow | awk 'NR == 2 { print $2 }') KiB"
dd if=/dev/urandom of=/root/before bs=64k count=16 2>/dev/null
sync
before=$(sha256sum < /root/before | cut -d" " -f1)
echo "COWFULL: before written, sha256 $before"
i=0
err=""
while [ $i -lt 200 ]; do
    if ! err=$(dd if=/dev/urandom of=/root/fill$i bs=1M count=1 conv=fsync 2>&1 >/dev/null); then
        break
    fi
    i=$((i + 1))
done
echo "COWFULL: writer failed after $i MiB: $(echo "$err" | grep "dd:" | tail -n 1)"
# The watch of an overlay upper looks every 2 s; the block cow says it
# at the failed write. Either way the console has it by now.
sleep 5
echo "COWFULL: still up, $(cut -d" " -f1 /proc/uptime) s"
sync 2>/dev/null
echo 3 > /proc/sys/vm/drop_caches
if [ "$(sha256sum < /root/before | cut -d" " -f1)" = "$before" ]; then
    echo "COWFULL: before intact after drop_caches"
else
    echo "COWFULL: before CHANGED after drop_caches"
fi
rm -f /root/fill*
sync
if [ "$root" != overlay ]; then
    fstrim -v / 2>&1 | sed "s/^/COWFULL-TRIM: /"
fi
echo "COWFULL: cow tmpfs now $(df -k /run/initramfs/cow | awk 'NR == 2 { print $4 }') KiB free"
if dd if=/dev/urandom of=/root/after bs=1M count=2 conv=fsync 2>/dev/null; then
    after=$(sha256sum < /root/after | cut -d" " -f1)
    sync
    echo 3 > /proc/sys/vm/drop_caches
    [ "$(sha256sum < /root/after | cut -d" " -f1)" = "$after" ] && echo "COWFULL: writing works again, read back"
else
    echo "COWFULL: writing still fails after freeing space"
fi
grep -E " / (ext4|overlay) " /proc/mounts | sed "s/^/COWFULL-MOUNT: /"
