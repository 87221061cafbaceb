# Scenarios for toram, ISO files on a disk, persistence and the media
# check, on the small busybox live root of tests/qemu/lib.sh (prepare_live).
# Sourced by qemu-test.sh.
ALL_SCENARIOS+=(toram iso-in-file iso-in-file-vfat persist persist-overlay media-check request-shape)

# toram: copy to RAM with a media check first, eject, the host removes
# the disc, and the system reads every file; then toram refused on a
# guest with too little RAM.
scenario_toram() {
    prepare_live
    KICK_AT="toram: /dev/sr0 ejected" KICK_CMD="eject -f cd" \
        boot toram "$UNTIL_LIVE" -kernel "$KERNEL" -initrd "$WORK/initrd.gz" \
        -append "$APPEND_BASE toram testcd cloopbox.test=toram" \
        -drive if=ide,index=2,media=cdrom,id=cd,file="$WORK/cd-ext4.iso"
    check toram "media check, copy to RAM, disc ejected and removed, every file read" \
        "media check: 1 image\(s\), [0-9]+ MiB, every block good" \
        "media check: /run/initramfs/live/KNOPPIX/KNOPPIX matches its sha256 in /run/initramfs/live/sha256sum.txt" \
        "toram: [0-9]+ MiB copied in" \
        "toram: /dev/sr0 ejected" "TORAM-FILE: KNOPPIX" "TORAM: no disc in the drive" \
        "TORAM: read all [0-9]+ files without the disc" "ROOTFS: /dev/nbd[0-9]+ ext4" "WRITE: written at boot" \
        "CHECKS-DONE"
    if grep -q "TORAM-MOUNTS: .*/run/initramfs/live" "$LOGS/toram.log"; then
        record toram-medium FAIL - "the medium is still mounted after toram"
    fi
    QEMU_MEM=300 boot toram-refused "$UNTIL_LIVE" -kernel "$KERNEL" -initrd "$WORK/initrd.gz" \
        -append "$APPEND_BASE toram" -drive if=ide,index=2,media=cdrom,id=cd,file="$WORK/cd-ext4.iso"
    check toram-refused "toram refused with 300 MiB of RAM: says how much is needed, boots from the disc" \
        "toram needs [0-9]+ MiB of RAM .* but only [0-9]+ MiB are available: booting from the medium instead" \
        "ROOTFS: /dev/nbd[0-9]+ ext4" "LIVE: ok" "CHECKS-DONE"
}

# request-shape: init passes cloopbox.readahead=, cloopbox.maxrequest= and
# cloopbox.connections= to the root daemon, and the root's NBD device gets
# that read-ahead, request size and number of queues; a cold read of the
# device then comes in requests above the kernel's 128 KiB default.
scenario_request-shape() {
    prepare_live
    boot request-shape "$UNTIL_LIVE" -kernel "$KERNEL" -initrd "$WORK/initrd.gz" \
        -append "$APPEND_BASE cloopbox.readahead=512 cloopbox.maxrequest=512 cloopbox.connections=2 cloopbox.test=request-shape" \
        -cdrom "$WORK/cd-iso.iso"
    check request-shape "cloopbox.readahead/maxrequest/connections reach nbd0's queue; reads above 128 KiB a request" \
        "DAEMON: [0-9]+ @cloopd .*--connections 2 --read-ahead 512 --max-request 512" \
        "REQSHAPE: nbd[0-9]+ read_ahead_kb 512 max_sectors_kb 512 queues 2" \
        "REQSHAPE: more than 128 KiB per request" "${OVERLAY_CHECKS[@]}"
}

