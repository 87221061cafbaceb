#!/usr/bin/env bash
# Copy-on-write overlay benchmark: random 4 KiB writes (then a flush), then
# reads of the same offsets, on a tmpfs, through cloopbox's cow::Overlay and
# through a qcow2 overlay (qemu-img create -b) driven by qemu-io, in the
# same run with the same offsets and data. Prints both and the ratio.
#
#   bench/cow.sh                 # COUNT=20000 writes over a 256 MiB base
#   COUNT=50000 SIZE_MB=1024 bench/cow.sh
#   FLUSH_ONLY=1 bench/cow.sh    # only the flush ratio (below)
#
# Then the flush cost: 4 KiB write + flush at QD1 through the overlay
# against pwrite + fdatasync of the same 4 KiB at the same offsets into a new
# sparse file, on the same real filesystem (FLUSH_DIR, default
# work/flush-bench in the repository; tmpfs has no fdatasync cost), rounds
# alternating the two (examples/cow_flush_bench.rs). FLUSH_COUNT writes per
# round (300), FLUSH_ROUNDS rounds (5); prints medians, the ratio and the
# load average.
#
# Needs qemu-utils (qemu-img, qemu-io) and a tmpfs: /dev/shm, or a fresh
# mount when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-20000}
SIZE_MB=${SIZE_MB:-256}
SEED=${SEED:-1}
RUNS=${RUNS:-3}

flush_bench() {
    local dir=${FLUSH_DIR:-work/flush-bench}
    mkdir -p "$dir"
    cargo build --quiet --release --example cow_flush_bench
    echo "flush: filesystem $(df -T "$dir" | awk 'NR == 2 { print $2 " on " $1 }'), load $(cut -d' ' -f1-3 /proc/loadavg)"
    ./target/release/examples/cow_flush_bench "$dir" "${FLUSH_COUNT:-300}" "${FLUSH_ROUNDS:-5}"
    echo "ratio = overlay time / (pwrite + fdatasync) time per 4 KiB write + flush (target <= 1.5)"
}
if [ -n "${FLUSH_ONLY:-}" ]; then
    flush_bench
    exit 0
fi

for tool in qemu-img qemu-io; do
    command -v "$tool" >/dev/null || { echo "cow.sh: $tool missing (apt-get install qemu-utils)" >&2; exit 1; }
done

if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
    WORK=$(mktemp -d /dev/shm/cloopbox-cow-bench.XXXXXX)
    cleanup() { rm -rf "$WORK"; }
elif [ "$(id -u)" = 0 ]; then
    WORK=$(mktemp -d)
    mount -t tmpfs -o size=$((SIZE_MB * 3))m cloopbox-bench "$WORK"
    cleanup() { umount "$WORK"; rmdir "$WORK"; }
else
    echo "cow.sh: needs /dev/shm as tmpfs, or root to mount one" >&2
    exit 1
fi
trap cleanup EXIT

cargo build --quiet --release --example cow_bench
head -c "$((SIZE_MB << 20))" /dev/urandom >"$WORK/base.img"

now() { date +%s.%N; }
# Wall time of one qemu-io run over SCRIPT, minus the time of an empty run
# (process start, opening the image chain).
qemu_io_time() {
    local fmt=$1 image=$2 script=$3 t0 t1 e0 e1
    e0=$(now); qemu-io -f "$fmt" -t writeback "$image" </dev/null >/dev/null; e1=$(now)
    t0=$(now); qemu-io -f "$fmt" -t writeback "$image" <"$script" >/dev/null; t1=$(now)
    echo "($t1 - $t0) - ($e1 - $e0)" | bc -l
}

printf 'base %d MiB, %d random 4 KiB writes then reads, %d runs, on tmpfs\n' "$SIZE_MB" "$COUNT" "$RUNS"
printf '%-4s %12s %12s %12s %12s %10s %10s\n' run ovl_write_s qcow_write_s ovl_read_s qcow_read_s w_ratio r_ratio
for run in $(seq 1 "$RUNS"); do
    out=$(./target/release/examples/cow_bench "$WORK/base.img" "$WORK/bench.cow" "$COUNT" "$((SEED + run))" "$WORK/qio")
    ow=$(sed -n 's/.*overlay_write_s=\([0-9.]*\).*/\1/p' <<<"$out")
    orr=$(sed -n 's/.*overlay_read_s=\([0-9.]*\).*/\1/p' <<<"$out")
    obytes=$(sed -n 's/.*overlay_bytes=\([0-9]*\).*/\1/p' <<<"$out")
    rm -f "$WORK/ov.qcow2"
    qemu-img create -q -f qcow2 -F raw -b "$WORK/base.img" "$WORK/ov.qcow2"
    qw=$(qemu_io_time qcow2 "$WORK/ov.qcow2" "$WORK/qio.writes")
    qr=$(qemu_io_time qcow2 "$WORK/ov.qcow2" "$WORK/qio.reads")
    qbytes=$(($(stat -c %b "$WORK/ov.qcow2") * 512))
    printf '%-4s %12.3f %12.3f %12.3f %12.3f %9.2fx %9.2fx\n' "$run" "$ow" "$qw" "$orr" "$qr" \
        "$(echo "$qw / $ow" | bc -l)" "$(echo "$qr / $orr" | bc -l)"
done
# qemu-io's own cost per command: the same workload on a raw copy of the
# base, with no overlay at all.
cp "$WORK/base.img" "$WORK/raw.img"
fw=$(qemu_io_time raw "$WORK/raw.img" "$WORK/qio.writes")
fr=$(qemu_io_time raw "$WORK/raw.img" "$WORK/qio.reads")
printf 'qemu-io floor (raw file, no overlay): writes %.3fs, reads %.3fs\n' "$fw" "$fr"
printf 'space used: cowfile %d MiB, qcow2 %d MiB (last run)\n' $((obytes >> 20)) $((qbytes >> 20))
echo "ratio = qcow2 time / overlay time (above 1: the overlay is faster)"

flush_bench
