# Persistence on a FAT32 or exFAT stick (tests/qemu/fat-persist.sh), by
# cloopbox.phase=: "first" writes files, proves the zeroing fallback (no
# hole punching on FAT) and shuts down cleanly; "crash" reads them, writes
# and syncs more, then cuts the power with unsynced writes in flight;
# "last" reads everything after the repair and shuts down cleanly.
# Files are reported as "FATP-SUM: NAME SHA256" when written and
# "FATP-READ-N: NAME SHA256" when read back; the host compares them.
cow=/run/initramfs/persist/live/knoppix.cow
phase=$(tr " " "\n" < /proc/cmdline | sed -n "s/^cloopbox.phase=//p")
sum() { echo "$1 $(sha256sum < /root/$1 | cut -d" " -f1)"; }
echo "FATP: cowfile filesystem $(awk '$2 == "/run/initramfs/persist" { print $3 }' /proc/mounts)"
case $phase in
first)
    dd if=/dev/urandom of=/root/fatp-1.bin bs=1k count=700 2>/dev/null
    echo "boot one" > /root/fatp-1.txt
    sync
    echo "FATP-SUM: $(sum fatp-1.bin)"
    # The zeroing fallback: a file of a marker unique to this boot reaches
    # the cowfile; deleted and trimmed, its units must read as zeros, and
    # on FAT only writing zeros over them can do that.
    m="ZEROFALLBACK$(tr -d - < /proc/sys/kernel/random/boot_id)"
    yes "$m" | head -c 524288 > /root/marker
    sync
    grep -q -F "$m" $cow && echo "FATP-ZERO: marker in the cowfile"
    rm /root/marker
    sync
    echo "FATP-TRIM: $(fstrim -v / 2>&1)"
    sync
    grep -q -F "$m" $cow || echo "FATP-ZERO: marker gone from the cowfile after fstrim"
    cowdev -l -v 2>&1 | grep "zeroed (no holes)" | sed "s/^/FATP-ZERO-CTL: /"
    # FAT32 ends files at 4 GiB - 1: a cowfile for a 4 GiB image is
    # refused at once, naming the file and the limit (a server that
    # started would be stopped by the timeout, and fail the check).
    if grep -q " /run/initramfs/persist vfat " /proc/mounts; then
        truncate -s 4G /tmp/big.img
        out=$(timeout 30 cloopbox cloopd --cow /run/initramfs/persist/big.cow --unix /tmp/big.sock /tmp/big.img 2>&1)
        echo "FATP-BIG-RC: $?"
        echo "$out" | sed "s/^/FATP-BIG: /"
        [ -e /run/initramfs/persist/big.cow ] || echo "FATP-BIG: no cowfile left behind"
        rm -f /tmp/big.img
    fi
    . /tests/exitrd.sh
    ;;
crash)
    echo "FATP-2: found $(cat /root/fatp-1.txt)"
    echo "FATP-READ-2: $(sum fatp-1.bin)"
    dd if=/dev/urandom of=/root/fatp-2.bin bs=1k count=900 2>/dev/null
    echo "boot two" > /root/fatp-2.txt
    sync
    echo "FATP-SUM: $(sum fatp-2.bin)"
    # Synced writes keep coming (the cowfile never goes idle and clean),
    # and a file that is never synced.
    . /tests/churn.sh
    churn 8
    dd if=/dev/urandom of=/root/unsynced.bin bs=1k count=512 2>/dev/null
    sleep 3
    # The header cloopd wrote and fdatasync'ed: DIRTY (byte 6, bit 0).
    [ $(($(dd if=$cow bs=1 skip=6 count=1 2>/dev/null | od -An -tu1) % 2)) = 1 ] &&
        echo "FATP-2: cowfile header DIRTY"
    echo "FATP-2: power cut"
    # The reset does not wait for the serial line to drain; nothing is synced.
    sleep 1
    echo b > /proc/sysrq-trigger
    ;;
last)
    echo "FATP-3: found $(cat /root/fatp-1.txt) and $(cat /root/fatp-2.txt)"
    echo "FATP-READ-3: $(sum fatp-1.bin)"
    echo "FATP-READ-3: $(sum fatp-2.bin)"
    . /tests/exitrd.sh
    ;;
esac
