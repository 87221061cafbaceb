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
#   -i, --interactive   boot the scenarios with the console on this terminal
#                       (the live scenarios then end in a shell in the guest)
# Scenarios live here and in tests/qemu/*.sh. QEMU_MEM sets the guest RAM
# (MiB, default 1024).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
WORK=${WORK:-$ROOT/work/qemu}
LOGS=$WORK/logs
TIMEOUT=${QEMU_TIMEOUT:-300}
mkdir -p "$WORK" "$LOGS"
rm -f "$LOGS/restarts.txt"

log() { printf '[qemu-test] %s\n' "$*" >&2; }

INTERACTIVE=0
SCENARIOS=()
for arg in "$@"; do
    case $arg in
        -i | --interactive) INTERACTIVE=1 ;;
        -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
        *) SCENARIOS+=("$arg") ;;
    esac
done
# Scenarios defined here; tests/qemu/*.sh add more (each appends its names).
ALL_SCENARIOS=(smoke cd cd-iso9660 usb hybrid multi no-medium corrupt-image kernel-nbd)

scripts/setup.sh
for pkg in qemu-system-x86 busybox-static cpio kmod xorriso isolinux syslinux-common mtools dosfstools fdisk e2fsprogs; do
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

# monitor SOCKET COMMAND: one human-monitor command to a running guest.
monitor() {
    python3 - "$1" "$2" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
time.sleep(0.3)
s.recv(65536)
s.sendall((sys.argv[2] + "\n").encode())
time.sleep(0.5)
print(s.recv(65536).decode(errors="replace").strip(), file=sys.stderr)
PY
}

# boot NAME UNTIL [qemu args...]: runs a guest with its serial console in
# $LOGS/NAME.log until a line matches the extended regex UNTIL (then the
# guest is stopped), it powers off, or $TIMEOUT passes. Sets BOOT_SECS to
# the time from QEMU's start to the guest's "ROOT-UP" line (empty if none).
# With KICK_AT (a regex) and KICK_CMD set, sends KICK_CMD to the QEMU
# monitor once KICK_AT appears: hot-plugging a late USB stick, ejecting a CD.
boot() {
    local name=$1 until=$2
    shift 2
    local log=$LOGS/$name.log mon=$WORK/$name.mon
    rm -f "$log" "$mon"
    : > "$log"
    local qemu=(qemu-system-x86_64 -accel tcg -m "${QEMU_MEM:-1024}" -smp 2 -nodefaults -no-reboot "$@")
    if [ "$INTERACTIVE" = 1 ]; then
        "${qemu[@]}" -nographic
        return 0
    fi
    local start kicked deadline pid attempt silent
    # A guest that prints nothing at all for SILENT_LIMIT seconds (every
    # scenario's first line comes within about 20 s) is QEMU's TCG hung
    # before the kernel's first word, seen once in many hundred boots:
    # such a boot is restarted once, and says so.
    for attempt in 1 2; do
        start=$EPOCHREALTIME kicked=0 deadline=$((SECONDS + TIMEOUT)) silent=0
        : > "$log"
        "${qemu[@]}" -display none -serial "file:$log" -monitor "unix:$mon,server,nowait" &
        pid=$!
        BOOT_SECS=""
        while kill -0 "$pid" 2>/dev/null; do
            if [ -z "$BOOT_SECS" ] && grep -q "ROOT-UP" "$log"; then
                BOOT_SECS=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
            fi
            if [ -n "${KICK_AT:-}" ] && [ "$kicked" = 0 ] && grep -qE "$KICK_AT" "$log"; then
                monitor "$mon" "$KICK_CMD" || true
                kicked=1
            fi
            if grep -qE "$until" "$log"; then
                sleep 1
                kill "$pid" 2>/dev/null || true
                break
            fi
            if [ "$attempt" = 1 ] && [ ! -s "$log" ] &&
                [ "$SECONDS" -ge $((deadline - TIMEOUT + ${SILENT_LIMIT:-120})) ]; then
                silent=1
                kill "$pid" 2>/dev/null || true
                break
            fi
            if [ "$SECONDS" -ge "$deadline" ]; then
                echo "qemu-test: TIMEOUT after ${TIMEOUT}s" >> "$log"
                kill "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.3
        done
        wait "$pid" 2>/dev/null || true
        [ "$silent" = 1 ] || break
        log "$name: no console output in ${SILENT_LIMIT:-120} s: QEMU restarted"
        echo "$name: restarted after ${SILENT_LIMIT:-120} s without console output" >> "$LOGS/restarts.txt"
    done
    BOOT_TOTAL=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
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
    boot smoke "SMOKE: extract" -kernel "$KERNEL" -initrd "$dir/initrd.gz" -append "console=ttyS0 panic=-1 quiet"
    local took=$((SECONDS - t0))
    if grep -q "SMOKE: extract OK" "$LOGS/smoke.log" && grep -q "create_compressed_fs" "$LOGS/smoke.log"; then
        record smoke PASS "$took" "static binary ran under kernel $KVER and extracted bit-exact"
    else
        record smoke FAIL "$took" "see $LOGS/smoke.log"
    fi
}

