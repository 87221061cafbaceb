#!/bin/sh
# rdinit of the ublk scenarios (tests/qemu/ublk.sh): cloopd --transport
# ublk under a kernel with ublk_drv. Markers: UBLK: ...
#
#   ublk        without the driver: the clear error; with it: a cloop
#               image read whole through /dev/ublkbN and its sha256
#               compared with the host's; the ext4 inside mounted; a write
#               to the read-only device refused; SIGTERM stops and deletes
#               the device; then the same image with a cowfile on a virtio
#               disk: files written through ext4, synced, stopped (the host
#               merges the cowfile and checks the files)
#   ublk-bench  (ublk.bench=ROUNDS on the command line) NBD against ublk
#               on /usr.cloop, rounds in rotated order, each read on a
#               freshly started server with the page cache dropped:
#               dd bs=1M of the whole device, and tar of the mounted /usr
#               to a pipe. Lines: UBLK-BENCH: ROUND TRANSPORT seq|tar SECONDS
PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
fail() {
    echo "UBLK: FAIL $*"
    sed "s/^/UBLK-SERVER: /" /tmp/srv.err 2>/dev/null | tail -5
    dmesg | grep -iE "ublk|nbd|ext4|block" | tail -20 | sed "s/^/UBLK-DMESG: /"
    sync; poweroff -f
}
step() { echo "UBLK: $*"; }
for m in crc32c_generic crc32c-intel nbd ext4 virtio_pci virtio_blk; do modprobe $m 2>/dev/null; done
mkdir -p /mnt /data