# part_disk OUT FSTYPE LABEL SIZE_MB FILE... : a disk image with one
# partition of FSTYPE (ext4, vfat, fat32 = vfat with FAT32, exfat: empty,
# ntfs: files in its top directory) holding the files (each "SRC:DEST").
part_disk() {
    local out=$1 fstype=$2 label=$3 size=$4 part=$WORK/part.$BASHPID spec src dest
    shift 4
    rm -f "$out" "$part"
    truncate -s "${size}M" "$part"
    case $fstype in
        ext4)
            local tree=$WORK/parttree.$BASHPID
            rm -rf "$tree" && mkdir -p "$tree"
            for spec in "$@"; do
                src=${spec%%:*} dest=${spec#*:}
                mkdir -p "$tree/$(dirname "$dest")" && cp "$src" "$tree/$dest"
            done
            mkfs.ext4 -q -F -L "$label" -d "$tree" "$part"
            rm -rf "$tree"
            ;;
        ntfs)
            # (-F on a file: it says "not a block device ... forced anyway".)
            mkntfs -q -F -Q -s 512 -p 2048 -H 255 -S 63 -L "$label" "$part" 2> "$part.err" ||
                { cat "$part.err" >&2; return 1; }
            rm -f "$part.err"
            for spec in "$@"; do
                src=${spec%%:*} dest=${spec#*:}
                # ntfscp makes no directories: files go to the top.
                ntfscp -q "$part" "$src" "/${dest##*/}"
            done
            ;;
        exfat)
            [ $# -eq 0 ] || { echo "part_disk: no host tool copies files into exFAT" >&2; return 1; }
            mkfs.exfat -L "$label" "$part" >/dev/null
            ;;
        vfat | fat32)
            local fat=()
            [ "$fstype" != fat32 ] || fat=(-F 32)
            mkfs.vfat "${fat[@]}" -n "$label" "$part" >/dev/null
            for spec in "$@"; do
                src=${spec%%:*} dest=${spec#*:}
                mmd -i "$part" "::/$(dirname "$dest")" 2>/dev/null || true
                mcopy -i "$part" "$src" "::/$dest"
            done
            ;;
    esac
    truncate -s "$((size + 1))M" "$out"
    echo 'start=2048, type=83' | sfdisk -q "$out"
    dd if="$part" of="$out" bs=1M seek=1 conv=notrunc status=none
    rm -f "$part"
}

# iso-in-file: the live ISO as a file on an ext4 partition, found through
# bootfrom=/dev/vda1/DIR/GLOB and loop-mounted.
scenario_iso-in-file() {
    prepare_live
    part_disk "$WORK/isodisk-ext4.img" ext4 DATA 120 "$WORK/cd-ext4.iso:isos/knoppix-live-9.iso"
    boot iso-in-file "$UNTIL_LIVE" -kernel "$KERNEL" -initrd "$WORK/initrd.gz" \
        -append "$APPEND_BASE bootfrom=/dev/vda1/isos/knoppix-*.iso" \
        -drive if=virtio,format=raw,file="$WORK/isodisk-ext4.img"
    check iso-in-file "bootfrom=/dev/vda1/isos/knoppix-*.iso on ext4, loop-mounted" \
        "/isos/knoppix-\*.iso on /dev/vda1 \(ext4\): attached to /dev/loop[0-9]+" \
        "medium: /dev/loop[0-9]+ \(iso9660" "${BLOCK_COW_CHECKS[@]}"
}

# iso-in-file-vfat: the ISO with the iso9660 image (overlayfs root) on a
# FAT USB stick, found on any device through findiso=.
scenario_iso-in-file-vfat() {
    prepare_live
    part_disk "$WORK/isodisk-vfat.img" vfat STICK 100 "$WORK/cd-iso.iso:boot/KNOPPIX.ISO"
    boot iso-in-file-vfat "$UNTIL_LIVE" -kernel "$KERNEL" -initrd "$WORK/initrd.gz" \
        -append "$APPEND_BASE findiso=/boot/knoppix.iso" -device qemu-xhci,id=xhci \
        -drive if=none,id=stick,format=raw,file="$WORK/isodisk-vfat.img" -device usb-storage,bus=xhci.0,drive=stick
    check iso-in-file-vfat "findiso=/boot/knoppix.iso on a FAT USB stick (any case), overlayfs root" \
        "/boot/knoppix.iso on /dev/sd[a-z]1 \(vfat\): attached to /dev/loop[0-9]+" "${OVERLAY_CHECKS[@]}"
}

# persist_cow_state DISK DIR: copies the cowfile out of the disk's ext4
# partition to DIR/knoppix.cow and prints its state (clean or dirty).
# (tests/qemu/powercut.sh uses it too.)
persist_cow_state() {
    dd if="$1" of="$2/part.img" bs=1M skip=1 status=none
    # After a crash the partition's own journal holds the cowfile's newest
    # extents: replay it on the copy first, as the guest's mount would.
    e2fsck -y -E journal_only "$2/part.img" >/dev/null 2>&1 || true
    rm -f "$2/knoppix.cow"
    debugfs -R "dump /live/knoppix.cow $2/knoppix.cow" "$2/part.img" 2>/dev/null
    "$CLOOPBOX_BIN" cowlist "$2/knoppix.cow" 2>/dev/null | awk '/state cowfile:/ { print $3 }'
}