# --- live-boot scenarios --------------------------------------------------
# A small root filesystem (static busybox) whose /sbin/init reports what the
# test checks: how / is mounted, the NBD mounts, the cow tmpfs, the
# root-storage daemons, and that a write sticks. Then it powers off.
GUEST_INIT='#!/bin/sh
PATH=/bin:/sbin
echo "ROOT-UP"
echo "ROOTFS: $(awk '"'"'$2 == "/" { line = $1 " " $3 } END { print line }'"'"' /proc/mounts)"
awk '"'"'$1 ~ /^\/dev\/nbd/ { print "NBDMOUNT: " $1 " " $2 " " $3 }'"'"' /proc/mounts
awk '"'"'$2 == "/run/initramfs/cow" { print "COWMOUNT: " $3 }'"'"' /proc/mounts
for f in /run/initramfs/cow/*; do echo "COWFILE: ${f##*/}"; done
for p in /proc/[0-9]*; do
    c=$(tr "\0" " " < $p/cmdline 2>/dev/null)
    case "$c" in @*) echo "DAEMON: ${p#/proc/} $c"; echo "DAEMON-oom: $(cat $p/oom_score_adj)";
        grep VmLck $p/status | sed "s/^/DAEMON-/";; esac
done
echo "written at boot $(cat /proc/sys/kernel/random/boot_id)" > /root/written && sync && echo "WRITE: $(cat /root/written)"
[ -f /etc/knoppix1 ] && echo "MULTI: $(cat /etc/knoppix1)"
# The control sockets are abstract: they still answer after switch_root.
cowdev -l -v 2>&1 | sed "s/^/CTL: /"
[ -e /mnt-system/KNOPPIX/KNOPPIX ] && echo "MNT-SYSTEM: ok"
[ -e /run/initramfs/live/KNOPPIX/KNOPPIX ] && echo "LIVE: ok"
# Scenario-specific steps: cloopbox.test=NAME runs /tests/NAME.sh here.
for t in $(tr " " "\n" < /proc/cmdline | sed -n "s/^cloopbox.test=//p"); do
    [ -f /tests/$t.sh ] && . /tests/$t.sh
done
echo "CHECKS-DONE"
sync
if grep -q cloopbox.demo=shell /proc/cmdline; then
    echo "This is the live system: / is writable, changes go to the tmpfs under /run/initramfs/cow."
    echo "Type poweroff -f to leave."
    exec setsid -c sh
fi
poweroff -f
'

