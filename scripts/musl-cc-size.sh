#!/bin/sh
# The C compiler scripts/build-static.sh gives the cc crate for the musl
# target: musl-gcc, with -Os appended (the last -O wins) when the source is
# an encoder of libzstd (zstd/lib/compress/) or libdeflate
# (lib/deflate_compress.c). The decoders, the hot path of every read, stay
# at the crates' -O3; the encoders are most of the two libraries' code and
# only create_compressed_fs runs them (BENCHMARKS.md, "Binary size").
size=
for arg in "$@"; do
    case $arg in
        *zstd/lib/compress/*.c | *deflate_compress.c) size=-Os ;;
    esac
done
[ -z "$size" ] || exec "${MUSL_CC:-musl-gcc}" "$@" "$size"
exec "${MUSL_CC:-musl-gcc}" "$@"
