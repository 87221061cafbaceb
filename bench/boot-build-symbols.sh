#!/usr/bin/env bash
# Checks with nm that the boot build (scripts/build-static.sh --boot) really
# has no encoder left: the shipped binaries are stripped, so this builds
# both builds unstripped (CARGO_PROFILE_RELEASE_STRIP=false, the same musl
# target and C compiler wrapper as scripts/build-static.sh) into their own
# target dirs (target/full-nm, target/boot-nm) and counts, per build, the
# symbols of each writer-only part. Exit status 1 when the boot build has
# any of them. Results: BENCHMARKS.md, "Binary and initramfs size".
#
#   bench/boot-build-symbols.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=x86_64-unknown-linux-musl
export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-$root/scripts/musl-cc-size.sh}"
# name, then an extended regular expression over `nm -S --demangle=rust` lines
parts=(
    "libzstd compressor" ' (ZSTD_compress|ZSTD_CCtx|ZSTD_initC|HUF_compress|FSE_compress|ZSTD_ldm|ZSTD_fill(Double)?HashTable)'
    "libdeflate compressor" ' (libdeflate_(alloc_compressor|deflate_compress|zlib_compress)|deflate_compress_)'
    "zopfli" 'zopfli'
    "lzma-rust2 encoder" 'lzma_rust2::(enc|xz::writer|lzma2_writer|lzma_writer)|XzWriter|Lzma2Writer|LzmaEncoder'
    "cloop writer" 'cloopbox::cloop::writer'
    "create_compressed_fs" 'create_compressed_fs'
)
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
status=0
printf '| build | stripped bytes |'; for ((i = 0; i < ${#parts[@]}; i += 2)); do printf ' %s |' "${parts[i]}"; done; echo
printf '|---|---|'; for ((i = 0; i < ${#parts[@]}; i += 2)); do printf -- '---|'; done; echo
for build in full boot; do
    features=()
    [ "$build" = full ] || features=(--no-default-features --features zlib-rs,https)
    CARGO_PROFILE_RELEASE_STRIP=false cargo build --quiet --release --locked --target "$target" \
        --target-dir "$root/target/$build-nm" ${features[@]+"${features[@]}"} \
        --manifest-path "$root/Cargo.toml" --bin cloopbox >&2
    bin=$root/target/$build-nm/$target/release/cloopbox
    syms=$(nm -S --demangle=rust "$bin")
    strip -o "$tmp" "$bin"
    stripped=$(stat -c %s "$tmp")
    printf '| %s | %s |' "$build" "$stripped"
    for ((i = 0; i < ${#parts[@]}; i += 2)); do
        n=$(grep -cE -- "${parts[i + 1]}" <<< "$syms" || true)
        printf ' %s |' "$n"
        if [ "$build" = boot ] && [ "$n" -gt 0 ]; then status=1; fi
    done
    echo
done
[ "$status" = 0 ] || echo "boot-build-symbols: the boot build still has writer-only symbols" >&2
exit "$status"
