#!/usr/bin/env bash
# Builds the fully static release binary and prints its path on stdout.
# musl when rustup has the target; otherwise glibc with +crt-static, which
# is still fully static. Everything that needs the shipped binary (tests,
# demo, boot images, benchmarks) gets it from here, so they all agree.
#
# --boot builds the boot build instead: without the `create` feature (no
# cloop writer, no create_compressed_fs, no block encoders), for the
# initramfs, in its own target dir (target/boot) so that the builds never
# overwrite each other (README "Boot build"). It keeps `https` (TLS), so
# the initramfs can boot from an https:// server.
#
# --boot-offline builds the boot build without `https` as well, for media
# that never boot from the network (CD, USB): about 1 MB smaller; http://
# still works, https:// URLs and CA files are refused with a message
# saying why. Its own target dir: target/boot-offline. An initramfs takes
# it with `initramfs/mkinitramfs.sh -b` or `mklive.sh --boot-binary`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
features=()
target_dir="$root/target"
case "${1:-}" in
    --boot)
        features=(--no-default-features --features zlib-rs,https)
        target_dir="$root/target/boot"
        ;;
    --boot-offline)
        features=(--no-default-features --features zlib-rs)
        target_dir="$root/target/boot-offline"
        ;;
    "") ;;
    *)
        echo "usage: build-static.sh [--boot | --boot-offline]" >&2
        exit 2
        ;;
esac
if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    target=x86_64-unknown-linux-musl
    flags="${RUSTFLAGS:-}"
    # musl-gcc for the C codecs, their encoders at -Os (scripts/musl-cc-size.sh).
    export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-$root/scripts/musl-cc-size.sh}"
else
    echo "build-static: musl target missing, falling back to glibc +crt-static" >&2
    target=x86_64-unknown-linux-gnu
    flags="${RUSTFLAGS:-} -C target-feature=+crt-static"
fi
RUSTFLAGS="$flags" cargo build --quiet --release --locked --target "$target" \
    --target-dir "$target_dir" ${features[@]+"${features[@]}"} \
    --manifest-path "$root/Cargo.toml" --bin cloopbox >&2
echo "$target_dir/$target/release/cloopbox"
