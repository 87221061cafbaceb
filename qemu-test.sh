#!/usr/bin/env bash
# End-to-end scenarios in QEMU guests with a stock Debian kernel.
#
# Sets up what it needs (apt packages, the Debian kernel unpacked with
# dpkg -x), builds the static cloopbox, runs each scenario under -accel tcg
# (KVM hangs on the project machines) with the serial console logged, checks
# the markers the guest prints, and writes one summary line per scenario.
# Logs stay in $WORK/logs. Exit status is non-zero if any scenario failed.
#
# Usage: ./qemu-test.sh [-j N] [SCENARIO...]     (default: all)
#   -i, --interactive   boot the scenarios with the console on this terminal
#                       (the live scenarios then end in a shell in the guest)
#   -j N                run N scenarios at once (default QEMU_JOBS, else 2;
#                       1 when interactive): each in its own subshell, its
#                       output in $WORK/logs/NAME.run; the shared artifacts
#                       are built first, results reported in scenario order
# Scenarios live here and in tests/qemu/*.sh; the helpers they share (kernel,
# initramfs, ISOs through initramfs/mklive.sh, boot, checks) in
# tests/qemu/lib.sh. QEMU_MEM sets the guest RAM (MiB, default 1024).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
# KERNEL_SUITE=trixie runs the scenarios under Debian 13's 6.12 kernel, in
# their own scratch directory (tests/qemu/lib.sh fetches that kernel).
KERNEL_SUITE=${KERNEL_SUITE:-bookworm}
if [ "$KERNEL_SUITE" = bookworm ]; then
    WORK=${WORK:-$ROOT/work/qemu}
else
    WORK=${WORK:-$ROOT/work/qemu-$KERNEL_SUITE}
    KERNEL_TAG=@$KERNEL_SUITE
fi
TIMEOUT=${QEMU_TIMEOUT:-300}
INTERACTIVE=0
JOBS=${QEMU_JOBS:-2}
SCENARIOS=()
while [ $# -gt 0 ]; do
    case $1 in
        -i | --interactive) INTERACTIVE=1 ;;
        -j) JOBS=${2:?-j needs a number}; shift ;;
        -j*) JOBS=${1#-j} ;;
        -h | --help) awk 'NR > 1 { if (!/^#/ || /^# shellcheck/) exit; print }' "$0"; exit 0 ;;
        *) SCENARIOS+=("$1") ;;
    esac
    shift
done
case $JOBS in '' | *[!0-9]* | 0) echo "qemu-test: -j wants a positive number, not '$JOBS'" >&2; exit 2 ;; esac
[ "$INTERACTIVE" != 1 ] || JOBS=1
# shellcheck source=tests/qemu/lib.sh
. tests/qemu/lib.sh
rm -f "$LOGS/restarts.txt" "$WORK"/.ready-*
# Scenarios defined here; tests/qemu/*.sh add more (each appends its names).
ALL_SCENARIOS+=(smoke cd cd-iso9660 cd-small usb hybrid multi no-medium corrupt-image kernel-nbd)
# ublk-fallback needs a kernel without ublk_drv: Debian 12's 6.1.
[ "$KERNEL_SUITE" != bookworm ] || ALL_SCENARIOS+=(ublk-fallback)

scripts/setup.sh

# --- scenario: smoke ---------------------------------------------------------
# The static binary runs as a guest program under a stock kernel: it lists
# its applets and extracts a cloop image made on the host, bit-exact. It is
# the boot build, the initramfs's binary: it says so, keeps https (the
# net-https scenario boots through it), and refuses the writer.
scenario_smoke() {
    local dir=$WORK/smoke root=$WORK/smoke/root
    rm -rf "$dir" && mkdir -p "$root"/{bin,sbin,proc,sys,dev,data}
    cp /bin/busybox "$root/bin/busybox"
    for a in sh mount poweroff sha256sum cat echo; do ln -s busybox "$root/bin/$a"; done
    cp "$CLOOPBOX_BOOT_BIN" "$root/bin/cloopbox"
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
echo "SMOKE: version: $(/bin/cloopbox --version | tr '\n' ' ')"
if msg=$(/bin/cloopbox create_compressed_fs --help 2>&1); then echo "SMOKE: create ran"; else echo "SMOKE: create refused: $msg"; fi
got=$(/bin/cloopbox extract_compressed_fs -q /data/payload.cloop | sha256sum | cut -d' ' -f1)
if [ "$got" = "$(cat /data/expected)" ]; then echo "SMOKE: extract OK"; else echo "SMOKE: extract MISMATCH $got"; fi
poweroff -f
INIT
    chmod +x "$root/init"
    make_cpio "$root" "$dir/initrd.gz"
    local t0=$SECONDS
    boot smoke "SMOKE: extract" -kernel "$KERNEL" -initrd "$dir/initrd.gz" -append "console=ttyS0 panic=-1 loglevel=6"
    local took=$((SECONDS - t0))
    if grep -q "SMOKE: extract OK" "$LOGS/smoke.log" && grep -q "create_compressed_fs" "$LOGS/smoke.log" &&
        grep -q "SMOKE: version: cloopbox .* (boot build) features: zlib-rs https" "$LOGS/smoke.log" &&
        grep -q "SMOKE: create refused: create_compressed_fs: not in this build" "$LOGS/smoke.log"; then
        record smoke PASS "$took" "static boot build ran under kernel $KVER, refused the writer and extracted bit-exact"
    else
        record smoke FAIL "$took" "see $LOGS/smoke.log"
    fi
}

