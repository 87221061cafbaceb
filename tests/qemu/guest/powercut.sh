# The powercut scenario (tests/qemu/powercut.sh), by cloopbox.phase=. The
# cowfile lives on a disk whose write cache the host drops at the cut.
# "cut" writes files and fsyncs each one through the root: that is ext4 on
# /dev/nbd0 sending NBD_CMD_FLUSH to cloopd, whose flush alone must bring
# the cowfile to the disk (no global sync here, which would write the
# cowfile's pages out behind cloopd's back). Then it keeps writing without
# syncing until the host cuts the power. "check" finds every synced file
# byte for byte and shuts down cleanly.
phase=$(tr " " "\n" < /proc/cmdline | sed -n "s/^cloopbox.phase=//p")
case $phase in
cut)
    : > /root/synced.sha256
    for i in 1 2 3 4; do
        dd if=/dev/urandom of=/root/synced-$i bs=64k count=$((i * 4)) conv=fsync 2>/dev/null
        sha256sum /root/synced-$i >> /root/synced.sha256
    done
    # conv=fsync with nothing to copy: fsync of the list itself.
    dd if=/dev/null of=/root/synced.sha256 conv=notrunc,fsync 2>/dev/null
    while read -r sum file; do echo "POWERCUT-1: synced $sum $file"; done < /root/synced.sha256
    # Unsynced writes: new units in the cowfile that nobody flushes.
    i=0
    while :; do
        dd if=/dev/urandom of=/root/unsynced-$((i % 8)) bs=64k count=8 2>/dev/null
        i=$((i + 1))
    done &
    echo "POWERCUT-1: writing"
    # The host cuts the power during this sleep.
    sleep 600
    echo "POWERCUT-1: still running after 600 s"
    ;;
check)
    if sha256sum -c /root/synced.sha256 > /tmp/synced.check 2>&1; then
        echo "POWERCUT-2: $(grep -c ': OK$' /tmp/synced.check) synced files intact"
    else
        sed "s/^/POWERCUT-2: FAILED: /" /tmp/synced.check
    fi
    . /tests/exitrd.sh
    ;;
esac
