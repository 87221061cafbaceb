#!/bin/bash
# Compression benchmark: Debian cloop-utils' create_compressed_fs and
# extract_compressed_fs against cloopbox's, side by side in one run, on a
# Debian bookworm minbase root filesystem in a 512 MiB ext4 image.
#
#   bench/compress.sh [WORKDIR]        (default: ./work/bench, gitignored)
#
# Environment: RUNS (timed runs per command, default 5), THREADS (default
# nproc), BS (block size, default 131072), LEVEL (default 9).
#
# Since libdeflate writes zlib -L 1..12 and inflates every zlib block
# (bench/codecs.sh, BENCHMARKS.md "Codec choice"), the flate2 backend
# (zlib-rs or miniz) only matters here with LEVEL=0 or with --deflate zlib.
#
# cloopbox is built three ways: the shipped static binary
# (scripts/build-static.sh: musl, flate2 over zlib-rs), the same with the
# miniz_oxide backend (--no-default-features --features miniz, own target
# dir), and a glibc build (to see what musl's allocator costs). Timing is
# bench/interleave.py, not hyperfine: it interleaves the commands round by
# round (hyperfine runs all runs of one command back to back, which on a
# shared machine lets a burst of load hit one command only) and records
# median wall and median CPU time. Prints a Markdown report on stdout and
# keeps it in WORKDIR/compress-report.md. Not a test: nothing fails on slow
# results.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mkdir -p "${1:-$ROOT/work/bench}" && cd "${1:-$ROOT/work/bench}" && pwd)
RUNS=${RUNS:-5}
T=${THREADS:-$(nproc)}
BS=${BS:-131072}
LEVEL=${LEVEL:-9}

for t in create_compressed_fs extract_compressed_fs mkfs.ext4 python3 cargo; do
    command -v $t >/dev/null || {
        echo "missing $t (apt-get install cloop-utils e2fsprogs python3; rustup)" >&2
        exit 1
    }
done

IMG=$("$ROOT/bench/rootfs-image.sh" "$WORK")

echo "building cloopbox (static release, zlib-rs / miniz / glibc)..." >&2
OURS=$("$ROOT/scripts/build-static.sh")
TARGET=$(basename "$(dirname "$(dirname "$OURS")")")
cargo build --quiet --release --locked --manifest-path "$ROOT/Cargo.toml" --bin cloopbox \
    --target "$TARGET" --no-default-features --features miniz --target-dir "$ROOT/target/bench-miniz" >&2
MINIZ=$ROOT/target/bench-miniz/$TARGET/release/cloopbox
cargo build --quiet --release --locked --manifest-path "$ROOT/Cargo.toml" --bin cloopbox \
    --target x86_64-unknown-linux-gnu >&2
GLIBC=$ROOT/target/x86_64-unknown-linux-gnu/release/cloopbox

cd "$WORK"
FLAGS="-q -t $T -B $BS -L $LEVEL"
declare -A BIN=([ours]=$OURS [miniz]=$MINIZ [glibc]=$GLIBC)

TIME="python3 $ROOT/bench/interleave.py"
echo "compressing ($RUNS rounds)..." >&2
$TIME compress.json "$RUNS" \
    "cloop-utils=create_compressed_fs $FLAGS $IMG theirs.cloop" \
    "ours=$OURS create_compressed_fs $FLAGS $IMG ours.cloop" \
    "miniz=$MINIZ create_compressed_fs $FLAGS $IMG miniz.cloop" \
    "glibc=$GLIBC create_compressed_fs $FLAGS $IMG glibc.cloop" \
    "ours-L8=$OURS create_compressed_fs ${FLAGS/-L $LEVEL/-L 8} $IMG ours-L8.cloop"

echo "checking the images..." >&2
for v in ours miniz glibc; do
    extract_compressed_fs $v.cloop - 2>/dev/null | cmp - "$IMG" >&2
    "${BIN[$v]}" extract_compressed_fs -q $v.cloop - | cmp - "$IMG" >&2
done
cmp glibc.cloop ours.cloop >&2

# cloop-utils' extractor fdatasyncs the output after every block (formats.md
# A11.2); to a file that is part of its cost, to /dev/null it is not.
echo "extracting ($RUNS rounds)..." >&2
$TIME extract-file.json "$RUNS" --prepare 'rm -f out.raw' \
    "cloop-utils=extract_compressed_fs theirs.cloop out.raw" \
    "ours=$OURS extract_compressed_fs -q -t $T theirs.cloop out.raw" \
    "miniz=$MINIZ extract_compressed_fs -q -t $T theirs.cloop out.raw" \
    "glibc=$GLIBC extract_compressed_fs -q -t $T theirs.cloop out.raw"
$TIME extract-null.json "$RUNS" \
    "cloop-utils=extract_compressed_fs theirs.cloop - >/dev/null" \
    "ours=$OURS extract_compressed_fs -q -t $T theirs.cloop - >/dev/null" \
    "miniz=$MINIZ extract_compressed_fs -q -t $T theirs.cloop - >/dev/null" \
    "glibc=$GLIBC extract_compressed_fs -q -t $T theirs.cloop - >/dev/null"
rm -f out.raw

python3 "$ROOT/bench/compress-report.py" "$IMG" "$TARGET" "$FLAGS" | tee compress-report.md
