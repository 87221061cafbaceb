# Boots on one persistent cowfile, by cloopbox.phase=: "first" writes and
# shuts down cleanly; "crash" finds it, writes and syncs more, then cuts
# the power in the middle of one of cloopd's flushes; "last" finds
# both and shuts down cleanly.
phase=$(tr " " "\n" < /proc/cmdline | sed -n "s/^cloopbox.phase=//p")
case $phase in
first)
    echo "boot one" > /root/persist-1
    sync
    echo "PERSIST-1: written"
    . /tests/exitrd.sh
    ;;
crash)
    echo "PERSIST-2: found $(cat /root/persist-1)"
    echo "boot two" > /root/persist-2
    sync
    echo "PERSIST-2: synced"
    # New files, each synced: every flush sets new bitmap bits.
    . /tests/churn.sh
    churn 16
    echo "PERSIST-2: writing"
    # The power fails in the middle of a flush: cloopd is stopped while
    # the header it has written says DIRTY (byte 6, bit 0), that header
    # is forced to the disk, and the machine resets without a sync.
    cow=/run/initramfs/persist/live/knoppix.cow
    pid=$(for p in /proc/[0-9]*; do case "$(tr "\0" " " < $p/cmdline 2>/dev/null)" in "@cloopd "*) echo ${p#/proc/} ;; esac; done | head -n 1)
    dirty() { [ $(($(dd if=$cow bs=1 skip=6 count=1 2>/dev/null | od -An -tu1) % 2)) = 1 ]; }
    n=0
    while [ $n -lt 3000 ]; do
        if dirty; then
            kill -STOP $pid
            dirty && break
            kill -CONT $pid
        fi
        n=$((n + 1))
    done
    if dirty; then
        echo "PERSIST-2: cloopd $pid stopped inside a flush, cowfile header DIRTY"
        dd if=/dev/null of=$cow conv=notrunc,fsync 2>/dev/null
        echo "PERSIST-2: power cut"
        # The reset does not wait for the serial line to drain.
        sleep 1
        echo b > /proc/sysrq-trigger
    fi
    echo "PERSIST-2: no flush caught in $n tries"
    poweroff -f
    ;;
last)
    echo "PERSIST-3: found $(cat /root/persist-1) and $(cat /root/persist-2)"
    . /tests/exitrd.sh
    ;;
esac
