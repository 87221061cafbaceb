# shellcheck shell=bash
# The shell library for QEMU work, sourced by qemu-test.sh, the scenario
# files tests/qemu/*.sh and the boot benchmarks bench/boot*.sh:
#
#   fetch_kernel        Debian's linux-image-amd64, unpacked with dpkg -x
#                       (not installed): KERNEL, KVER, MODDIR
#   build_cloopbox      the static binaries: CLOOPBOX_BIN (full: host-side
#                       tools, guest roots) and CLOOPBOX_BOOT_BIN (the boot
#                       build, no writer: every initramfs we build)
#   build_initrd        our initramfs (initramfs/mkinitramfs.sh): $WORK/initrd.gz
#   make_cpio           a gzip'ed newc archive of a directory
#   mklive              initramfs/mklive.sh, the only ISO and image builder
#   cloop_of, make_iso  images and ISOs through mklive
#   make_rootfs, prepare_live   the busybox live root of the test scenarios
#   debian_tree, debian_ext4_cloop, prepare_debian   the Debian systemd root
#   squashfs_initrd     the "usual live boot" busybox initramfs (benchmarks)
#   bench_setup, bench_binary   what the boot benchmarks share
#   boot                one guest, through tests/qemu/boot.py (the one runner)
#   check, check_absent, record, report   pass conditions and result records
#
# Before sourcing, a script may set WORK (scratch, default work/qemu of the
# tree), LOGS (default $WORK/logs), INTERACTIVE (1: consoles on this tty).
# Every guest script lives in tests/qemu/guest/.

QEMU_LIB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ROOT=${ROOT:-$QEMU_LIB_ROOT}
WORK=${WORK:-$QEMU_LIB_ROOT/work/qemu}
LOGS=${LOGS:-$WORK/logs}
GUEST=$QEMU_LIB_ROOT/tests/qemu/guest
INTERACTIVE=${INTERACTIVE:-0}
# The kernel is shared by the scenarios and the benchmarks.
if [ "${KERNEL_SUITE:-bookworm}" = bookworm ]; then
    KERNEL_DIR=${KERNEL_DIR:-$QEMU_LIB_ROOT/work/qemu/kernel}
else
    KERNEL_DIR=${KERNEL_DIR:-$QEMU_LIB_ROOT/work/qemu/kernel-$KERNEL_SUITE}
fi
MKLIVE=$QEMU_LIB_ROOT/initramfs/mklive.sh
# Scenario names: qemu-test.sh and every scenario file add theirs.
ALL_SCENARIOS=()
RESULTS=()
BOOT_TYPE=()
mkdir -p "$WORK" "$LOGS"

log() { printf '[qemu-test] %s\n' "$*" >&2; }

# --- the Debian kernel, unpacked (not installed) ---------------------------
# KERNEL_SUITE picks it: bookworm (Debian 12, 6.1; the default) or trixie
# (Debian 13, 6.12, modules as .ko.xz under usr/lib/modules, no
# modules.dep in the package). Trixie's comes through a private apt
# configuration whose mirror is the machine's own (debian.sources); the
# machine's apt sources are never touched.
KERNEL_SUITE=${KERNEL_SUITE:-bookworm}
# private_apt SUITE: sets APT_PRIVATE to apt-get options for SUITE alone,
# with its own lists and cache under work/apt-SUITE, updated once.
private_apt() {
    local suite=$1 b=$QEMU_LIB_ROOT/work/apt-$1 mirror
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    mkdir -p "$b"/{lists/partial,cache/archives/partial,parts}
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" "$suite" > "$b/parts/$suite.sources"
    APT_PRIVATE=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$b/parts" -o "Dir::State::Lists=$b/lists"
        -o "Dir::Cache=$b/cache" -o "Dir::Cache::Archives=$b/cache/archives" -o Dir::State::Status=/dev/null)
    [ -f "$b/updated" ] || { apt-get "${APT_PRIVATE[@]}" update -qq && : > "$b/updated"; }
}