# start_server ARGS...: cloopd ARGS in the background; DEV is the device
# line it prints, PID the server.
start_server() {
    : > /tmp/dev.out
    cloopd "$@" > /tmp/dev.out 2> /tmp/srv.err &
    PID=$!
    i=0
    until head -n 1 /tmp/dev.out | grep -q "^/dev/"; do
        kill -0 "$PID" 2>/dev/null || fail "cloopd $* ended without a device: $(cat /tmp/srv.err)"
        i=$((i + 1)); [ $i -lt 1200 ] || fail "cloopd $* printed no device in 120 s"
        sleep 0.1
    done
    DEV=$(head -n 1 /tmp/dev.out)
}
# stop_server: SIGTERM, and the server must exit 0.
stop_server() {
    kill -TERM "$PID"
    wait "$PID"
    rc=$?
    [ $rc = 0 ] || fail "cloopd exited $rc after SIGTERM: $(cat /tmp/srv.err)"
}
now() { cut -d" " -f1 /proc/uptime; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

rounds=$(sed -n 's/.*ublk\.bench=\([0-9]*\).*/\1/p' /proc/cmdline)

if [ -z "$rounds" ]; then
    # Without the driver: a clear error, no device.
    if cloopd /base.cloop --transport ublk > /tmp/out 2> /tmp/err; then fail "served without ublk_drv"; fi
    grep -q "ublk: /dev/ublk-control: not found (modprobe ublk_drv; needs Linux 6.x" /tmp/err ||
        fail "without ublk_drv it said: $(cat /tmp/err)"
    step "without ublk_drv: $(cat /tmp/err)"
fi
insmod /ublk_drv.ko || fail "insmod ublk_drv"
[ -c /dev/ublk-control ] || fail "no /dev/ublk-control after insmod"

if [ -z "$rounds" ]; then
    start_server /base.cloop --transport ublk
    case $DEV in /dev/ublkb[0-9]*) ;; *) fail "cloopd printed \"$DEV\"" ;; esac
    name=${DEV#/dev/}
    step "serving $DEV: $(sed -n 2p /tmp/dev.out)"
    size=$(($(cat /sys/block/"$name"/size) * 512))
    [ "$size" = "$(cat /expected.size)" ] || fail "$DEV has $size bytes, the image $(cat /expected.size)"
    [ "$(cat /sys/block/"$name"/ro)" = 1 ] || fail "$DEV is not read-only"
    sum=$(sha256sum < "$DEV" | cut -d" " -f1)
    [ "$sum" = "$(cat /expected.sha256)" ] || fail "sha256 of $DEV is $sum, the host's $(cat /expected.sha256)"
    step "sha256 of all $size bytes of $DEV matches the host's"
    mount -t ext4 -o ro "$DEV" /mnt || fail "mount $DEV"
    [ "$(cat /mnt/orig.txt)" = "original text" ] || fail "orig.txt reads wrong"
    cmp -s /mnt/random.bin /random.bin || fail "random.bin reads wrong"
    umount /mnt
    if dd if=/dev/zero of="$DEV" bs=4096 count=1 oflag=direct 2> /dev/null; then fail "a write to the read-only $DEV succeeded"; fi
    step "ext4 mounted and read; a write to the read-only device refused"
    stop_server
    [ -e "/sys/block/$name" ] && fail "$DEV still exists after SIGTERM"
    grep -q "stopped and deleted cleanly" /tmp/srv.err || fail "no clean stop: $(cat /tmp/srv.err)"
    step "SIGTERM: $DEV stopped and deleted"

    i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    mount -t ext4 /dev/vda /data || fail "mount the data disk"
    start_server /base.cloop --transport ublk --cow /data/my.cow
    name=${DEV#/dev/}
    [ "$(cat /sys/block/"$name"/ro)" = 0 ] || fail "$DEV with a cowfile is read-only"
    mount -t ext4 -o noatime "$DEV" /mnt || fail "mount $DEV read-write"
    [ "$(cat /mnt/orig.txt)" = "original text" ] || fail "orig.txt reads wrong (cow)"
    echo "written through ublk" > /mnt/new.txt
    echo "changed" >> /mnt/orig.txt
    dd if=/dev/urandom of=/mnt/big.bin bs=64k count=32 2> /dev/null || fail "write big.bin"
    sync
    (cd /mnt && sha256sum orig.txt new.txt big.bin random.bin) > /tmp/sums || fail "read back"
    sed "s/^/UBLK-SUM: /" /tmp/sums
    umount /mnt || fail "umount $DEV"
    stop_server
    [ -e "/sys/block/$name" ] && fail "$DEV still exists after SIGTERM"
    step "cow: written through ext4, synced, stopped"
    # Served again from the cowfile: the same files.
    start_server /base.cloop --transport ublk --cow /data/my.cow
    mount -t ext4 -o ro "$DEV" /mnt || fail "mount $DEV again"
    (cd /mnt && sha256sum orig.txt new.txt big.bin random.bin) > /tmp/sums2 || fail "read back again"
    cmp -s /tmp/sums /tmp/sums2 || fail "files differ when served again"
    umount /mnt
    stop_server
    step "served again: files identical"
    cowlist /data/my.cow | sed "s/^/UBLK-COWLIST: /"
    umount /data || fail "umount the data disk"
    step DONE
    poweroff -f
fi

# --- the benchmark ----------------------------------------------------------
# bench ROUND TRANSPORT: one sequential read and one tree read, each on a
# fresh server (its cache empty) with the page cache dropped.
bench() {
    if [ "$2" = ublk ]; then set -- "$1" "$2" --transport ublk; else set -- "$1" "$2" --device auto; fi
    r=$1 t=$2
    shift 2
    start_server /usr.cloop -q "$@"
    name=${DEV#/dev/}
    [ "$r" = 1 ] && step "$t: $DEV max_sectors_kb $(cat /sys/block/"$name"/queue/max_sectors_kb) read_ahead_kb $(cat /sys/block/"$name"/queue/read_ahead_kb) nr_requests $(cat /sys/block/"$name"/queue/nr_requests)"
    sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(now)
    dd if="$DEV" of=/dev/null bs=1M 2> /dev/null || fail "dd $DEV"
    t1=$(now)
    echo "UBLK-BENCH: $r $t seq $(secs "$t0" "$t1")"
    stop_server
    start_server /usr.cloop -q "$@"
    mount -t ext4 -o ro "$DEV" /mnt || fail "mount $DEV"
    sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(now)
    bytes=$(tar cf - -C /mnt usr | wc -c) || fail "tar"
    t1=$(now)
    echo "UBLK-BENCH: $r $t tar $(secs "$t0" "$t1") $bytes"
    umount /mnt
    stop_server
}
r=1
while [ $r -le "$rounds" ]; do
    if [ $((r % 2)) = 1 ]; then bench "$r" nbd; bench "$r" ublk; else bench "$r" ublk; bench "$r" nbd; fi
    r=$((r + 1))
done
step "BENCH DONE"
poweroff -f
