# shellcheck shell=bash
# cloopd --transport ublk (docs/ublk.md), sourced by qemu-test.sh with the
# helpers of tests/qemu/lib.sh. Needs a kernel with ublk_drv and the
# ioctl-encoded commands: run under KERNEL_SUITE=trixie (Debian 13, 6.12).
# The guest is the live initramfs plus guest/ublk.sh as rdinit and
# ublk_drv.ko from the kernel's modules.
#
#   ublk        guest/ublk.sh: the error without the driver, the whole
#               device's sha256 against the host's, ext4 mounted, writes
#               refused read-only, SIGTERM stop and delete, then writes
#               through a cowfile on a virtio disk; the host merges the
#               cowfile into the image and checks the guest's files
#   ublk-bench  NBD against ublk in the same guest (2 vCPUs) on the
#               Debian root's ext4 (mklive --image-only, zlib, 128 KiB
#               blocks): whole-device dd and tar of /usr, UBLK_ROUNDS
#               rounds (default 3) in rotated order; the medians go to
#               the log as UBLK-MEDIAN lines (BENCHMARKS.md, "ublk against
#               NBD"). Run by name only: it measures, it does not check.
# ublk joins the full run only under a kernel newer than Debian 12's 6.1,
# whose ublk_drv predates the ioctl-encoded commands.
[ "$KERNEL_SUITE" = bookworm ] || ALL_SCENARIOS+=(ublk)

# ublk_guest DIR: DIR/root, the live initramfs unpacked with busybox's
# applets, ublk_drv.ko and guest/ublk.sh as /test-init.
ublk_guest() {
    local dir=$1 root=$1/root ko=$MODDIR/kernel/drivers/block/ublk_drv.ko
    rm -rf "$dir" && mkdir -p "$root"
    unpack_initramfs "$root"
    for a in $(/bin/busybox --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done
    if [ -f "$ko.xz" ]; then
        xz -dc "$ko.xz" > "$root/ublk_drv.ko"
    elif [ -f "$ko" ]; then
        cp "$ko" "$root/ublk_drv.ko"
    else
        log "ublk: the $KVER kernel has no ublk_drv module"
    fi
    install -m 0755 "$GUEST/ublk.sh" "$root/test-init"
}

scenario_ublk() {
    local dir=$WORK/ublk root=$WORK/ublk/root log=$LOGS/ublk.log
    ublk_guest "$dir"
    mkdir -p "$dir/fs"
    echo "original text" > "$dir/fs/orig.txt"
    head -c 300000 /dev/urandom > "$dir/fs/random.bin"
    cp "$dir/fs/random.bin" "$root/random.bin"
    cloop_of ext4 "$dir/fs" "$root/base.cloop"
    "$CLOOPBOX_BIN" extract_compressed_fs -q "$root/base.cloop" "$dir/base.img"
    sha256sum < "$dir/base.img" | cut -d' ' -f1 > "$root/expected.sha256"
    stat -c %s "$dir/base.img" > "$root/expected.size"
    make_cpio "$root" "$dir/initrd.gz"
    truncate -s 96M "$dir/data.img"
    mkfs.ext4 -q -F -L DATA "$dir/data.img"
    boot ublk "UBLK: (DONE|FAIL)|Kernel panic" -kernel "$KERNEL" -initrd "$dir/initrd.gz" \
        -append "console=ttyS0 panic=-1 loglevel=6 no_timer_check rdinit=/test-init" \
        -drive if=virtio,format=raw,file="$dir/data.img"
    # On the host: the cowfile the guest left, merged into the image.
    if [ "$INTERACTIVE" != 1 ]; then
        debugfs -R "dump /my.cow $dir/my.cow" "$dir/data.img" 2> /dev/null
        if [ -f "$dir/my.cow" ]; then
            grep -q "state cowfile: *clean" <("$CLOOPBOX_BIN" cowlist "$dir/my.cow") && echo "HOST: cowfile clean" >> "$log"
            "$CLOOPBOX_BIN" cowmerge -y -q "$dir/base.img" "$dir/my.cow" | sed 's/^/HOST-MERGE: /' >> "$log"
            e2fsck -fn "$dir/base.img" > /dev/null 2>&1 && echo "HOST: fsck clean" >> "$log"
            echo "HOST: $(files_matching UBLK-SUM: "$log" "$dir/base.img" orig.txt new.txt big.bin random.bin) files match after merge" >> "$log"
        fi
    fi
    check ublk "cloopd --transport ublk: sha256 of /dev/ublkbN, ext4, read-only, SIGTERM, cowfile merged on the host" \
        "UBLK: without ublk_drv: .*ublk: /dev/ublk-control: not found" "UBLK: serving /dev/ublkb[0-9]+" \
        "UBLK: sha256 of all [0-9]+ bytes of /dev/ublkb[0-9]+ matches the host's" \
        "UBLK: ext4 mounted and read; a write to the read-only device refused" \
        "UBLK: SIGTERM: /dev/ublkb[0-9]+ stopped and deleted" "UBLK: cow: written through ext4, synced, stopped" \
        "UBLK: served again: files identical" "UBLK: DONE" \
        "HOST: cowfile clean" "HOST: fsck clean" "HOST: 4 files match after merge"
}

scenario_ublk-bench() {
    local dir=$WORK/ublk-bench root=$WORK/ublk-bench/root log=$LOGS/ublk-bench.log rounds=${UBLK_ROUNDS:-3}
    ublk_guest "$dir"
    local tar=$QEMU_LIB_ROOT/work/qemu/debian-trixie-root.tar
    [ -f "$tar" ] || tar=$QEMU_LIB_ROOT/work/qemu/debian-root.tar
    mklive --image-only --root "$tar" --fs ext4 --fs-size 200 -o "$root/usr.cloop"
    make_cpio "$root" "$dir/initrd.gz"
    TIMEOUT=$((300 + rounds * 600)) QEMU_MEM=${QEMU_MEM:-2048} \
        boot ublk-bench "UBLK: (BENCH DONE|FAIL)|Kernel panic" -kernel "$KERNEL" -initrd "$dir/initrd.gz" \
        -append "console=ttyS0 panic=-1 loglevel=4 no_timer_check rdinit=/test-init ublk.bench=$rounds"
    if [ "$INTERACTIVE" != 1 ]; then
        local t w medians=""
        for w in seq tar; do
            for t in nbd ublk; do
                medians+=$(tr -d '\r' < "$log" | awk -v t=$t -v w=$w '$1 == "UBLK-BENCH:" && $3 == t && $4 == w { print $5 }' |
                    sort -n | awk -v t=$t -v w=$w '{ v[NR] = $1 } END { if (NR) printf "UBLK-MEDIAN: %s %s %.2f s (%d rounds: %s)\n", w, t, v[int((NR + 1) / 2)], NR, v[1] "-" v[NR] }')$'\n'
            done
        done
        printf '%s' "$medians" >> "$log"
        echo "HOST-LOAD: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$log"
        grep "UBLK-MEDIAN" "$log" >&2 || true
    fi
    check ublk-bench "NBD against ublk: dd and tar of /usr, medians in the log" \
        "UBLK: BENCH DONE" "UBLK-MEDIAN: seq nbd" "UBLK-MEDIAN: seq ublk" "UBLK-MEDIAN: tar nbd" "UBLK-MEDIAN: tar ublk"
}