make_rootfs() { # DIR
    local r=$1
    rm -rf "$r" && mkdir -p "$r"/{bin,sbin,etc,proc,sys,dev,run,tmp,root,mnt-system}
    cp /bin/busybox "$r/bin/busybox"
    for a in $(/bin/busybox --list); do [ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"; done
    cp "$CLOOPBOX_BIN" "$r/bin/cloopbox"
    ln -s cloopbox "$r/bin/cowdev"
    printf '%s' "$GUEST_INIT" > "$r/sbin/init"
    chmod 0755 "$r/sbin/init"
    mkdir -p "$r/tests"
    cp tests/qemu/guest/*.sh "$r/tests/"
    echo "cloopbox test root" > "$r/etc/issue"
}

# cloop_of KIND DIR OUT: DIR as an ext4 or iso9660 filesystem, compressed
# with our create_compressed_fs (64 KiB blocks, as Knoppix does).
cloop_of() {
    local kind=$1 dir=$2 out=$3 fs=$WORK/fs.$$
    case $kind in
        ext4) truncate -s 48M "$fs" && mkfs.ext4 -q -F -L KNOPPIX_FS -d "$dir" "$fs" ;;
        iso9660) xorriso -as mkisofs -quiet -R -V KNOPPIX_FS -o "$fs" "$dir" ;;
    esac
    "$CLOOPBOX_BIN" create_compressed_fs -q -B 65536 "$fs" "$out"
    rm -f "$fs"
}

build_initrd() {
    [ -f "$WORK/initrd.gz" ] && [ "$WORK/initrd.gz" -nt "$CLOOPBOX_BIN" ] && return 0
    initramfs/mkinitramfs.sh -q -b "$CLOOPBOX_BIN" -k "$KVER" -m "$WORK/kernel/pkg" -o "$WORK/initrd.gz"
}

# make_iso OUT APPEND IMAGE...: a bootable (isolinux, isohybrid) CD with
# the images as KNOPPIX/KNOPPIX, KNOPPIX/KNOPPIX1, ...
make_iso() {
    local out=$1 append=$2 t=$WORK/isotree i=0
    shift 2
    rm -rf "$t" && mkdir -p "$t/boot/isolinux" "$t/KNOPPIX"
    cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$t/boot/isolinux/"
    cp "$KERNEL" "$t/boot/isolinux/linux"
    cp "$WORK/initrd.gz" "$t/boot/isolinux/initrd.gz"
    printf 'DEFAULT live\nPROMPT 0\nTIMEOUT 0\nLABEL live\n  KERNEL linux\n  APPEND initrd=initrd.gz %s\n' \
        "$append" > "$t/boot/isolinux/isolinux.cfg"
    for img in "$@"; do
        if [ $i = 0 ]; then cp "$img" "$t/KNOPPIX/KNOPPIX"; else cp "$img" "$t/KNOPPIX/KNOPPIX$i"; fi
        i=$((i + 1))
    done
    # As Debian live ISOs do; the media check (testcd) compares with it.
    # WRONG_SUMS=1 makes the listed sums wrong, for the media-check test.
    (cd "$t" && sha256sum KNOPPIX/* > sha256sum.txt)
    if [ "${WRONG_SUMS:-0}" = 1 ]; then sed -i 's/^./0/; s/^00/11/' "$t/sha256sum.txt"; fi
    xorriso -as mkisofs -quiet -R -J -V KNOPPIX -o "$out" \
        -b boot/isolinux/isolinux.bin -c boot/isolinux/boot.cat -no-emul-boot -boot-load-size 4 \
        -boot-info-table -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin "$t"
}

APPEND_BASE="console=ttyS0 panic=-1 loglevel=4"
[ "$INTERACTIVE" = 1 ] && APPEND_BASE+=" cloopbox.demo=shell"
UNTIL_LIVE="CHECKS-DONE|boot failed|Kernel panic|cloopbox rescue"

# check NAME DETAIL PATTERN...: PASS if every extended regex is in the log.
check() {
    local name=$1 detail=$2 log=$LOGS/$1.log missing=""
    shift 2
    if [ "$INTERACTIVE" = 1 ]; then
        record "$name" "-" "-" "interactive: not checked"
        return 0
    fi
    for pat in "$@"; do grep -qE -- "$pat" "$log" || missing+="'$pat' "; done
    if grep -q "Kernel panic" "$log"; then missing+="(kernel panic) "; fi
    if [ -z "$missing" ]; then
        record "$name" PASS "${BOOT_SECS:-$BOOT_TOTAL}" "$detail"
    else
        record "$name" FAIL "${BOOT_SECS:-$BOOT_TOTAL}" "missing $missing- see $log"
    fi
}

prepare_live() {
    [ -n "${LIVE_READY:-}" ] && return 0
    build_initrd
    make_rootfs "$WORK/rootfs"
    cloop_of ext4 "$WORK/rootfs" "$WORK/root-ext4.cloop"
    cloop_of iso9660 "$WORK/rootfs" "$WORK/root-iso.cloop"
    make_iso "$WORK/cd-ext4.iso" "$APPEND_BASE" "$WORK/root-ext4.cloop"
    LIVE_READY=1
}

BLOCK_COW_CHECKS=("ROOTFS: /dev/nbd[0-9]+ ext4" "COWMOUNT: tmpfs" "COWFILE: KNOPPIX.cow" "DAEMON: [0-9]+ @cloopd"
    "DAEMON-oom: -1000" "DAEMON-VmLck:[[:space:]]+[1-9]" "WRITE: written at boot" "LIVE: ok" "MNT-SYSTEM: ok"
    "CTL: +copy-on-write file: /run/initramfs/cow/KNOPPIX.cow" "CTL: +cowblocks in use: +[1-9]" "CHECKS-DONE")
OVERLAY_CHECKS=("ROOTFS: overlay overlay" "NBDMOUNT: /dev/nbd[0-9]+ /run/initramfs/images/0 iso9660"
    "COWMOUNT: tmpfs" "DAEMON: [0-9]+ @cloopd" "DAEMON-oom: -1000" "DAEMON-VmLck:[[:space:]]+[1-9]" "WRITE: written at boot"
    "CTL: +read-only file: /run/initramfs/live/KNOPPIX/KNOPPIX" "CHECKS-DONE")

# cd: an El Torito ISO on an emulated CD drive; ext4 inside cloop gets
# the block-level cowfile on tmpfs.
scenario_cd() {
    prepare_live
    boot cd "$UNTIL_LIVE" -cdrom "$WORK/cd-ext4.iso" -boot d
    check cd "ISO on CD, ext4 root on nbd with a tmpfs cowfile" "${BLOCK_COW_CHECKS[@]}"
}

# cd-iso9660: the image holds iso9660, as real Knoppix images do: served
# read-only, with overlayfs on top.
scenario_cd-iso9660() {
    prepare_live
    make_iso "$WORK/cd-iso.iso" "$APPEND_BASE" "$WORK/root-iso.cloop"
    boot cd-iso9660 "$UNTIL_LIVE" -cdrom "$WORK/cd-iso.iso" -boot d
    check cd-iso9660 "iso9660 image read-only on nbd, overlayfs root" "${OVERLAY_CHECKS[@]}"
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
    check multi "KNOPPIX + KNOPPIX1 stacked" "${OVERLAY_CHECKS[@]}" "MULTI: from KNOPPIX1" \
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
    check corrupt-image "corrupt index: error names the image, then the rescue shell" \
        "boot failed: .*KNOPPIX/KNOPPIX" "cloopbox rescue"
}

# --- scenario: kernel-nbd -------------------------------------------------
# cowdev and cowsync against the kernel's NBD client, outside a live boot:
# attach a cloop image with a cowfile on a virtio disk, write through ext4,
# cowsync, list, stop and continue the server under I/O, refuse a detach
# while mounted, detach, re-attach and read back. The host then merges the
# cowfile it finds on the disk into the image and checks the guest's files.
KNBD_INIT='#!/bin/sh
PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
fail() { echo "KNBD: FAIL $*"; dmesg | grep -iE "nbd|ext4|block" | tail -20 | sed "s/^/KNBD-DMESG: /"; sync; poweroff -f; }
step() { echo "KNBD: $*"; }
# crc32c first: ext4 looks the algorithm up when it loads.
for m in crc32c_generic crc32c-intel nbd ext4 virtio_pci virtio_blk; do modprobe $m 2>/dev/null; done
for m in nbd ext4 virtio_blk; do [ -d /sys/module/$m ] || fail "module $m not loaded"; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /data /mnt
mount -t ext4 /dev/vda /data || fail "mount the data disk"
dev=$(cowdev -a /base.cloop /data/my.cow auto) || fail "cowdev -a exited $?"
case $dev in /dev/nbd[0-9]*) step "attached $dev" ;; *) fail "cowdev -a printed \"$dev\"" ;; esac
nbd=${dev#/dev/}
mount -t ext4 -o noatime $dev /mnt || fail "mount $dev"
[ "$(cat /mnt/orig.txt)" = "original text" ] || fail "a file of the image reads wrong"
echo "written in the guest" > /mnt/new.txt
echo "changed" >> /mnt/orig.txt
dd if=/dev/urandom of=/mnt/big.bin bs=64k count=32 2>/dev/null || fail "write big.bin"
sync
cowsync || fail "cowsync exited $?"
cowdev -l | sed "s/^/KNBD-LIST: /"
cowdev -l -v $dev > /tmp/status || fail "cowdev -l -v exited $?"
sed "s/^/KNBD-STATUS: /" /tmp/status
cowlist /data/my.cow > /tmp/cowlist || fail "cowlist"
sed "s/^/KNBD-COWLIST: /" /tmp/cowlist
used=$(awk "/cowblocks in use/ { print \$4 }" /tmp/status)
listed=$(awk "/cowblocks in use/ { print \$4 }" /tmp/cowlist)
grep -q "state cowfile: *clean" /tmp/status || fail "status not clean after cowsync"
grep -q "state cowfile: *clean" /tmp/cowlist || fail "cowfile header not clean after cowsync"
[ "$used" = "$listed" ] && [ "$used" -gt 0 ] || fail "after cowsync: $used blocks in use, header says $listed"
step "cowsync clean, $used blocks in use"
pid=$(awk "/pid of thread/ { print \$NF }" /tmp/status)
[ -d /proc/$pid ] || fail "no server process \"$pid\""
# SIGSTOP and SIGCONT (systemd sends both at switch-root) during I/O.
(dd if=/dev/urandom of=/mnt/stop.bin bs=64k count=512 conv=fsync 2>/dev/null; echo $? > /tmp/dd.rc) &
writer=$!
sleep 0.5
kill -0 $writer 2>/dev/null && [ ! -f /tmp/dd.rc ] || fail "the writer finished before SIGSTOP"
kill -STOP $pid
sleep 2
[ "$(cut -d" " -f3 /proc/$pid/stat)" = T ] || fail "server not stopped"
kill -CONT $pid
wait $writer
[ "$(cat /tmp/dd.rc)" = 0 ] || fail "I/O failed across SIGSTOP/SIGCONT"
[ -e /sys/block/$nbd/pid ] || fail "$dev lost its connection"
dmesg | grep -qiE "$nbd: (shutting down|Connection timed out|Dead connection|Receive control failed)" && fail "kernel reset $dev"
step "I/O continued after SIGSTOP/SIGCONT"
sync
(cd /mnt && sha256sum orig.txt new.txt big.bin random.bin stop.bin) > /tmp/sums || fail "read back"
sed "s/^/KNBD-SUM: /" /tmp/sums
if cowdev -d $dev 2> /tmp/refused; then fail "cowdev -d detached a mounted device"; fi
sed "s/^/KNBD-REFUSED: /" /tmp/refused
grep -q "mounted on /mnt" /tmp/refused || fail "refusal does not name the mount"
[ "$(cat /mnt/new.txt)" = "written in the guest" ] || fail "mount broken after the refused detach"
step "detach refused while mounted"
umount /mnt || fail "umount"
cowdev -d $dev || fail "cowdev -d exited $?"
if [ -d /proc/$pid ] && [ "$(cut -d" " -f3 /proc/$pid/stat)" != Z ]; then fail "server $pid still running"; fi
cowdev -l | grep -q "^$dev " && fail "$dev still listed"
[ -e /sys/block/$nbd/pid ] && fail "$dev still connected"
step "detached $dev"
dev2=$(cowdev -a /base.cloop /data/my.cow) || fail "second cowdev -a exited $?"
mount -t ext4 -o ro $dev2 /mnt || fail "mount $dev2"
(cd /mnt && sha256sum orig.txt new.txt big.bin random.bin stop.bin) > /tmp/sums2 || fail "read back after re-attach"
cmp -s /tmp/sums /tmp/sums2 || fail "files differ after re-attach"
step "readback identical on $dev2"
umount /mnt && cowdev -d $dev2 || fail "second detach"
cowlist /data/my.cow | sed "s/^/KNBD-COWLIST2: /"
umount /data || fail "umount the data disk"
step DONE
poweroff -f
'

scenario_kernel-nbd() {
    build_initrd
    local dir=$WORK/kernel-nbd root=$WORK/kernel-nbd/root log=$LOGS/kernel-nbd.log
    rm -rf "$dir" && mkdir -p "$root" "$dir/fs"
    # The live initramfs (cloopbox as /init, busybox, modules with their
    # modules.dep) plus the test script, run as rdinit.
    (cd "$root" && zcat "$WORK/initrd.gz" | cpio -id --quiet)
    for a in $(/bin/busybox --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done
    echo "original text" > "$dir/fs/orig.txt"
    head -c 300000 /dev/urandom > "$dir/fs/random.bin"
    cloop_of ext4 "$dir/fs" "$root/base.cloop"
    printf '%s' "$KNBD_INIT" > "$root/test-init"
    chmod 0755 "$root/test-init"
    make_cpio "$root" "$dir/initrd.gz"
    truncate -s 96M "$dir/data.img"
    mkfs.ext4 -q -F -L DATA "$dir/data.img"
    boot kernel-nbd "KNBD: (DONE|FAIL)|Kernel panic" -kernel "$KERNEL" -initrd "$dir/initrd.gz" \
        -append "console=ttyS0 panic=-1 loglevel=4 rdinit=/test-init" \
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
            local f want got matched=0
            for f in orig.txt new.txt big.bin random.bin stop.bin; do
                want=$(tr -d '\r' < "$log" | awk -v f="$f" '$1 == "KNBD-SUM:" && $3 == f { print $2; exit }')
                debugfs -R "dump /$f $dir/out" "$dir/merged.img" 2>/dev/null
                got=$(sha256sum < "$dir/out" | cut -d' ' -f1)
                [ -n "$want" ] && [ "$want" = "$got" ] && matched=$((matched + 1))
                rm -f "$dir/out"
            done
            echo "HOST: $matched files match after merge" >> "$log"
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
    # mk*.sh are programs the scenarios run (image builders), not scenarios.
    case ${f##*/} in mk*) continue ;; esac
    # shellcheck source=/dev/null
    [ -f "$f" ] && . "$f"
done
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=("${ALL_SCENARIOS[@]}")

CLOOPBOX_BIN=$(scripts/build-static.sh)
fetch_kernel
for s in "${SCENARIOS[@]}"; do
    declare -F "scenario_$s" >/dev/null || { log "unknown scenario '$s' (have: ${ALL_SCENARIOS[*]})"; exit 2; }
    log "scenario $s"
    "scenario_$s"
done

printf '\n%-14s %-4s %7s  %s\n' scenario res time detail
printf '%s\n' "${RESULTS[@]}"
[ -f "$LOGS/restarts.txt" ] && sed 's/^/qemu-test: /' "$LOGS/restarts.txt"
failed=$(printf '%s\n' "${RESULTS[@]}" | grep -c ' FAIL ' || true)
passed=$(printf '%s\n' "${RESULTS[@]}" | grep -c ' PASS ' || true)
echo "qemu-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