fetch_kernel() {
    local kdir=$KERNEL_DIR
    if [ ! -f "$kdir/vmlinuz" ]; then
        local pkg apt=()
        if [ "$KERNEL_SUITE" != bookworm ]; then
            private_apt "$KERNEL_SUITE"
            apt=("${APT_PRIVATE[@]}")
        fi
        pkg=$(apt-cache "${apt[@]}" depends linux-image-amd64 | awk '!done && /Depends: linux-image-[0-9]/ { print $2; done = 1 }')
        [ -n "$pkg" ] || { log "cannot resolve linux-image-amd64 of $KERNEL_SUITE (apt-get update?)"; exit 1; }
        log "fetching $pkg ($KERNEL_SUITE)"
        rm -rf "$kdir" && mkdir -p "$kdir/pkg"
        (cd "$kdir" && apt-get "${apt[@]}" download -qq "$pkg" && dpkg -x ./*.deb pkg)
        # Merged /usr (trixie): the modules are under usr/lib/modules.
        [ -e "$kdir/pkg/lib" ] || ln -s usr/lib "$kdir/pkg/lib"
        cp "$kdir"/pkg/boot/vmlinuz-* "$kdir/vmlinuz"
        basename "$kdir"/pkg/lib/modules/* > "$kdir/version"
        [ -f "$kdir/pkg/lib/modules/$(cat "$kdir/version")/modules.dep" ] ||
            depmod -b "$kdir/pkg" "$(cat "$kdir/version")"
    fi
    KERNEL=$kdir/vmlinuz
    KVER=$(cat "$kdir/version")
    MODDIR=$kdir/pkg/lib/modules/$KVER
}

build_cloopbox() {
    [ -n "${CLOOPBOX_BIN:-}" ] || CLOOPBOX_BIN=$("$QEMU_LIB_ROOT/scripts/build-static.sh")
    [ -n "${CLOOPBOX_BOOT_BIN:-}" ] || CLOOPBOX_BOOT_BIN=$("$QEMU_LIB_ROOT/scripts/build-static.sh" --boot)
}

# make_cpio DIR OUT: a gzip-compressed newc archive of DIR.
make_cpio() {
    (cd "$1" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -9 > "$2"
}

# once NAME CMD...: CMD once per run (QEMU_RUN_ID) for every job of a
# parallel run: under the lock $WORK/.lock-NAME, skipped when its stamp is
# there, so two jobs never build the same files at once, nor twice.
QEMU_RUN_ID=${QEMU_RUN_ID:-$$.$(date +%s)}
export QEMU_RUN_ID
once() {
    local name=$1 stamp=$WORK/.ready-$1.$QEMU_RUN_ID
    shift
    (
        flock 9
        if [ ! -f "$stamp" ]; then
            "$@"
            : > "$stamp"
        fi
    ) 9> "$WORK/.lock-$name"
}

build_initrd() {
    # Under the lock: a parallel job finds it either absent or complete.
    (
        flock 9
        [ -f "$WORK/initrd.gz" ] && [ "$WORK/initrd.gz" -nt "$CLOOPBOX_BOOT_BIN" ] &&
            [ "$WORK/initrd.gz" -nt "$QEMU_LIB_ROOT/initramfs/mkinitramfs.sh" ] && exit 0
        "$QEMU_LIB_ROOT/initramfs/mkinitramfs.sh" -q -b "$CLOOPBOX_BOOT_BIN" -k "$KVER" -m "$KERNEL_DIR/pkg" \
            -o "$WORK/initrd.gz"
    ) 9> "$WORK/.lock-initrd"
}

# unpack_initramfs DIR: the files of our live initramfs in DIR, for guests
# that run their own script as rdinit on top of it. Built with -z none
# (one plain archive, which cpio unpacks whole): its modules stay as the
# kernel ships them, and the guest's modprobe is ours (busybox's cannot
# read every compressed form). With Debian's whole busybox-static instead
# of the rescue shell's 75 applets: the test scripts use more (sleep 0.5,
# for one), and link every applet /bin/busybox has.
unpack_initramfs() {
    build_cloopbox
    "$QEMU_LIB_ROOT/initramfs/mkinitramfs.sh" -q -z none -b "$CLOOPBOX_BOOT_BIN" -k "$KVER" -m "$KERNEL_DIR/pkg" \
        -s /bin/busybox -o "$1.cpio"
    # Through a file, not a pipe: cpio stops reading at its trailer.
    (cd "$1" && cpio -id --quiet < "$1.cpio")
    rm -f "$1.cpio"
}

# mklive ARGS...: initramfs/mklive.sh with our binary and kernel, quiet.
mklive() {
    "$MKLIVE" -q --binary "$CLOOPBOX_BIN" --boot-binary "$CLOOPBOX_BOOT_BIN" --kernel "$KERNEL" --modules "$KERNEL_DIR/pkg" --kver "$KVER" "$@"
}

# cloop_of KIND DIR OUT [MKLIVE ARGS...]: DIR as an ext4 (48 MiB unless
# --fs-size) or iso9660 filesystem, compressed with our
# create_compressed_fs (64 KiB blocks, as Knoppix does).
cloop_of() {
    local kind=$1 dir=$2 out=$3 size=()
    shift 3
    [ "$kind" != ext4 ] || size=(--fs-size 48)
    mklive --image-only --root "$dir" --fs "$kind" "${size[@]}" "$@" -o "$out"
}

# files_matching MARKER LOG IMAGE FILE...: how many FILEs of the ext4
# IMAGE have the sha256 that the guest logged for them as "MARKER SUM FILE"
# (the first such line of LOG).
files_matching() {
    local marker=$1 log=$2 img=$3 f want got matched=0
    shift 3
    for f in "$@"; do
        want=$(tr -d '\r' < "$log" | awk -v m="$marker" -v f="$f" '!done && $1 == m && $3 == f { print $2; done = 1 }')
        got=$(debugfs -R "cat /$f" "$img" 2> /dev/null | sha256sum | cut -d' ' -f1)
        [ -n "$want" ] && [ "$want" = "$got" ] && matched=$((matched + 1))
    done
    echo "$matched"
}

# make_iso OUT APPEND IMAGE...: the hybrid BIOS/UEFI ISO of mklive.sh with
# our initramfs and the images as KNOPPIX/KNOPPIX, KNOPPIX1, ... MKLIVE_ARGS
# (an array) adds options. WRONG_SUMS=1 makes sha256sum.txt list wrong
# sums, for the media-check test.
make_iso() {
    local out=$1 append=$2 img args=()
    shift 2
    for img in "$@"; do args+=(--image "$img"); done
    if [ "${WRONG_SUMS:-0}" = 1 ]; then
        local add=$WORK/wrongsums.$BASHPID
        rm -rf "$add" && mkdir -p "$add"
        (
            cd "$add" && n=0
            for img in "$@"; do
                if [ $n = 0 ]; then name=KNOPPIX; else name=KNOPPIX$n; fi
                # The first hex digit changed, whatever it was: 0 -> 1, else -> 0.
                printf '%s  KNOPPIX/%s\n' "$(sha256sum < "$img" | cut -d' ' -f1 | sed 's/^0/x/; s/^[1-9a-f]/0/; s/^x/1/')" "$name"
                n=$((n + 1))
            done > sha256sum.txt
        )
        args+=(--add "$add")
    fi
    mklive --initrd "${MKLIVE_INITRD:-$WORK/initrd.gz}" --append "$append" "${args[@]}" \
        ${MKLIVE_ARGS[@]+"${MKLIVE_ARGS[@]}"} -o "$out"
    [ "${WRONG_SUMS:-0}" != 1 ] || rm -rf "$WORK/wrongsums.$BASHPID"
}

# --- the busybox live root of the test scenarios ---------------------------
# Its /sbin/init (guest/init.sh) reports what the checks look for: how / is
# mounted, the NBD mounts, the cow tmpfs, the root-storage daemons, that a
# write sticks; cloopbox.test=NAME runs /tests/NAME.sh; then it powers off.
make_rootfs() { # DIR
    local r=$1
    rm -rf "$r" && mkdir -p "$r"/{bin,sbin,etc,proc,sys,dev,run,tmp,root,mnt-system}
    cp /bin/busybox "$r/bin/busybox"
    for a in $(/bin/busybox --list); do [ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"; done
    cp "$CLOOPBOX_BIN" "$r/bin/cloopbox"
    ln -s cloopbox "$r/bin/cowdev"
    install -m 0755 "$GUEST/init.sh" "$r/sbin/init"
    mkdir -p "$r/tests" "$r/lib/modules"
    cp "$GUEST"/*.sh "$r/tests/"
    # The root has no module tree; the UEFI checks (guest/efi.sh) need
    # efivarfs, a signed module of the kernel package.
    # (6.12 ships it as .ko.xz: unpacked, busybox insmod loads it; the
    # signature is inside the module, so it stays valid.)
    if [ -f "$MODDIR/kernel/fs/efivarfs/efivarfs.ko" ]; then
        cp "$MODDIR/kernel/fs/efivarfs/efivarfs.ko" "$r/lib/modules/"
    else
        xz -dc "$MODDIR/kernel/fs/efivarfs/efivarfs.ko.xz" > "$r/lib/modules/efivarfs.ko"
    fi
    echo "cloopbox test root" > "$r/etc/issue"
}

# A guest that prints nothing at all is one QEMU never started: boot.py
# restarts only that. Every boot prints within seconds: ISO boots through
# the boot loader's serial console, -kernel boots with this command line
# through our /init's first line (before any attach), the -kernel
# scenarios with their own init (smoke, kernel-nbd) through the kernel's
# banner at loglevel=6.
# no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer
# check can miss its ticks and panic ("IO-APIC + timer doesn't work") before
# anything of ours runs; seen on pc and q35 alike, so every guest skips it.
APPEND_BASE="console=ttyS0 panic=-1 loglevel=4 no_timer_check"
[ "$INTERACTIVE" = 1 ] && APPEND_BASE+=" cloopbox.demo=shell"
UNTIL_LIVE="CHECKS-DONE|boot failed|Kernel panic|cloopbox rescue"
SHUTDOWN_UNTIL="cloopbox-shutdown: (clean|unclean) shutdown|Kernel panic|boot failed|cloopbox rescue|EXITRD: pivot_root failed"
# The root daemon decodes ahead by default (cloopbox.prefetch=, 8 blocks).
BLOCK_COW_CHECKS=("ROOTFS: /dev/nbd[0-9]+ ext4" "COWMOUNT: tmpfs" "COWFILE: KNOPPIX.cow" "DAEMON: [0-9]+ @cloopd .*--prefetch 8( |$)"
    "DAEMON-oom: -1000" "DAEMON-VmLck:[[:space:]]+[1-9]" "WRITE: written at boot" "LIVE: ok" "MNT-SYSTEM: ok"
    "CTL: +copy-on-write file: /run/initramfs/cow/KNOPPIX.cow" "CTL: +cowblocks in use: +[1-9]" "CHECKS-DONE")
OVERLAY_CHECKS=("ROOTFS: overlay overlay" "NBDMOUNT: /dev/nbd[0-9]+ /run/initramfs/images/0 iso9660"
    "COWMOUNT: tmpfs" "DAEMON: [0-9]+ @cloopd .*--prefetch 8( |$)" "DAEMON-oom: -1000" "DAEMON-VmLck:[[:space:]]+[1-9]" "WRITE: written at boot"
    "CTL: +read-only file: /run/initramfs/live/KNOPPIX/KNOPPIX" "CHECKS-DONE")

# prepare_live: the busybox root as ext4 and iso9660 in cloop, and the CDs
# with each (cd-ext4.iso, cd-iso.iso), once per run.
# (once: the parallel jobs of qemu-test.sh share them.)
prepare_live() {
    [ -n "${LIVE_READY:-}" ] && return 0
    build_initrd
    once live prepare_live_build
    LIVE_READY=1
}
prepare_live_build() {
    make_rootfs "$WORK/rootfs"
    cloop_of ext4 "$WORK/rootfs" "$WORK/root-ext4.cloop"
    cloop_of iso9660 "$WORK/rootfs" "$WORK/root-iso.cloop"
    make_iso "$WORK/cd-ext4.iso" "$APPEND_BASE" "$WORK/root-ext4.cloop"
    make_iso "$WORK/cd-iso.iso" "$APPEND_BASE" "$WORK/root-iso.cloop"
}

# --- the Debian systemd root -----------------------------------------------
# The root comes from tests/qemu/mkdebian.sh as a tarball, DEBIAN_TAR
# (default work/qemu/debian-root.tar; set it to share one across trees).
# DEBIAN_SUITE: the Debian release of that root (bookworm, or trixie for
# the Debian 13 scenarios); tests/qemu/mkdebian.sh builds each tarball once.
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
if [ "$DEBIAN_SUITE" = bookworm ]; then
    DEBIAN_TAR=${DEBIAN_TAR:-$QEMU_LIB_ROOT/work/qemu/debian-root.tar}
else
    DEBIAN_TAR=${DEBIAN_TAR:-$QEMU_LIB_ROOT/work/qemu/debian-$DEBIAN_SUITE-root.tar}
fi

# debian_tree DIR: the Debian root from DEBIAN_TAR, unpacked into DIR, with
# the test pieces: the check (guest/debian-check.sh, started by
# cloopbox-test.service through systemd-run once multi-user is reached),
# cowdev (our binary, staged by init as /run/initramfs/shutdown), and no
# getty on the serial port (agetty's vhangup would cut the check off its
# tty).
debian_tree() {
    local t=$1
    rm -rf "$t" && mkdir -p "$t"
    tar --numeric-owner -xf "$DEBIAN_TAR" -C "$t"
    install -D -m 0755 "$GUEST/debian-check.sh" "$t/usr/local/sbin/cloopbox-check"
    ln -s /run/initramfs/shutdown "$t/usr/local/sbin/cowdev"
    cat > "$t/etc/systemd/system/cloopbox-test.service" <<'UNIT'
[Unit]
Description=cloopbox test: start the checks outside the boot transaction

[Service]
Type=oneshot
ExecStart=/usr/bin/systemd-run --no-block --unit=cloopbox-check --description="cloopbox checks" /usr/local/sbin/cloopbox-check

[Install]
WantedBy=multi-user.target
UNIT
    mkdir -p "$t/etc/systemd/system/multi-user.target.wants"
    ln -s ../cloopbox-test.service "$t/etc/systemd/system/multi-user.target.wants/cloopbox-test.service"
    ln -s /dev/null "$t/etc/systemd/system/serial-getty@ttyS0.service"
}

# debian_ext4_cloop TREE OUT: TREE as ext4 (4 KiB blocks, a quarter plus
# 256 MiB free for the writes of the checks: mklive's default), compressed
# with 64 KiB blocks. Inode tables and journal are written by mkfs, so the
# guest's ext4lazyinit has nothing to do.
debian_ext4_cloop() {
    mklive --image-only --root "$1" --fs ext4 -o "$2"
}

# prepare_debian: the tarball (built once), the tree, the image and the
# ISO, for the systemd scenarios:
#   DEBIAN_TREE    the unpacked root with the test pieces (debian_tree)
#   DEBIAN_CLOOP   that tree as ext4 in cloop (64 KiB blocks)
#   DEBIAN_ISO     a bootable CD with our initramfs and DEBIAN_CLOOP
#   DEBIAN_APPEND  its kernel command line
# The image is rebuilt only when the tarball, the check or this file changed.
prepare_debian() {
    [ -n "${DEBIAN_READY:-}" ] && return 0
    build_initrd
    local dir=$WORK/debian
    [ "$DEBIAN_SUITE" = bookworm ] || dir=$WORK/debian-$DEBIAN_SUITE
    mkdir -p "$dir"
    DEBIAN_TREE=$dir/tree
    DEBIAN_CLOOP=$dir/root-ext4.cloop
    DEBIAN_ISO=$dir/debian.iso
    # systemd logs to the console, so its kills (or their absence) and the
    # shutdown sequence are in the serial log.
    DEBIAN_APPEND="$APPEND_BASE systemd.log_target=console"
    once "debian-$DEBIAN_SUITE" prepare_debian_build "$dir"
    DEBIAN_READY=1
}
prepare_debian_build() { # DIR
    local dir=$1 key
    MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || echo http://deb.debian.org/debian) \
        SUITE=$DEBIAN_SUITE "$QEMU_LIB_ROOT/tests/qemu/mkdebian.sh" "$DEBIAN_TAR"
    key="$(stat -c '%s %Y' "$DEBIAN_TAR") $(cat "$QEMU_LIB_ROOT/tests/qemu/lib.sh" "$GUEST/debian-check.sh" | sha256sum | cut -c1-16)"
    if [ ! -f "$DEBIAN_CLOOP" ] || [ "$(cat "$dir/key" 2>/dev/null)" != "$key" ]; then
        log "debian: unpacking $DEBIAN_TAR and compressing the root"
        debian_tree "$DEBIAN_TREE"
        debian_ext4_cloop "$DEBIAN_TREE" "$DEBIAN_CLOOP"
        echo "$key" > "$dir/key"
    fi
    make_iso "$DEBIAN_ISO" "$DEBIAN_APPEND" "$DEBIAN_CLOOP"
}

# squashfs_initrd OUT [FSTYPE]: the usual live boot of the benchmarks'
# contender, a busybox initramfs (guest/squashfs-init.sh) with the modules
# it insmods (from the same kernel, in dependency order) that loop-mounts a
# squashfs (or FSTYPE: erofs) from the CD with overlayfs on top.
squashfs_initrd() {
    local out=$1 fstype=${2:-squashfs} dir=$WORK/squashfs-initrd scratch=$WORK/modscratch mods m
    rm -rf "$scratch" && mkdir -p "$scratch/lib/modules/$KVER"
    ln -s "$MODDIR/kernel" "$scratch/lib/modules/$KVER/kernel"
    cp "$MODDIR"/modules.builtin* "$MODDIR/modules.order" "$scratch/lib/modules/$KVER/"
    depmod -b "$scratch" "$KVER"
    # Built-in modules print nothing.
    mapfile -t mods < <(modprobe -d "$scratch" -S "$KVER" --show-depends -a ata_piix sr_mod isofs loop "$fstype" overlay |
        awk '$1 == "insmod" && !seen[$2]++ { print $2 }')
    rm -rf "$dir" && mkdir -p "$dir"/{bin,dev,proc,sys,run,newroot,lib/modules}
    cp /bin/busybox "$dir/bin/busybox"
    for a in sh mount umount insmod losetup mkdir switch_root sleep cat cut echo; do ln -s busybox "$dir/bin/$a"; done
    for m in "${mods[@]}"; do
        cp "$m" "$dir/lib/modules/"
        basename "$m" >> "$dir/lib/modules/load"
    done
    install -m 0755 "$GUEST/squashfs-init.sh" "$dir/init"
    echo "$fstype" > "$dir/fstype"
    find "$dir" -exec touch -h -d @0 {} +
    (cd "$dir" && find . -mindepth 1 -printf '%P\0' | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --reproducible) |
        gzip -9 -n > "$out"
    SQUASHFS_MODULES=$(for m in "${mods[@]}"; do basename "$m" .ko; done | tr '\n' ' ' | sed 's/ $//')
    rm -rf "$dir" "$scratch"
}

# --- the boot benchmarks ------------------------------------------------------
# bench_setup NAME: the tools the boot benchmarks need, a static busybox
# (BUSYBOX), the kernel; then into $WORK. NAME prefixes the errors.
bench_setup() {
    local name=$1 need
    for need in qemu-system-x86_64:qemu-system-x86 xorriso:xorriso mksquashfs:squashfs-tools mkfs.ext4:e2fsprogs \
        cpio:cpio depmod:kmod python3:python3; do
        command -v "${need%%:*}" > /dev/null ||
            { echo "$name: missing ${need%%:*} (apt-get install ${need#*:})" >&2; exit 1; }
    done
    BUSYBOX=/bin/busybox
    if [ ! -x $BUSYBOX ] || readelf -lW $BUSYBOX | grep INTERP >/dev/null; then
        echo "$name: $BUSYBOX must be static (apt-get install busybox-static)" >&2
        exit 1
    fi
    fetch_kernel
    mkdir -p "$WORK/logs"
    cd "$WORK" || exit 1
}

# bench_binary: CLOOPBOX (the benchmark's setting, or scripts/build-static.sh)
# as CLOOPBOX_BIN, and CLOOPBOX_BOOT (its setting, else CLOOPBOX when that
# was set, else scripts/build-static.sh --boot) as CLOOPBOX_BOOT_BIN, the
# binary of our initramfs; BINARY says which, for the report.
bench_binary() {
    if [ -n "${CLOOPBOX:-}" ]; then
        BINARY="$CLOOPBOX"
        CLOOPBOX_BOOT=${CLOOPBOX_BOOT:-$CLOOPBOX}
    else
        CLOOPBOX=$("$QEMU_LIB_ROOT/scripts/build-static.sh")
        BINARY="scripts/build-static.sh at $(git -C "$QEMU_LIB_ROOT" describe --always --dirty)"
    fi
    if [ -z "${CLOOPBOX_BOOT:-}" ]; then
        CLOOPBOX_BOOT=$("$QEMU_LIB_ROOT/scripts/build-static.sh" --boot)
        BINARY="$BINARY (initramfs: its boot build, --boot)"
    fi
    CLOOPBOX_BIN=$CLOOPBOX
    CLOOPBOX_BOOT_BIN=$CLOOPBOX_BOOT
}

# small_initrd OUT FS: the initramfs a builder of a CD-only live system
# ships (initramfs/mkinitramfs.sh --media cd --fs FS, without -N): the
# drivers of CD drives only, and CLOOPBOX_BOOT_OFFLINE (default:
# scripts/build-static.sh --boot-offline, the boot build without https://,
# which such a medium cannot use). The benchmarks' "-small" contenders.
small_initrd() {
    [ -n "${CLOOPBOX_BOOT_OFFLINE:-}" ] ||
        CLOOPBOX_BOOT_OFFLINE=$("$QEMU_LIB_ROOT/scripts/build-static.sh" --boot-offline)
    "$QEMU_LIB_ROOT/initramfs/mkinitramfs.sh" -q -b "$CLOOPBOX_BOOT_OFFLINE" -k "$KVER" -m "$KERNEL_DIR/pkg" \
        --media cd --fs "$2" -o "$1"
}

# --- boot ----------------------------------------------------------------
# boot NAME UNTIL [qemu args...]: runs a guest (QEMU -accel tcg, QEMU_MEM
# MiB, QEMU_SMP CPUs, default 1024 and 2) with its serial console in
# $LOGS/NAME.log (and each line's host time in NAME.log.times) until a line
# matches the extended regex UNTIL (then the guest is stopped), it powers
# off, or TIMEOUT seconds pass. Sets BOOT_SECS to the time from QEMU's start
# to the guest's first line that matches BOOT_MARK (default ROOT-UP; empty if
# none), BOOT_TOTAL, BOOT_CPU
# (QEMU's CPU seconds by ROOT-UP), BOOT_LOAD (load average at the start)
# and BOOT_END (until, exit or timeout). With KICK_AT (a regex) and KICK_CMD
# set, sends KICK_CMD to the QEMU monitor once KICK_AT appears: hot-plugging
# a late USB stick, ejecting a CD. BOOT_TYPE (an array of REGEX TEXT
# pairs, set by the caller) types TEXT on the serial console once REGEX
# appears, pair after pair (boot.py --type-at/--type).
boot() {
    local name=$1 until=$2
    shift 2
    local qemu=(qemu-system-x86_64 -accel tcg -m "${QEMU_MEM:-1024}" -smp "${QEMU_SMP:-2}" -nodefaults -no-reboot "$@")
    BOOT_SECS="" BOOT_TOTAL="" BOOT_CPU="" BOOT_LOAD="" BOOT_END=""
    if [ "$INTERACTIVE" = 1 ]; then
        "${qemu[@]}" -nographic
        return 0
    fi
    local kick=()
    [ -z "${KICK_AT:-}" ] || kick=(--kick-at "$KICK_AT" --kick-cmd "$KICK_CMD")
    local i
    for ((i = 0; i + 1 < ${#BOOT_TYPE[@]}; i += 2)); do
        kick+=(--type-at "${BOOT_TYPE[i]}" --type "${BOOT_TYPE[i + 1]}")
    done
    local out
    out=$(python3 "$QEMU_LIB_ROOT/tests/qemu/boot.py" --log "$LOGS/$name.log" --until "$until" \
        --timeout "${TIMEOUT:-300}" --mark "${BOOT_MARK:-ROOT-UP}" --monitor "$WORK/$name.mon" --silent-limit "${SILENT_LIMIT:-120}" \
        --restarts "$LOGS/restarts.txt" "${kick[@]}" -- "${qemu[@]}")
    read -r BOOT_SECS BOOT_TOTAL BOOT_CPU BOOT_LOAD BOOT_END <<< "$out"
    [ "$BOOT_SECS" != - ] || BOOT_SECS=""
    [ "$BOOT_CPU" != - ] || BOOT_CPU=""
}

# --- results -------------------------------------------------------------
# KERNEL_TAG: appended to every result's name in runs under another kernel
# (qemu-test.sh sets it for KERNEL_SUITE=trixie), so the two runs' lines
# stay apart in the summary.
record() { # NAME STATUS SECONDS DETAIL
    RESULTS+=("$(printf '%-14s %-4s %6ss  %s' "$1${KERNEL_TAG:-}" "$2" "$3" "$4")")
}

# check NAME DETAIL PATTERN...: PASS if every extended regex is in the log.
check() {
    local name=$1 detail=$2 log=$LOGS/$1.log missing="" pat
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

# check_absent NAME DETAIL ABSENT-ARRAY PATTERN...: check, but FAIL first
# if any regex of the array named ABSENT-ARRAY is in the log.
check_absent() {
    local name=$1 detail=$2 log=$LOGS/$1.log found="" pat
    local -n absent=$3
    shift 3
    if [ "$INTERACTIVE" != 1 ]; then
        for pat in "${absent[@]}"; do grep -qE -- "$pat" "$log" && found+="'$pat' "; done
    fi
    if [ -n "$found" ]; then
        record "$name" FAIL "${BOOT_SECS:-$BOOT_TOTAL}" "found $found- see $log"
        return 0
    fi
    check "$name" "$detail" "$@"
}

# run_parallel N SCENARIO...: the scenarios, N at a time, each in its own
# subshell (output in $LOGS/NAME.run, results in $LOGS/NAME.results);
# their results are then recorded in the order given. What jobs share is
# built once: the initramfs here, the prepare_* artifacts through once.
run_parallel() {
    local jobs=$1 s pid rc running=0 t0=$SECONDS
    shift
    local -A name_of start_of
    build_initrd
    for s in "$@"; do
        rm -f "$LOGS/$s.results" "$LOGS/$s.rc"
        while [ "$running" -ge "$jobs" ]; do run_parallel_reap; done
        log "scenario $s: started (output in $LOGS/$s.run)"
        (
            RESULTS=()
            trap 'echo $? > "$LOGS/$s.rc"; printf "%s\n" ${RESULTS[@]+"${RESULTS[@]}"} > "$LOGS/$s.results"' EXIT
            "scenario_$s"
        ) > "$LOGS/$s.run" 2>&1 &
        name_of[$!]=$s start_of[$!]=$SECONDS
        running=$((running + 1))
    done
    while [ "$running" -gt 0 ]; do run_parallel_reap; done
    for s in "$@"; do
        [ ! -s "$LOGS/$s.results" ] || mapfile -t -O "${#RESULTS[@]}" RESULTS < "$LOGS/$s.results"
        rc=$(cat "$LOGS/$s.rc" 2>/dev/null || echo "?")
        if [ ! -s "$LOGS/$s.results" ] || [ "$rc" != 0 ]; then
            record "$s" FAIL - "job ended with status $rc - see $LOGS/$s.run"
        fi
    done
    log "$# scenarios, $jobs at a time: $((SECONDS - t0))s"
}
# run_parallel_reap: waits for one job of run_parallel (its locals).
run_parallel_reap() {
    pid=""
    wait -n -p pid || true
    [ -n "$pid" ] || { running=0; return 0; }
    log "scenario ${name_of[$pid]}: done in $((SECONDS - ${start_of[$pid]}))s"
    running=$((running - 1))
}

# report: the summary table; non-zero if a scenario failed.
report() {
    local failed passed
    printf '\n%-14s %-4s %7s  %s\n' scenario res time detail
    printf '%s\n' "${RESULTS[@]}"
    [ -f "$LOGS/restarts.txt" ] && sed 's/^/qemu-test: /' "$LOGS/restarts.txt"
    failed=$(printf '%s\n' "${RESULTS[@]}" | grep -c ' FAIL ' || true)
    passed=$(printf '%s\n' "${RESULTS[@]}" | grep -c ' PASS ' || true)
    echo "qemu-test: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
