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
    # A control beside the cowfile, fsynced straight on the persistence
    # filesystem: it tests the disk and the cut themselves, without cloopd.
    # First: an fsync on that filesystem after the files below would write
    # out cowfile pages that cloopd itself failed to sync.
    dd if=/dev/urandom of=/run/initramfs/persist/live/control bs=4k count=3 2>/dev/null
    sync /run/initramfs/persist/live/control || echo "POWERCUT-1: FAILED: fsync of the control file"
    echo "POWERCUT-1: control $(sha256sum < /run/initramfs/persist/live/control | cut -d" " -f1)"
    : > /root/synced.sha256
    ok=1
    for i in 1 2 3 4; do
        dd if=/dev/urandom of=/root/synced-$i bs=64k count=$((i * 4)) conv=fsync 2>/dev/null || ok=0
        sha256sum /root/synced-$i >> /root/synced.sha256 || ok=0
    done
    # busybox sync FILE is fsync(FILE). (Its dd conv=fsync with nothing
    # to copy fsyncs stdout instead.)
    sync /root/synced.sha256 || ok=0
    echo "POWERCUT-1: list synced, $(cat /sys/block/nbd0/stat)"
    # Only what every fsync confirmed counts as synced.
    if [ $ok = 1 ]; then
        while read -r sum file; do echo "POWERCUT-1: synced $sum $file"; done < /root/synced.sha256
    else
        echo "POWERCUT-1: FAILED: an fsync through the root returned an error"
    fi
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
