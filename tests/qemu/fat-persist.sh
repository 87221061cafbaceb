# shellcheck shell=bash
# Persistence where users keep it (issue 14): the block cowfile
# (cow=LABEL=...:/live/knoppix.cow) on a USB stick formatted FAT32 or
# exFAT, across three boots (guest/fat-persist.sh says what each does):
#
#   1. created, files written, the zeroing fallback proved (FAT and exFAT
#      cannot punch holes: a trimmed file's units are overwritten with
#      zeros, cloopd says so on the console and counts them, the file's
#      marker is gone from the cowfile),
#      on FAT32 a cowfile for a 4 GiB image refused naming the limit;
#      clean shutdown through the exitrd;
#   2. boot one's files read back, more written and synced, then a power
#      cut (sysrq reset) with synced writes still coming and a file never
#      synced: the cowfile is left DIRTY;
#   3. the cowfile repaired, every file synced before the cut read back
#      byte-for-byte (sha256 against what boots 1 and 2 wrote), clean
#      shutdown. On FAT32 the host then copies the cowfile off the stick:
#      clean, merged into the image with a clean fsck and the files in it.
ALL_SCENARIOS+=(persist-fat32 persist-exfat)

# fatp_sums LOG... : "NAME SHA" of every FATP-SUM line in the logs.
fatp_sums() {
    tr -d '\r' < <(cat "$@") | awk '$1 == "FATP-SUM:" && NF == 3 { print $2, $3 }' | sort -u
}

