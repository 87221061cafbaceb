#!/bin/bash
# Codec benchmark: cloop-utils' create_compressed_fs against ours (zlib by
# libdeflate, zlib by zlib's own algorithm with --deflate zlib, zstd at
# several levels) on the Debian root filesystem image of
# bench/rootfs-image.sh, then single-thread decoding of the zlib and zstd
# images with extract_compressed_fs to /dev/null.
#
#   bench/codecs.sh [WORKDIR]        (default: ./work/bench, gitignored)
#
# Environment: RUNS (timed rounds, default 5), THREADS (default nproc),
# BS (default 131072), ZSTD_LEVELS (default "3 12 19 22"), BASELINE (an
# older cloopbox binary to compare decoding with, e.g. one built from the
# commit before libdeflate/libzstd; optional).
# Timing is bench/interleave.py (rotated rounds, median wall and CPU time).
# Every image is checked by extracting it and comparing with the input; the
# zlib image also through cloop-utils and qemu-img. Prints a Markdown
# report and keeps it in WORKDIR/codecs-report.md. Not a test.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mkdir -p "${1:-$ROOT/work/bench}" && cd "${1:-$ROOT/work/bench}" && pwd)
RUNS=${RUNS:-5}
T=${THREADS:-$(nproc)}
BS=${BS:-131072}
LEVELS=${ZSTD_LEVELS:-3 12 19 22}

for t in create_compressed_fs extract_compressed_fs qemu-img python3 cargo; do
    command -v $t >/dev/null || { echo "missing $t (see scripts/apt-packages.txt)" >&2; exit 1; }
done
IMG=$("$ROOT/bench/rootfs-image.sh" "$WORK")
OURS=$("$ROOT/scripts/build-static.sh")
cd "$WORK"
TIME="python3 $ROOT/bench/interleave.py"
FLAGS="-q -t $T -B $BS"

echo "creating zlib images ($RUNS rounds)..." >&2
$TIME codecs-create.json "$RUNS" \
    "cloop-utils=create_compressed_fs $FLAGS -L 9 $IMG theirs.cloop" \
    "ours=$OURS create_compressed_fs $FLAGS -L 9 $IMG ours.cloop" \
    "ours-zlib=$OURS create_compressed_fs $FLAGS -L 9 --deflate zlib $IMG ours-zlib.cloop"

echo "creating zstd images (one run each)..." >&2
args=()
for l in $LEVELS; do args+=("zstd-$l=$OURS create_compressed_fs $FLAGS --codec zstd -L $l $IMG zstd-$l.cloop"); done
$TIME codecs-zstd.json 1 --no-warmup "${args[@]}"

echo "checking the images..." >&2
for f in theirs ours ours-zlib $(for l in $LEVELS; do echo zstd-$l; done); do
    "$OURS" extract_compressed_fs -q $f.cloop - | cmp - "$IMG" >&2
done
for f in ours ours-zlib; do
    extract_compressed_fs $f.cloop - 2>/dev/null | cmp - "$IMG" >&2
    qemu-img convert -f cloop -O raw $f.cloop qemu.raw && cmp qemu.raw "$IMG" >&2
done
rm -f qemu.raw

echo "decoding, one thread ($RUNS rounds)..." >&2
top=$(echo $LEVELS | tr ' ' '\n' | sort -n | tail -1)
dec=("zlib=$OURS extract_compressed_fs -q -t 1 ours.cloop - >/dev/null")
for l in $LEVELS; do dec+=("zstd-$l=$OURS extract_compressed_fs -q -t 1 zstd-$l.cloop - >/dev/null"); done
dec+=("cloop-utils-zlib=extract_compressed_fs ours.cloop - >/dev/null")
if [ -n "${BASELINE:-}" ]; then
    dec+=("baseline-zlib=$BASELINE extract_compressed_fs -q -t 1 ours.cloop - >/dev/null")
    dec+=("baseline-zstd-$top=$BASELINE extract_compressed_fs -q -t 1 zstd-$top.cloop - >/dev/null")
fi
$TIME codecs-decode.json "$RUNS" "${dec[@]}"

python3 - "$IMG" "$T" "$(cat /proc/loadavg)" <<'EOF' | tee codecs-report.md
import json, os, sys
img, threads, load = sys.argv[1], sys.argv[2], sys.argv[3]
def load_json(name):
    return {r["command"]: r for r in json.load(open(name))["results"]}
size = lambda f: os.path.getsize(f)
theirs = size("theirs.cloop")
print(f"input {os.path.getsize(img):,} bytes, {threads} thread(s); load average at the end: {load}\n")
print("| Image | Bytes | vs cloop-utils | vs ours zlib -L 9 | CPU to create | wall to create |")
print("|---|---|---|---|---|---|")
c = load_json("codecs-create.json")
z = load_json("codecs-zstd.json")
ours = size("ours.cloop")
rows = [("cloop-utils -L 9", "theirs.cloop", c["cloop-utils"]), ("ours -L 9 (libdeflate)", "ours.cloop", c["ours"]),
        ("ours -L 9 --deflate zlib", "ours-zlib.cloop", c["ours-zlib"])]
rows += [(f"ours --codec zstd -L {k[5:]}", f"{k}.cloop", v) for k, v in z.items()]
for name, f, r in rows:
    print(f"| {name} | {size(f):,} | {size(f)/theirs:.4f}× | {size(f)/ours:.4f}× | {r['cpu_median']:.2f} s | {r['median']:.2f} s |")
base = c["cloop-utils"]
for k in ("ours", "ours-zlib"):
    print(f"\n{k}: creation {base['median']/c[k]['median']:.2f}× faster than cloop-utils (wall), {base['cpu_median']/c[k]['cpu_median']:.2f}× (CPU)")
d = load_json("codecs-decode.json")
raw = os.path.getsize(img)
print("\n| Decode, 1 thread, to /dev/null | wall | CPU | MB/s (CPU) | vs ours zlib (CPU) |")
print("|---|---|---|---|---|")
for k, r in d.items():
    print(f"| {k} | {r['median']:.2f} s | {r['cpu_median']:.2f} s | {raw/r['cpu_median']/1e6:.0f} | {d['zlib']['cpu_median']/r['cpu_median']:.2f}× |")
EOF
