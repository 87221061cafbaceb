#!/usr/bin/env bash
# Installs everything cloopbox needs to build and test on a fresh Debian
# machine: the Debian packages listed in scripts/apt-packages.txt and the
# static musl Rust target. Idempotent and quick when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/apt-packages.txt)
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The shipped binary is fully static. musl is the target of choice; where
# rustup cannot provide it, the build falls back to glibc with +crt-static
# (scripts/target.sh decides, so every script agrees).
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
        log "adding the x86_64-unknown-linux-musl target"
        rustup target add x86_64-unknown-linux-musl || log "musl target unavailable: using glibc +crt-static"
    fi
fi
log "ready"