# fat_persist NAME FSTYPE LABEL: the three boots and their checks.
fat_persist() {
    local name=$1 fstype=$2 label=$3
    prepare_live
    local disk=$WORK/$name.img dir=$WORK/$name-host
    rm -rf "$dir" && mkdir -p "$dir"
    part_disk "$disk" "$fstype" "$label" 300
    local args=(-kernel "$KERNEL" -initrd "$WORK/initrd.gz" -cdrom "$WORK/cd-ext4.iso" -device qemu-xhci,id=xhci
        -drive if=none,id=stick,format=raw,file="$disk" -device usb-storage,bus=xhci.0,drive=stick)
    local append="$APPEND_BASE cow=LABEL=$label:/live/knoppix.cow cloopbox.test=fat-persist"
    local mounted=vfat
    [ "$fstype" = exfat ] && mounted=exfat
    local big=()
    [ "$fstype" = fat32 ] && big=("FATP-BIG-RC: [1-9]"
        "FATP-BIG: .*/run/initramfs/persist/big.cow: cannot hold this image's changes: .*FAT \(vfat\), whose files end at 4294967295 bytes \(4 GiB - 1\)"
        "FATP-BIG: no cowfile left behind")
    boot "$name-1" "$SHUTDOWN_UNTIL" "${args[@]}" -append "$append cloopbox.phase=first"
    check "$name-1" "first boot: cowfile created on $fstype by label, zeroing fallback ran, clean shutdown" \
        "persistence: creating /run/initramfs/persist/live/knoppix.cow" "FATP: cowfile filesystem $mounted" \
        "served on /dev/nbd0 by pid [0-9]+ with the persistent cowfile" "FATP-SUM: fatp-1.bin [0-9a-f]{64}" \
        "FATP-ZERO: marker in the cowfile" "FATP-TRIM: /: [1-9][0-9]* .*trimmed" \
        "FATP-ZERO: marker gone from the cowfile after fstrim" "FATP-ZERO-CTL: +zeroed \(no holes\): +[1-9]" \
        "cloopd: cowfile /run/initramfs/persist/live/knoppix.cow: its filesystem cannot punch holes" "${big[@]}" \
        "cloopbox-shutdown: clean shutdown, poweroff, 1 server flushed and detached"
    boot "$name-2" "FATP-2: power cut|Kernel panic|boot failed|cloopbox rescue|CHECKS-DONE" \
        "${args[@]}" -append "$append cloopbox.phase=crash"
    check "$name-2" "second boot: boot one's files read, more synced, power cut with the cowfile DIRTY" \
        "persistence: using /run/initramfs/persist/live/knoppix.cow" "FATP-2: found boot one" \
        "FATP-SUM: fatp-2.bin [0-9a-f]{64}" "FATP-2: cowfile header DIRTY" "FATP-2: power cut"
    boot "$name-3" "$SHUTDOWN_UNTIL" "${args[@]}" -append "$append cloopbox.phase=last"
    # Every file synced before the cut, byte-for-byte: the sums boots 1
    # and 2 printed when they wrote, read back by boots 2 and 3.
    local want got n=0 line
    want=$(fatp_sums "$LOGS/$name-1.log" "$LOGS/$name-2.log")
    while read -r line; do
        tr -d '\r' < "$LOGS/$name-3.log" | grep -xF "FATP-READ-3: $line" >/dev/null && n=$((n + 1))
    done <<< "$want"
    echo "HOST: $n of 2 synced files read back byte-for-byte after the crash" >> "$LOGS/$name-3.log"
    got=$(fatp_sums "$LOGS/$name-1.log")
    tr -d '\r' < "$LOGS/$name-2.log" | grep -xF "FATP-READ-2: $got" >/dev/null &&
        echo "HOST: boot two read boot one's file byte-for-byte" >> "$LOGS/$name-3.log"
    check "$name-3" "after the crash: cowfile repaired, every synced file byte-for-byte, clean shutdown" \
        "persistence: /run/initramfs/persist/live/knoppix.cow was not closed cleanly" \
        "cloopd: /run/initramfs/persist/live/knoppix.cow: was not closed cleanly; repaired" \
        "FATP-3: found boot one and boot two" "HOST: 2 of 2 synced files read back byte-for-byte after the crash" \
        "HOST: boot two read boot one's file byte-for-byte" \
        "cloopbox-shutdown: clean shutdown, poweroff, 1 server flushed and detached"
    [ "$fstype" = fat32 ] || return 0
    # The host reads the cowfile off the FAT32 stick (mtools): clean, and
    # merged into the image, fsck clean with both files in it.
    local hostlog=$LOGS/$name-host.log
    : > "$hostlog"
    dd if="$disk" of="$dir/part.img" bs=1M skip=1 status=none
    mcopy -n -i "$dir/part.img" ::/live/knoppix.cow "$dir/knoppix.cow" 2>> "$hostlog"
    "$CLOOPBOX_BIN" cowlist "$dir/knoppix.cow" 2>&1 | sed 's/^/HOST-COWLIST: /' >> "$hostlog" || true
    "$CLOOPBOX_BIN" extract_compressed_fs -q "$WORK/root-ext4.cloop" "$dir/root.img"
    "$CLOOPBOX_BIN" cowmerge -y -q "$dir/root.img" "$dir/knoppix.cow" >/dev/null 2>&1 &&
        e2fsck -fn "$dir/root.img" >/dev/null 2>&1 && echo "HOST: merged and fsck clean" >> "$hostlog"
    local f sha
    n=0
    while read -r f sha; do
        debugfs -R "dump /root/$f $dir/out" "$dir/root.img" 2>/dev/null
        [ "$(sha256sum < "$dir/out" | cut -d' ' -f1)" = "$sha" ] && n=$((n + 1))
        rm -f "$dir/out"
    done <<< "$want"
    echo "HOST: $n of 2 files in the merged image" >> "$hostlog"
    check "$name-host" "host: cowfile off the FAT32 stick clean, merge + fsck clean, both files in it" \
        "HOST-COWLIST: +state cowfile: +clean" "HOST: merged and fsck clean" "HOST: 2 of 2 files in the merged image"
    rm -f "$dir/part.img" "$dir/root.img"
}

scenario_persist-fat32() {
    fat_persist persist-fat32 fat32 FATSTICK
}

scenario_persist-exfat() {
    fat_persist persist-exfat exfat EXSTICK
}