# cd: an El Torito ISO on an emulated CD drive; ext4 inside cloop gets
# the block-level cowfile on tmpfs.
scenario_cd() {
    prepare_live
    boot cd "$UNTIL_LIVE" -cdrom "$WORK/cd-ext4.iso" -boot d
    check cd "ISO on CD, ext4 root on nbd with a tmpfs cowfile" "${BLOCK_COW_CHECKS[@]}"
}

# ublk-fallback: cloopbox.transport=ublk on a kernel without ublk_drv
# (Debian 12's 6.1): the boot says why on the console and serves the root
# over NBD, which then works as in cd.
scenario_ublk-fallback() {
    prepare_live
    local iso=$WORK/ublk-fallback.iso
    make_iso "$iso" "$APPEND_BASE cloopbox.transport=ublk" "$WORK/root-ext4.cloop"
    boot ublk-fallback "$UNTIL_LIVE" -cdrom "$iso" -boot d
    check ublk-fallback "cloopbox.transport=ublk without ublk_drv: said so, ext4 root on nbd" \
        "cloopbox.transport=ublk: ublk: /dev/ublk-control: not found .*; serving over NBD" \
        "${BLOCK_COW_CHECKS[@]}"
}

# cd-iso9660: the image holds iso9660, as real Knoppix images do: served
# read-only, with overlayfs on top.
scenario_cd-iso9660() {
    prepare_live
    boot cd-iso9660 "$UNTIL_LIVE" -cdrom "$WORK/cd-iso.iso" -boot d
    check cd-iso9660 "iso9660 image read-only on nbd, overlayfs root" "${OVERLAY_CHECKS[@]}"
}

# cd-small: the initramfs a builder of a CD-only live system ships:
# `mklive --media cd` with an iso9660 image, which picks the CD's drivers,
# the image's filesystem (cloopinfo) and the boot build without https://
# (no --binary given: mklive builds its own from the tree). The ISO's
# archive must hold the CD's drivers and none of the USB, disk or ext4
# ones; it boots the iso9660 root from CD as cd-iso9660 does, with /init
# the build without TLS; and with no medium at all, the failure says
# which media it has drivers for.
cd_small_build() {
    "$MKLIVE" -q --kernel "$KERNEL" --modules "$KERNEL_DIR/pkg" --kver "$KVER" --media cd \
        --image "$WORK/root-iso.cloop" --append "$APPEND_BASE" -o "$WORK/cd-small.iso"
    rm -f "$WORK/initrd-small.gz"
    xorriso -osirrox on -indev "$WORK/cd-small.iso" -extract /boot/initrd.gz "$WORK/initrd-small.gz" 2>/dev/null
}
scenario_cd-small() {
    prepare_live
    once cd-small cd_small_build
    local list bad="" m
    # The modules are the first, uncompressed archive; cpio stops after it.
    list=$(cpio -t --quiet < "$WORK/initrd-small.gz" 2>/dev/null || true)
    for m in sr_mod cdrom isofs overlay nbd; do grep -q "/$m\.ko" <<< "$list" || bad+="no $m; "; done
    for m in usb-storage xhci-hcd sd_mod nvme ext4 vfat squashfs; do grep -q "/$m\.ko" <<< "$list" && bad+="has $m; "; done
    if [ -z "$bad" ]; then
        record cd-small-files PASS 0 "--media cd --fs iso9660: CD drivers only, $(stat -c %s "$WORK/initrd-small.gz") bytes"
    else
        record cd-small-files FAIL 0 "initrd-small.gz: $bad"
    fi
    boot cd-small "$UNTIL_LIVE" -cdrom "$WORK/cd-small.iso" -boot d
    local forbid=("DAEMON-FEATURES: .*https")
    check_absent cd-small "CD-only initramfs: iso9660 image on nbd, overlayfs root, /init without TLS" forbid \
        "${OVERLAY_CHECKS[@]}" "DAEMON-FEATURES: zlib-rs\\."
    boot cd-small-none "cloopbox rescue|Kernel panic" -kernel "$KERNEL" -initrd "$WORK/initrd-small.gz" \
        -append "$APPEND_BASE rootdelay=3"
    check cd-small-none "CD-only initramfs, no medium: the failure names the media it has drivers for" \
        "boot failed: no medium" "the drivers of these boot media only: cd \(mkinitramfs.sh --media cd\)" "cloopbox rescue"
}

