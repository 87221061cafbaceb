#!/usr/bin/env bash
# Runs every test: formatting, lints, the unit/integration/interop suites
# (which drive the real peers: cloop-utils, qemu-img, ...), and the QEMU
# boot scenarios. Installs what it needs first. Exit status 0 only if all
# of it passed.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*" >&2; }

step "setup"
scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

# The boot build without https (scripts/build-static.sh --boot-offline,
# README "Boot build"): the same lints without the writer and without TLS,
# tests included, in its own target dir. It covers every
# cfg(not(feature = ...)) path at once; the code of the `https` feature is
# linted above with the default features, as in --boot's build.
step "cargo clippy, boot build without https (--no-default-features --features zlib-rs)"
cargo clippy --locked --all-targets --no-default-features --features zlib-rs --target-dir target/boot -- -D warnings

# The fuzz crate needs nightly to build (cargo-fuzz), so it is not built
# here; but its manifest must parse and name every target in
# fuzz/fuzz_targets, or no target builds at all.
step "fuzz manifest: one [[bin]] per fuzz target"
fuzz_bins=$(cargo metadata --no-deps --format-version 1 --manifest-path fuzz/Cargo.toml |
    python3 -c 'import json, sys; print(" ".join(sorted(t["name"] for p in json.load(sys.stdin)["packages"] for t in p["targets"])))')
fuzz_files=$(cd fuzz/fuzz_targets && ls -- *.rs | sed 's/\.rs$//' | sort | tr '\n' ' ' | sed 's/ $//')
[ "$fuzz_bins" = "$fuzz_files" ] || { echo "fuzz/Cargo.toml targets '$fuzz_bins' != fuzz/fuzz_targets '$fuzz_files'" >&2; exit 1; }

LOG=$(mktemp -d)/test.log
step "setup on the pristine-machine trap (tests/setup/pristine-trap.sh)"
tests/setup/pristine-trap.sh 2>&1 | tee "$LOG"

step "cargo test"
cargo test --locked --all-targets 2>&1 | tee -a "$LOG"

# The library's own tests without the writer and without TLS (the boot
# build without https, --boot-offline): what it keeps must stand on its own,
# and https:// must be refused clearly (the integration tests need
# create_compressed_fs; tests/static_binary.rs checks the boot binary
# itself, which has https).
step "cargo test --lib, boot build without https"
cargo test --locked --lib --no-default-features --features zlib-rs --target-dir target/boot 2>&1 | tee -a "$LOG"

step "the Debian package (scripts/build-deb.sh, lintian clean)"
scripts/build-deb.sh >/dev/null

step "qemu-test.sh"
./qemu-test.sh 2>&1 | tee -a "$LOG"

step "qemu-test.sh: the core scenarios under Debian 13's kernel (6.12), a Debian 13 root, NTFS (ntfs3), dracut 106 and the ublk transport"
KERNEL_SUITE=trixie ./qemu-test.sh cd cd-iso9660 cd-small usb uefi-secureboot debian13-systemd findiso-ntfs dracut13 ublk debian13-ublk 2>&1 | tee -a "$LOG"

# One closing line that counts every test run above (cargo's per-binary
# "test result" lines plus the QEMU scenarios).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^(qemu-test|pristine-trap): [0-9]+ passed/ { p += $2; f += $4 }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$LOG"
