#!/usr/bin/env bash
# Installs everything cloopbox needs to build and test on a fresh Debian
# machine, then proves it: the Debian packages in scripts/apt-packages.txt
# (one apt transaction for all of them) and the static musl Rust target.
# Idempotent and quick when nothing is missing. Fails loudly, naming the
# package, when a package or one of the commands it must provide is absent.
#
# Why one transaction, and why the pins: a machine may carry a package at a
# version no configured source offers any more (the machines this project
# runs on ship qemu-utils 10.0 from bookworm-backports, without backports in
# their sources). Installing qemu-system-x86 7.2 on its own then makes apt
# silently *remove* qemu-utils, since packages built from one source must
# come at one version. Naming both in one transaction makes apt refuse
# instead, so such "orphaned" packages are pinned to the version the sources
# offer (a downgrade, allowed only for them), and the whole set goes in
# together. Nothing listed can be traded away for something else listed.
#
# SETUP_PACKAGES=FILE uses another list (tests/setup/pristine-trap.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

LIST=${SETUP_PACKAGES:-scripts/apt-packages.txt}
log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

packages=()
declare -A commands_of=()
# A line: PACKAGE [# cmd: COMMAND...]; other comments are ignored.
while read -r pkg cmds; do
    packages+=("$pkg")
    commands_of[$pkg]=$cmds
done < <(sed -E -e 's/#[[:space:]]*cmd:/ /' -e 's/#.*//' -e '/^[[:space:]]*$/d' "$LIST")
[ ${#packages[@]} -gt 0 ] || die "$LIST lists no packages"

# Prints "PKG=VERSION" for every listed, installed package whose installed
# version is newer than anything the configured sources offer (it came from
# somewhere they no longer list); VERSION is the newest one they do offer.
orphan_pins() {
    local pkg ver offered newest
    for pkg in "${packages[@]}"; do
        installed "$pkg" || continue
        ver=$(dpkg-query -W -f='${Version}' "$pkg")
        offered=$(apt-cache madison "$pkg" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}')
        [ -n "$offered" ] || continue
        newest=$(head -n1 <<<"$offered")
        if dpkg --compare-versions "$ver" gt "$newest"; then echo "$pkg=$newest"; fi
    done
}

# Simulates installing ARGS; succeeds only if apt would neither fail nor
# remove anything.
plan_is_clean() {
    local out
    out=$(LC_ALL=C apt-get install -s -y --allow-downgrades --no-install-recommends "$@" 2>&1) || return 1
    ! grep -q '^Remv ' <<<"$out"
}

missing=()
for pkg in "${packages[@]}"; do installed "$pkg" || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    as_root apt-get update -qq
    args=("${packages[@]}")
    if ! plan_is_clean "${args[@]}"; then
        mapfile -t pins < <(orphan_pins)
        [ ${#pins[@]} -gt 0 ] || {
            LC_ALL=C apt-get install -s -y --no-install-recommends "${args[@]}" 2>&1 | grep -E '^(E:|Remv| )' >&2 || true
            die "apt cannot install the listed packages together (above)"
        }
        log "pinning to the versions the sources offer: ${pins[*]}"
        args=()
        for pkg in "${packages[@]}"; do
            pin=$(printf '%s\n' "${pins[@]}" | grep -m1 "^$pkg=" || true)
            args+=("${pin:-$pkg}")
        done
        plan_is_clean "${args[@]}" || {
            LC_ALL=C apt-get install -s -y --allow-downgrades --no-install-recommends "${args[@]}" 2>&1 | grep -E '^(E:|Remv| )' >&2 || true
            die "apt cannot install the listed packages together even with ${pins[*]} (above)"
        }
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades \
        --no-install-recommends "${args[@]}" >/dev/null
fi

# Prove it: every package installed, every command it must provide on PATH.
bad=0
for pkg in "${packages[@]}"; do
    if ! installed "$pkg"; then
        printf '[setup] error: package %s is not installed\n' "$pkg" >&2
        bad=1
        continue
    fi
    for cmd in ${commands_of[$pkg]}; do
        command -v "$cmd" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$cmd" >/dev/null 2>&1 || {
            printf '[setup] error: command %s (package %s) is missing\n' "$cmd" "$pkg" >&2
            bad=1
        }
    done
done
[ $bad -eq 0 ] || die "the machine is not ready (above)"

# The shipped binary is fully static. musl is the target of choice; where
# rustup cannot provide it, the build falls back to glibc with +crt-static
# (scripts/build-static.sh decides, so every script agrees).
if [ -z "${SETUP_PACKAGES:-}" ] && command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
        log "adding the x86_64-unknown-linux-musl target"
        rustup target add x86_64-unknown-linux-musl || log "musl target unavailable: using glibc +crt-static"
    fi
fi
log "ready: ${#packages[@]} packages and their commands checked"