# usb: a vfat partition on a USB stick that is plugged in only once init
# is already waiting for it; kernel and initrd come from QEMU.
scenario_usb() {
    prepare_live
    local img=$WORK/usb.img part=$WORK/usb-part.img
    rm -f "$img" "$part"
    truncate -s 80M "$part"
    mkfs.vfat -n KNOPPIXUSB "$part" >/dev/null
    mmd -i "$part" ::/KNOPPIX
    mcopy -i "$part" "$WORK/root-ext4.cloop" ::/KNOPPIX/KNOPPIX
    truncate -s 81M "$img"
    echo 'start=2048, type=c' | sfdisk -q "$img"
    dd if="$part" of="$img" bs=1M seek=1 conv=notrunc status=none
    rm -f "$part"
    KICK_AT="waiting for a medium" KICK_CMD="device_add usb-storage,bus=xhci.0,drive=stick,id=stickdev" \
        boot usb "$UNTIL_LIVE" -kernel "$KERNEL" -initrd "$WORK/initrd.gz" -append "$APPEND_BASE rootdelay=90" \
        -device qemu-xhci,id=xhci -drive if=none,id=stick,format=raw,file="$img"
    check usb "late USB stick (hot-plugged while init waited), vfat partition" \
        "waiting for a medium" "${BLOCK_COW_CHECKS[@]}"
}

# hybrid: the same ISO written to a USB disk and booted from it.
scenario_hybrid() {
    prepare_live
    cp "$WORK/cd-ext4.iso" "$WORK/hybrid.img"
    boot hybrid "$UNTIL_LIVE" -device qemu-xhci,id=xhci \
        -drive if=none,id=stick,format=raw,file="$WORK/hybrid.img" -device usb-storage,bus=xhci.0,drive=stick,bootindex=0
    check hybrid "isohybrid image booted from a USB disk" "${BLOCK_COW_CHECKS[@]}"
}

# multi: KNOPPIX plus KNOPPIX1, stacked with overlayfs (KNOPPIX on top).
scenario_multi() {
    prepare_live
    local extra=$WORK/extra
    rm -rf "$extra" && mkdir -p "$extra/etc"
    echo "from KNOPPIX1" > "$extra/etc/knoppix1"
    echo "hidden by KNOPPIX" > "$extra/etc/issue"
    cloop_of iso9660 "$extra" "$WORK/extra.cloop"
    make_iso "$WORK/multi.iso" "$APPEND_BASE" "$WORK/root-iso.cloop" "$WORK/extra.cloop"
    boot multi "$UNTIL_LIVE" -cdrom "$WORK/multi.iso" -boot d
    # KNOPPIX lies on top of KNOPPIX1: a file in both reads as KNOPPIX's.
    local forbid=("ISSUE: hidden by KNOPPIX")
    check_absent multi "KNOPPIX + KNOPPIX1 stacked, KNOPPIX on top" forbid "${OVERLAY_CHECKS[@]}" \
        "MULTI: from KNOPPIX1" "ISSUE: cloopbox test root" \
        "NBDMOUNT: /dev/nbd[0-9]+ /run/initramfs/images/0 iso9660" \
        "NBDMOUNT: /dev/nbd[0-9]+ /run/initramfs/images/1 iso9660"
}

# no-medium: nothing to boot from: a clear message and the rescue shell.
scenario_no-medium() {
    prepare_live
    boot no-medium "cloopbox rescue|Kernel panic" -kernel "$KERNEL" -initrd "$WORK/initrd.gz" \
        -append "$APPEND_BASE rootdelay=3"
    check no-medium "clear message, then the rescue shell" "boot failed: no medium with KNOPPIX/KNOPPIX" \
        "dropping to the rescue shell" "cloopbox rescue"
}

# corrupt-image: the image's index is damaged: a clear error naming it.
scenario_corrupt-image() {
    prepare_live
    cp "$WORK/root-ext4.cloop" "$WORK/corrupt.cloop"
    printf '\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x00' |
        dd of="$WORK/corrupt.cloop" bs=1 seek=152 conv=notrunc status=none
    make_iso "$WORK/corrupt.iso" "$APPEND_BASE" "$WORK/corrupt.cloop"
    boot corrupt-image "cloopbox rescue|Kernel panic" -cdrom "$WORK/corrupt.iso" -boot d
    # The medium must have been found (the no-medium failure also names
    # KNOPPIX/KNOPPIX), and the failure must be the image's index.
    local forbid=("no medium with")
    check_absent corrupt-image "corrupt index: error names the image and the index, then the rescue shell" forbid \
        "cloopbox: medium: /dev/sr0" "boot failed: .*KNOPPIX/KNOPPIX.*(index|offset)" "cloopbox rescue"
}

