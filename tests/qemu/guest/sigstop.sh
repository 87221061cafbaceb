#!/bin/sh
# The sigstop scenario's controller (see sigstop-init.sh): I/O under
# SIGSTOP/SIGCONT, SIGTERM and SIGHUP of the root-storage daemon.
export PATH=/mnt/ram/bin
R=/mnt/ram
pid=""
fail() {
    [ -n "$pid" ] && kill -CONT $pid 2>/dev/null
    echo "SIGSTOP: FAIL $*"
    touch $R/stop
    dmesg | grep -iE "nbd|I/O error|ext4" | tail -n 20 | sed "s/^/SIGSTOP-DMESG: /"
    sync
    poweroff -f
}
daemons() {
    for p in /proc/[0-9]*; do
        case $(tr "\0" " " 2>/dev/null < $p/cmdline) in @cloopd*) echo ${p#/proc/} ;; esac
    done
}
state() { cut -d" " -f3 /proc/$pid/stat 2>/dev/null || echo gone; }
pid=$(daemons)
case $pid in "" | *" "*) fail "expected one @cloopd daemon, found \"$pid\"" ;; esac
dev=$(awk "\$2 == \"/\" { d = \$1 } END { print d }" /proc/mounts)
case $dev in /dev/nbd[0-9]*) ;; *) fail "the root is on \"$dev\", not on nbd" ;; esac
nbd=${dev#/dev/}
echo "SIGSTOP: daemon $pid serves $dev (kernel: pid $(cat /sys/block/$nbd/pid 2>/dev/null))"
grep -E "^Sig(Ign|Blk)" /proc/$pid/status | sed "s/^/SIGSTOP-DAEMON-/"
head -c 2097152 /dev/urandom > $R/src.bin
want=$(sha256sum < $R/src.bin | cut -d" " -f1)
mkdir -p /io
echo 0 > $R/wcount
echo 0 > $R/rcount
: > $R/bad
# The writer: 2 MiB files rewritten in turn, each with fsync.
(
    n=0
    while [ ! -f $R/stop ]; do
        dd if=$R/src.bin of=/io/w$((n % 4)) bs=64k conv=fsync 2> /dev/null || echo "write $n failed" >> $R/bad
        n=$((n + 1))
        # Renamed into place: a reader never sees the file empty.
        echo $n > $R/wcount.new && mv $R/wcount.new $R/wcount
    done
) &
writer=$!
# The reader: files of the image, from the device every time.
(
    n=0
    while [ ! -f $R/stop ]; do
        echo 3 > /proc/sys/vm/drop_caches
        (cd / && sha256sum -c -s $R/sums) || echo "read pass $n: checksum mismatch" >> $R/bad
        n=$((n + 1))
        echo $n > $R/rcount.new && mv $R/rcount.new $R/rcount
    done
) &
reader=$!
sleep 4
[ "$(cat $R/wcount)" -gt 0 ] || fail "no write finished in 4 s, before any signal"
for r in 1 2 3; do
    w0=$(cat $R/wcount) r0=$(cat $R/rcount)
    kill -STOP $pid
    sleep 1
    st=$(state)
    sleep 3
    w1=$(cat $R/wcount) r1=$(cat $R/rcount)
    kill -CONT $pid
    sleep 3
    w2=$(cat $R/wcount) r2=$(cat $R/rcount)
    echo "SIGSTOP: round $r: daemon state $st while stopped; writes done $w0 -> $w1 (4 s stopped) -> $w2 (3 s after SIGCONT); read passes $r0 -> $r1 -> $r2"
    [ "$st" = T ] || fail "round $r: the daemon did not stop (state $st)"
    # One write may finish between reading the counter and the signal.
    [ $((w1 - w0)) -le 1 ] || fail "round $r: writes completed while the daemon was stopped"
    [ "$w2" -gt "$w1" ] || fail "round $r: writes did not resume after SIGCONT"
done
for sig in TERM HUP; do
    w0=$(cat $R/wcount)
    kill -$sig $pid
    sleep 3
    w1=$(cat $R/wcount)
    st=$(state)
    echo "SIGSTOP: SIG$sig: daemon $pid state $st; writes done $w0 -> $w1"
    case $st in R | S | D) ;; *) fail "SIG$sig: the daemon is gone (state $st)" ;; esac
    [ "$w1" -gt "$w0" ] || fail "SIG$sig: no write finished in 3 s"
done
touch $R/stop
wait $writer
wait $reader
if [ -s $R/bad ]; then
    sed "s/^/SIGSTOP-BAD: /" $R/bad
    fail "I/O failed or read back wrong under the signals"
fi
sync
echo 3 > /proc/sys/vm/drop_caches
for i in 0 1 2 3; do
    [ "$(sha256sum < /io/w$i | cut -d" " -f1)" = "$want" ] || fail "/io/w$i reads back wrong"
done
(cd / && sha256sum -c $R/sums) > $R/sumout 2>&1 || { sed "s/^/SIGSTOP-SUM: /" $R/sumout; fail "image files read back wrong"; }
sed "s/^/SIGSTOP-SUM: /" $R/sumout
echo "SIGSTOP: data ok: 4 rewritten files and $(wc -l < $R/sums) image files match ($(cat $R/wcount) writes, $(cat $R/rcount) read passes)"
now=$(daemons)
[ "$now" = "$pid" ] || fail "daemons now \"$now\", was $pid"
[ -e /sys/block/$nbd/pid ] || fail "$dev lost its connection"
echo "SIGSTOP: same daemon $pid, $dev still connected"
if dmesg | grep -iE "nbd.*(timed out|Dead connection|shutting down|stuck|control failed)|I/O error" > $R/kmsg; then
    sed "s/^/SIGSTOP-KMSG: /" $R/kmsg
    fail "the kernel logged NBD errors"
fi
echo "SIGSTOP: kernel log clean"
echo "SIGSTOP: DONE"
sync
poweroff -f