# persist: a cowfile on an ext4 partition (cow=/dev/vda1:/live/knoppix.cow)
# across boots: a clean shutdown through the exitrd, a crash in the middle
# of synced writes, a repaired (or still clean) cowfile that keeps what was
# synced, and a cowfile of another image refused.
scenario_persist() {
    prepare_live
    local disk=$WORK/persist.img log=$LOGS
    part_disk "$disk" ext4 PERSIST 64
    local args=(-kernel "$KERNEL" -initrd "$WORK/initrd.gz" -cdrom "$WORK/cd-ext4.iso"
        -drive if=virtio,format=raw,file="$disk")
    local append="$APPEND_BASE cow=/dev/vda1:/live/knoppix.cow cloopbox.test=persist"
    boot persist-1 "$SHUTDOWN_UNTIL" "${args[@]}" -append "$append cloopbox.phase=first"
    check persist-1 "first boot: cowfile created on the disk, clean shutdown through the exitrd" \
        "persistence: creating /run/initramfs/persist/live/knoppix.cow" \
        "served on /dev/nbd0 by pid [0-9]+ with the persistent cowfile" "PERSIST-1: written" \
        "cloopbox-shutdown: /dev/nbd0 \(pid [0-9]+\): /dev/nbd0 detached, cowfile flushed" \
        "cloopbox-shutdown: clean shutdown, poweroff, 1 server flushed and detached"
    # Crash: the guest cuts its power in the middle of a cowfile flush
    # (guest/persist.sh says how), so the cowfile is left DIRTY on the
    # disk, and the next boot must repair it and keep every synced write.
    local dir=$WORK/persist-host
    rm -rf "$dir" && mkdir -p "$dir"
    boot persist-2 "PERSIST-2: (power cut|no flush caught)|Kernel panic|boot failed|cloopbox rescue" \
        "${args[@]}" -append "$append cloopbox.phase=crash"
    check persist-2 "crash: boot one's file found, more synced, power cut inside a flush" \
        "persistence: using /run/initramfs/persist/live/knoppix.cow" "PERSIST-2: found boot one" \
        "PERSIST-2: synced" "PERSIST-2: cloopd [0-9]+ stopped inside a flush" "PERSIST-2: power cut"
    local state
    state=$(persist_cow_state "$disk" "$dir")
    echo "HOST: the crash left the cowfile ${state:-unreadable}" >> "$LOGS/persist-2.log"
    check persist-2 "host: the crash left the cowfile dirty" "HOST: the crash left the cowfile dirty"
    boot persist-3 "$SHUTDOWN_UNTIL" "${args[@]}" -append "$append cloopbox.phase=last"
    check persist-3 "after the crash: the cowfile repaired, everything synced before it is there" \
        "persistence: /run/initramfs/persist/live/knoppix.cow was not closed cleanly" \
        "cloopd: /run/initramfs/persist/live/knoppix.cow: was not closed cleanly; repaired" \
        "PERSIST-3: found boot one and boot two" "cloopbox-shutdown: clean shutdown, poweroff, 1 server flushed and detached"
    # The host reads the cowfile the guest left: clean, and merged into
    # the image with a clean fsck and the synced file.
    local hostlog=$LOGS/persist-host.log
    : > "$hostlog"
    persist_cow_state "$disk" "$dir" >/dev/null
    "$CLOOPBOX_BIN" cowlist "$dir/knoppix.cow" 2>&1 | sed 's/^/HOST-COWLIST: /' >> "$hostlog" || true
    "$CLOOPBOX_BIN" extract_compressed_fs -q "$WORK/root-ext4.cloop" "$dir/root.img"
    "$CLOOPBOX_BIN" cowmerge -y -q "$dir/root.img" "$dir/knoppix.cow" >/dev/null 2>&1 &&
        e2fsck -fn "$dir/root.img" >/dev/null 2>&1 && echo "HOST: merged and fsck clean" >> "$hostlog"
    [ "$(debugfs -R "cat /root/persist-2" "$dir/root.img" 2>/dev/null)" = "boot two" ] &&
        echo "HOST: /root/persist-2 in the merged image" >> "$hostlog"
    check persist-host "host: cowfile clean, merge + fsck clean" "HOST-COWLIST: +state cowfile: +clean" \
        "HOST: merged and fsck clean" "HOST: /root/persist-2 in the merged image"
    # Another image with the same persistence path: refused, RAM instead.
    local other=$WORK/other-root
    make_rootfs "$other" && echo "another image" > "$other/etc/issue"
    cloop_of ext4 "$other" "$WORK/other.cloop"
    make_iso "$WORK/other.iso" "$APPEND_BASE" "$WORK/other.cloop"
    boot persist-foreign "$UNTIL_LIVE" -kernel "$KERNEL" -initrd "$WORK/initrd.gz" -cdrom "$WORK/other.iso" \
        -drive if=virtio,format=raw,file="$disk" -append "$APPEND_BASE cow=/dev/vda1:/live/knoppix.cow"
    check persist-foreign "a cowfile of another image is refused with the reason; RAM cowfile instead" \
        "persistence: /run/initramfs/persist/live/knoppix.cow refused: it belongs to a different image" \
        "COWFILE: KNOPPIX.cow" "WRITE: written at boot" "CHECKS-DONE"
}