# --- scenario: kernel-nbd -------------------------------------------------
# cowdev and cowsync against the kernel's NBD client, outside a live boot
# (guest/kernel-nbd.sh says what it does). The host then merges the
# cowfile it finds on the disk into the image and checks the guest's files.
scenario_kernel-nbd() {
    local dir=$WORK/kernel-nbd root=$WORK/kernel-nbd/root log=$LOGS/kernel-nbd.log
    rm -rf "$dir" && mkdir -p "$root" "$dir/fs"
    # The live initramfs (cloopbox as /init, busybox, modules with their
    # modules.dep) plus the test script, run as rdinit.
    unpack_initramfs "$root"
    for a in $(/bin/busybox --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done
    echo "original text" > "$dir/fs/orig.txt"
    head -c 300000 /dev/urandom > "$dir/fs/random.bin"
    cloop_of ext4 "$dir/fs" "$root/base.cloop"
    install -m 0755 "$GUEST/kernel-nbd.sh" "$root/test-init"
    make_cpio "$root" "$dir/initrd.gz"
    truncate -s 96M "$dir/data.img"
    mkfs.ext4 -q -F -L DATA "$dir/data.img"
    boot kernel-nbd "KNBD: (DONE|FAIL)|Kernel panic" -kernel "$KERNEL" -initrd "$dir/initrd.gz" \
        -append "console=ttyS0 panic=-1 loglevel=6 rdinit=/test-init" \
        -drive if=virtio,format=raw,file="$dir/data.img"
    # On the host: the cowfile the guest left, merged into the image.
    if [ "$INTERACTIVE" != 1 ]; then
        debugfs -R "dump /my.cow $dir/my.cow" "$dir/data.img" 2>/dev/null
        if [ -f "$dir/my.cow" ]; then
            "$CLOOPBOX_BIN" cowlist "$dir/my.cow" | sed 's/^/HOST-COWLIST: /' >> "$log"
            grep -q "state cowfile: *clean" <("$CLOOPBOX_BIN" cowlist "$dir/my.cow") && echo "HOST: cowfile clean" >> "$log"
            "$CLOOPBOX_BIN" extract_compressed_fs -q "$root/base.cloop" "$dir/merged.img"
            "$CLOOPBOX_BIN" cowmerge -y -q "$dir/merged.img" "$dir/my.cow" | sed 's/^/HOST-MERGE: /' >> "$log"
            e2fsck -fn "$dir/merged.img" >/dev/null 2>&1 && echo "HOST: fsck clean" >> "$log"
            echo "HOST: $(files_matching KNBD-SUM: "$log" "$dir/merged.img" orig.txt new.txt big.bin random.bin stop.bin) files match after merge" >> "$log"
        fi
    fi
    check kernel-nbd "cowdev/cowsync on /dev/nbdN: write, sync, list, SIGSTOP, detach, re-attach, host merge" \
        "KNBD: attached /dev/nbd[0-9]+" "KNBD-LIST: /dev/nbd[0-9]+ +/base.cloop +/data/my.cow" \
        "KNBD-STATUS: +copy-on-write file: /data/my.cow" "KNBD: cowsync clean, [1-9][0-9]* blocks in use" \
        "KNBD: I/O continued after SIGSTOP/SIGCONT" "KNBD-REFUSED: cowdev: /dev/nbd[0-9]+ is mounted on /mnt" \
        "KNBD: detach refused while mounted" "KNBD: detached /dev/nbd" "KNBD: readback identical" "KNBD: DONE" \
        "HOST: cowfile clean" "HOST: fsck clean" "HOST: 5 files match after merge"
}

# Further scenarios, one file per area (systemd root, dracut, persistence...).
for f in tests/qemu/*.sh; do
    # mk*.sh are programs the scenarios run (image builders), lib.sh the
    # library sourced above: not scenario files.
    case ${f##*/} in mk* | lib.sh) continue ;; esac
    # shellcheck source=/dev/null
    [ -f "$f" ] && . "$f"
done
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=("${ALL_SCENARIOS[@]}")

for s in "${SCENARIOS[@]}"; do
    declare -F "scenario_$s" >/dev/null || { log "unknown scenario '$s' (have: ${ALL_SCENARIOS[*]})"; exit 2; }
done
build_cloopbox
fetch_kernel
if [ "$JOBS" = 1 ]; then
    for s in "${SCENARIOS[@]}"; do
        log "scenario $s"
        "scenario_$s"
    done
else
    run_parallel "$JOBS" "${SCENARIOS[@]}"
fi

report
