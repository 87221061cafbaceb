#!/bin/bash
# Benchmark of cloopd against the targets of the NBD issue (and peers).
#
#   bench/nbd.sh [WORKDIR]
#
# Needs: create_compressed_fs (cloop-utils), mkfs.ext4 (e2fsprogs), fio (with
# its libnbd engine), nbdcopy (libnbd-bin), qemu-img/qemu-nbd (qemu-utils),
# nbdkit; a release build of cloopbox (cargo build --release).
#
# The test image is the one of shared/docs/nbd.md §6: a 512 MiB ext4 image
# filled with copies of /usr/bin and /usr/include, compressed with cloop-utils
# (zlib -L 9) in 64 KiB blocks. Everything runs over unix sockets, with the
# files in the page cache, so this measures the server's CPU path. Each figure
# is the median of three runs. Prints a Markdown table on stdout.
set -euo pipefail

WORK=${1:-/tmp/cloopd-bench}
BIN=${CLOOPBOX:-$(cd "$(dirname "$0")/.." && pwd)/target/release/cloopbox}
RUNTIME=${RUNTIME:-10}
mkdir -p "$WORK"
cd "$WORK"
SOCK=$WORK/nbd.sock
URI="nbd+unix:///?socket=$SOCK"

[ -x "$BIN" ] || { echo "build first: cargo build --release ($BIN missing)" >&2; exit 1; }
for t in create_compressed_fs mkfs.ext4 fio nbdcopy qemu-img qemu-nbd nbdkit python3; do
    command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }
done

if [ ! -f disk64k.cloop ]; then
    rm -rf stage && mkdir stage
    cp -a /usr/bin /usr/include stage/
    truncate -s 512M disk.raw
    mkfs.ext4 -q -F -d stage -E lazy_itable_init=0,lazy_journal_init=0 disk.raw
    rm -rf stage
    create_compressed_fs -q -B 65536 -t 2 -L 9 disk.raw disk64k.cloop
fi
[ -f disk.qcow2 ] || qemu-img convert -c -O qcow2 disk.raw disk.qcow2

SERVER_PID=
start() { # command...: start a server on $SOCK and wait for it
    rm -f "$SOCK"
    "$@" >/dev/null 2>server.log &
    SERVER_PID=$!
    for _ in $(seq 100); do [ -S "$SOCK" ] && return 0; sleep 0.05; done
    echo "server did not start: $*" >&2; cat server.log >&2; exit 1
}
stop() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}
trap stop EXIT

median() { sort -n | sed -n 2p; }

fio_iops() { # rw bs iodepth [numjobs]
    for _ in 1 2 3; do
        fio --name=b --ioengine=nbd --uri="$URI" --rw="$1" --bs="$2" --iodepth="$3" \
            --numjobs="${4:-1}" --group_reporting --time_based --runtime="$RUNTIME" --size=512M \
            --randrepeat=0 --norandommap --output-format=json 2>/dev/null |
            python3 -c 'import json,sys; s=sys.stdin.read(); j=json.loads(s[s.index("{"):])["jobs"][0]; print(int(j["read"]["iops"]+j["write"]["iops"]))'
    done | median
}

copy_mbs() { # MB/s of nbdcopy of the whole export to null:
    for _ in 1 2 3; do
        s=$(date +%s.%N); nbdcopy "$URI" null: ; e=$(date +%s.%N)
        python3 -c "print(int(536870912/1e6/($e-$s)))"
    done | median
}

row() { printf '| %s | %s | %s |\n' "$1" "$2" "$3"; }

echo "| Measurement | Result | Target |"
echo "|---|---|---|"

start "$BIN" cloopd disk64k.cloop --unix "$SOCK" --cache-size 0 -q
row "cloopd, whole-image copy (nbdcopy → null:, no cache)" "$(copy_mbs) MB/s" "≥ 800 MB/s"
row "cloopd, random 4 KiB cache-miss reads, QD1 (no cache)" "$(fio_iops randread 4k 1) IOPS" "≥ 7,000"
row "cloopd, random 4 KiB cache-miss reads, QD16 (no cache)" "$(fio_iops randread 4k 16) IOPS" "≥ 12,000"
stop

start "$BIN" cloopd disk64k.cloop --unix "$SOCK" -q
row "cloopd, whole-image copy (default 64 MiB cache)" "$(copy_mbs) MB/s" "≥ 800 MB/s"
row "cloopd, random 4 KiB reads, QD1 (default cache: mostly misses)" "$(fio_iops randread 4k 1) IOPS" "≥ 7,000"
row "cloopd, random 4 KiB reads, QD16 (default cache: mostly misses)" "$(fio_iops randread 4k 16) IOPS" "≥ 12,000"
stop

start "$BIN" cloopd disk64k.cloop --unix "$SOCK" --cache-size 1G -q
# Warm the cache with small reads (whole-block reads bypass the store).
fio --name=warm --ioengine=nbd --uri="$URI" --rw=read --bs=4k --iodepth=16 --size=512M >/dev/null 2>&1
row "cloopd, random 4 KiB reads, warm cache, QD1" "$(fio_iops randread 4k 1) IOPS" "≥ 20,000"
row "cloopd, random 4 KiB reads, warm cache, QD16" "$(fio_iops randread 4k 16) IOPS" "≥ 150,000"
row "cloopd, random 4 KiB reads, warm cache, 4 conns × QD16" "$(fio_iops randread 4k 16 4) IOPS" "—"
stop

rm -f bench.cow
start "$BIN" cloopd disk64k.cloop --cow bench.cow --unix "$SOCK" -q
row "cloopd --cow, random 4 KiB writes, QD16" "$(fio_iops randwrite 4k 16) IOPS" "≥ 80,000"
stop
rm -f bench.cow

start qemu-nbd -r -e 8 -t -f qcow2 -k "$SOCK" disk.qcow2
row "peer: qemu-nbd, qcow2 zlib 64 KiB, whole-image copy" "$(copy_mbs) MB/s" "—"
row "peer: qemu-nbd, qcow2 zlib, random 4 KiB reads, QD1" "$(fio_iops randread 4k 1) IOPS" "—"
row "peer: qemu-nbd, qcow2 zlib, random 4 KiB reads, QD16" "$(fio_iops randread 4k 16) IOPS" "—"
stop

start nbdkit -r -f -U "$SOCK" file disk.raw
row "peer: nbdkit file (raw), random 4 KiB reads, QD1" "$(fio_iops randread 4k 1) IOPS" "—"
row "peer: nbdkit file (raw), random 4 KiB reads, QD16" "$(fio_iops randread 4k 16) IOPS" "—"
stop