# persist-overlay: an iso9660 image (overlayfs root) with its upper
# directory on an ext4 partition: written in one boot, found in the next.
scenario_persist-overlay() {
    prepare_live
    local disk=$WORK/persist-overlay.img
    part_disk "$disk" ext4 PERSIST 64
    local args=(-kernel "$KERNEL" -initrd "$WORK/initrd.gz" -cdrom "$WORK/cd-iso.iso"
        -drive if=virtio,format=raw,file="$disk"
        -append "$APPEND_BASE cow=LABEL=PERSIST:/live/overlay cloopbox.test=persist-overlay")
    boot persist-overlay-1 "$SHUTDOWN_UNTIL" "${args[@]}"
    check persist-overlay-1 "overlay upper on a disk found by LABEL=, written, clean shutdown" \
        "persistence: /live/overlay on /dev/vda1" \
        "persistence: overlay upper directory /run/initramfs/persist/live/overlay/upper" "ROOTFS: overlay overlay" \
        "OVERLAY-PERSIST-1: written" "cloopbox-shutdown: clean shutdown, poweroff, 1 server flushed and detached"
    boot persist-overlay-2 "$SHUTDOWN_UNTIL" "${args[@]}"
    check persist-overlay-2 "the next boot finds the file in the upper directory" \
        "OVERLAY-PERSIST-2: found kept in the upper directory" "cloopbox-shutdown: clean shutdown, poweroff, 1 server flushed and detached"
}

# media-check: a data block of the image damaged: testcd names it, and
# the boot stops in the rescue shell instead of mounting a bad root; then
# an intact image whose sha256sum.txt disagrees.
scenario_media-check() {
    prepare_live
    cp "$WORK/root-ext4.cloop" "$WORK/damaged.cloop"
    local len
    len=$(stat -c %s "$WORK/damaged.cloop")
    head -c 256 /dev/urandom | dd of="$WORK/damaged.cloop" bs=1 seek=$((len / 2)) conv=notrunc status=none
    make_iso "$WORK/damaged.iso" "$APPEND_BASE testcd" "$WORK/damaged.cloop"
    boot media-check "cloopbox rescue|Kernel panic|CHECKS-DONE" -cdrom "$WORK/damaged.iso" -boot d
    check media-check "testcd on a damaged image: the bad block named, rescue shell, nothing mounted" \
        "boot failed: media check failed: the medium is damaged" \
        "KNOPPIX/KNOPPIX: block [0-9]+ at offset [0-9]+" "cloopbox rescue"
    WRONG_SUMS=1 make_iso "$WORK/wrongsum.iso" "$APPEND_BASE rd.live.check" "$WORK/root-ext4.cloop"
    boot media-check-sum "cloopbox rescue|Kernel panic|CHECKS-DONE" -cdrom "$WORK/wrongsum.iso" -boot d
    check media-check-sum "rd.live.check: every block good, but the sha256 differs from sha256sum.txt" \
        "every block good" "boot failed: media check failed" \
        "KNOPPIX/KNOPPIX: sha256 is [0-9a-f]{64}, but /run/initramfs/live/sha256sum.txt says [0-9a-f]{64}" \
        "cloopbox rescue"
}
