#!/bin/bash
# NBD server benchmark: cloopd against qemu-nbd, nbdkit and nbd-server with
# the same clients, on the Debian root filesystem image of the foundation
# bench (bench/rootfs-image.sh), all in one run.
#
#   bench/nbd.sh [WORKDIR]        (default: ./work/bench, gitignored)
#
# Environment: REPS (rounds, default 5), RUNTIME (seconds per fio run,
# default 4), ONLY (a regex over "server workload" to run a subset),
# CLOOPBOX (a cloopbox binary; default: scripts/build-static.sh builds it).
#
# Servers (bench/nbd-run.py has the exact command lines): cloopd serving
# the image compressed by our create_compressed_fs -L 9 in 64 KiB and
# 256 KiB blocks, with no cache, a cold default cache, a warm 1 GiB cache,
# and each with a cowfile; qemu-nbd -e 8 on compressed qcow2 (qemu-img
# convert -c, zlib and zstd), --snapshot for writes; nbdkit with the xz
# filter (xz --block-size=256KiB) and with the cow filter over it; nbdkit
# file on the raw image (the ceiling) and on a writable copy; nbd-server -c.
# Clients: nbdcopy to null: (4 connections where multi-conn is offered) and
# fio's nbd engine; plus fio's psync engine with fdatasync=1 on the same
# filesystem as the baseline of write+flush.
#
# Each measurement runs against a freshly started server; rounds are
# interleaved (bench/nbd-run.py explains why). Results go to
# WORKDIR/nbd-DATE.jsonl (one line per measurement, with /proc/loadavg
# before and after and the server's CPU time) and the Markdown report to
# WORKDIR/nbd-DATE.md and stdout. Not a test: nothing fails on slow
# results.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mkdir -p "${1:-$ROOT/work/bench}" && cd "${1:-$ROOT/work/bench}" && pwd)
REPS=${REPS:-5}
RUNTIME=${RUNTIME:-4}

missing=
for t in fio:fio nbdcopy:libnbd-bin qemu-img:qemu-utils qemu-nbd:qemu-utils nbdkit:nbdkit \
    nbd-server:nbd-server xz:xz-utils python3:python3; do
    command -v "${t%%:*}" >/dev/null || missing="$missing ${t#*:}"
done
[ -z "$missing" ] || { echo "nbd.sh: missing tools; apt-get install$missing" >&2; exit 1; }
# fio's nbd engine is a plugin package on some distributions.
fio --enghelp=nbd >/dev/null 2>&1 || { echo "nbd.sh: fio has no nbd engine" >&2; exit 1; }

IMG=$("$ROOT/bench/rootfs-image.sh" "$WORK")
[ "$IMG" = "$WORK/rootfs.img" ] || { echo "nbd.sh: unexpected image path $IMG" >&2; exit 1; }
BIN=${CLOOPBOX:-$("$ROOT/scripts/build-static.sh")}

cd "$WORK"
# Every derived image is made once; a rerun reuses it (delete to remake).
make_once() { # FILE COMMAND...: run COMMAND to make FILE, via FILE.tmp
    local f=$1
    shift
    [ -f "$f" ] && return 0
    echo "making $f..." >&2
    "$@" "$f.tmp"
    mv "$f.tmp" "$f"
}
cloop() { "$BIN" create_compressed_fs -q -t "$(nproc)" -B "$1" -L 9 rootfs.img "$2"; }
make_once rootfs-64k.cloop cloop 65536
make_once rootfs-256k.cloop cloop 262144
make_once rootfs-zlib.qcow2 qemu-img convert -c -O qcow2 rootfs.img
make_once rootfs-zstd.qcow2 qemu-img convert -c -O qcow2 -o compression_type=zstd rootfs.img
xz_blocks() { xz -c -T"$(nproc)" --block-size=256KiB rootfs.img >"$1"; }
make_once rootfs.img.xz xz_blocks
# nbdkit file serves this copy read-write; writes land in it, which does not
# matter for the numbers (random writes over a 512 MiB image).
make_once rootfs-rw.img cp --sparse=always rootfs.img

stamp=$(date -u +%Y%m%d-%H%M%S)
args=(--reps "$REPS" --runtime "$RUNTIME")
[ -z "${ONLY:-}" ] || args+=(--only "$ONLY")
{
    echo "commit $(git -C "$ROOT" rev-parse --short HEAD), binary $BIN"
    echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -r)"
    echo "$(fio --version), $(nbdcopy --version | head -1), $(qemu-nbd --version | head -1)"
    echo "$(nbdkit --version), $(nbd-server -V 2>&1 | head -1), $(xz --version | head -1)"
} >"nbd-$stamp.env"
CLOOPBOX=$BIN python3 "$ROOT/bench/nbd-run.py" run "$WORK" "nbd-$stamp.jsonl" "${args[@]}"
python3 "$ROOT/bench/nbd-run.py" report "nbd-$stamp.jsonl" --env "nbd-$stamp.env" | tee "nbd-$stamp.md"
