#!/usr/bin/env bash
# End-to-end scenarios in QEMU guests with a stock Debian kernel.
#
# Sets up what it needs (apt packages, the Debian kernel unpacked with
# dpkg -x), builds the static cloopbox, runs each scenario under -accel tcg
# (KVM hangs on the project machines) with the serial console logged, checks
# the markers the guest prints, and writes one summary line per scenario.
# Logs stay in $WORK/logs. Exit status is non-zero if any scenario failed.
#
# Usage: ./qemu-test.sh [SCENARIO...]     (default: all)
#   -i, --interactive   boot the first scenario with the console on this terminal
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
WORK=${WORK:-$ROOT/work/qemu}
LOGS=$WORK/logs
TIMEOUT=${QEMU_TIMEOUT:-300}
mkdir -p "$WORK" "$LOGS"

log() { printf '[qemu-test] %s\n' "$*" >&2; }

INTERACTIVE=0
SCENARIOS=()
for arg in "$@"; do
    case $arg in
        -i | --interactive) INTERACTIVE=1 ;;
        -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
        *) SCENARIOS+=("$arg") ;;
    esac
done
ALL_SCENARIOS=(smoke)
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=("${ALL_SCENARIOS[@]}")

scripts/setup.sh
for pkg in qemu-system-x86 busybox-static cpio; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || {
        log "installing $pkg"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
    }
done

# --- the Debian kernel, unpacked (not installed) -----------------------------
fetch_kernel() {
    local kdir=$WORK/kernel
    if [ ! -f "$kdir/vmlinuz" ]; then
        local pkg
        pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
        [ -n "$pkg" ] || { log "cannot resolve linux-image-amd64 (apt-get update?)"; exit 1; }
        log "fetching $pkg"
        rm -rf "$kdir" && mkdir -p "$kdir/pkg"
        (cd "$kdir" && apt-get download -qq "$pkg" && dpkg -x ./*.deb pkg)
        cp "$kdir"/pkg/boot/vmlinuz-* "$kdir/vmlinuz"
        basename "$kdir"/pkg/lib/modules/* > "$kdir/version"
    fi
    KERNEL=$kdir/vmlinuz
    KVER=$(cat "$kdir/version")
    MODDIR=$kdir/pkg/lib/modules/$KVER
}

# --- helpers -------------------------------------------------------------
# make_cpio DIR OUT: a gzip-compressed newc archive of DIR.
make_cpio() {
    (cd "$1" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -9 > "$2"
}

# run_guest NAME INITRD [extra qemu args...]: boots, logs the serial console
# to $LOGS/NAME.log, and returns when the guest powers off or times out.
run_guest() {
    local name=$1 initrd=$2
    shift 2
    local cmdline="console=ttyS0 panic=-1 quiet loglevel=3 ${APPEND:-}"
    local qemu=(qemu-system-x86_64 -accel tcg -m 1024 -smp 2 -nodefaults -no-reboot
        -kernel "$KERNEL" -initrd "$initrd" -append "$cmdline" "$@")
    if [ "$INTERACTIVE" = 1 ]; then
        "${qemu[@]}" -nographic
        return 0
    fi
    timeout "$TIMEOUT" "${qemu[@]}" -display none -serial "file:$LOGS/$name.log" -monitor none || true
}

RESULTS=()
record() { # NAME STATUS SECONDS DETAIL
    RESULTS+=("$(printf '%-14s %-4s %6ss  %s' "$1" "$2" "$3" "$4")")
}

# --- scenario: smoke ---------------------------------------------------------
# The static binary runs as a guest program under a stock kernel: it lists
# its applets and extracts a cloop image made on the host, bit-exact.
scenario_smoke() {
    local dir=$WORK/smoke root=$WORK/smoke/root
    rm -rf "$dir" && mkdir -p "$root"/{bin,sbin,proc,sys,dev,data}
    cp /bin/busybox "$root/bin/busybox"
    for a in sh mount poweroff sha256sum cat echo; do ln -s busybox "$root/bin/$a"; done
    cp "$CLOOPBOX_BIN" "$root/bin/cloopbox"
    # A multiple of the block size: V2 pads the last block with zeros.
    head -c $((46 * 65536)) /dev/urandom > "$dir/payload.raw"
    dd if=/dev/zero bs=1M count=2 status=none >> "$dir/payload.raw"
    "$CLOOPBOX_BIN" create_compressed_fs -q -B 65536 "$dir/payload.raw" "$root/data/payload.cloop"
    sha256sum < "$dir/payload.raw" | cut -d' ' -f1 > "$root/data/expected"
    cat > "$root/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t devtmpfs dev /dev
echo "SMOKE: applets: $(/bin/cloopbox --list | tr '\n' ' ')"
got=$(/bin/cloopbox extract_compressed_fs -q /data/payload.cloop | sha256sum | cut -d' ' -f1)
if [ "$got" = "$(cat /data/expected)" ]; then echo "SMOKE: extract OK"; else echo "SMOKE: extract MISMATCH $got"; fi
poweroff -f
INIT
    chmod +x "$root/init"
    make_cpio "$root" "$dir/initrd.gz"
    local t0=$SECONDS
    run_guest smoke "$dir/initrd.gz"
    local took=$((SECONDS - t0))
    if grep -q "SMOKE: extract OK" "$LOGS/smoke.log" && grep -q "create_compressed_fs" "$LOGS/smoke.log"; then
        record smoke PASS "$took" "static binary ran under kernel $KVER and extracted bit-exact"
    else
        record smoke FAIL "$took" "see $LOGS/smoke.log"
    fi
}

CLOOPBOX_BIN=$(scripts/build-static.sh)
fetch_kernel
for s in "${SCENARIOS[@]}"; do
    declare -F "scenario_$s" >/dev/null || { log "unknown scenario '$s' (have: ${ALL_SCENARIOS[*]})"; exit 2; }
    log "scenario $s"
    "scenario_$s"
done

printf '\n%-14s %-4s %7s  %s\n' scenario res time detail
printf '%s\n' "${RESULTS[@]}"
failed=$(printf '%s\n' "${RESULTS[@]}" | grep -c ' FAIL ' || true)
passed=$(printf '%s\n' "${RESULTS[@]}" | grep -c ' PASS ' || true)
echo "qemu-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
