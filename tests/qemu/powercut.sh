# A real power cut: the cowfile on a disk that loses what it was not told
# to flush (issue: durability against a power loss, not only a killed
# process).
ALL_SCENARIOS+=(powercut)

# volatile_disk NAME DISK: tests/qemu/volatile-nbd.py serving DISK on
# $WORK/NAME.sock in the background (pid in VOLATILE_PID, status lines in
# $WORK/NAME.status); sets VOLATILE_DRIVE to the QEMU -drive for it. QEMU's
# default cache mode (writeback) shows the guest a volatile write cache, so
# the guest's flushes reach the server as NBD_CMD_FLUSH.
volatile_disk() {
    local name=$1 disk=$2 i
    rm -f "$WORK/$name.status" "$WORK/$name.sock"
    python3 "$QEMU_LIB_ROOT/tests/qemu/volatile-nbd.py" --socket "$WORK/$name.sock" \
        --status "$WORK/$name.status" "$disk" 2>> "$LOGS/$name.server.log" &
    VOLATILE_PID=$!
    for i in $(seq 100); do [ -S "$WORK/$name.sock" ] && break; sleep 0.1; done
    VOLATILE_DRIVE="if=virtio,format=raw,file=nbd+unix:///?socket=$WORK/$name.sock"
}

# stop_volatile: the server exits by itself once QEMU is gone; one that
# never saw QEMU connect (a failed start) is stopped.
stop_volatile() {
    local i
    for i in $(seq 50); do kill -0 "$VOLATILE_PID" 2>/dev/null || break; sleep 0.1; done
    kill "$VOLATILE_PID" 2>/dev/null || true
    wait "$VOLATILE_PID" 2>/dev/null || true
}

# cut_power_at NAME PATTERN: in the background, once the console log of
# boot NAME shows PATTERN, cuts the power: SIGUSR1 makes the server drop its
# write cache (at once, or at the next write if the cache is empty), then
# QEMU is killed with SIGKILL.
cut_power_at() {
    local name=$1 pattern=$2 i
    # Not the log of an earlier run: boot.py creates it afresh.
    rm -f "$LOGS/$name.log"
    (
        for i in $(seq 1200); do grep -qE -- "$pattern" "$LOGS/$name.log" 2>/dev/null && break; sleep 0.5; done
        kill -USR1 "$VOLATILE_PID" 2>/dev/null
        for i in $(seq 600); do grep -q "state=cut" "$WORK/$name.status" 2>/dev/null && break; sleep 0.1; done
        pkill -KILL -f -- "unix:$WORK/$name.mon," || true
    ) &
}

# powercut: boot one fsyncs files through the root and keeps writing; the
# host drops the disk's unflushed writes and kills QEMU. The host then
# repairs a copy of the cowfile, merges it and runs fsck, and finds the
# synced files; boot two repairs the cowfile itself, finds them, and shuts
# down cleanly, leaving a clean cowfile that merges cleanly.
scenario_powercut() {
    prepare_live
    local disk=$WORK/powercut.img dir=$WORK/powercut-host
    rm -rf "$dir" && mkdir -p "$dir"
    : > "$LOGS/powercut-1.server.log"
    : > "$LOGS/powercut-2.server.log"
    part_disk "$disk" ext4 PERSIST 128
    local append="$APPEND_BASE cow=/dev/vda1:/live/knoppix.cow cloopbox.test=powercut"
    volatile_disk powercut-1 "$disk"
    cut_power_at powercut-1 "POWERCUT-1: writing"
    local cutter=$!
    boot powercut-1 "POWERCUT-1: still running|Kernel panic|boot failed|cloopbox rescue" \
        -kernel "$KERNEL" -initrd "$WORK/initrd.gz" -cdrom "$WORK/cd-ext4.iso" \
        -drive "$VOLATILE_DRIVE" -append "$append cloopbox.phase=cut"
    kill "$cutter" 2>/dev/null || true
    wait "$cutter" 2>/dev/null || true
    stop_volatile
    sed 's/^/HOST: disk /' "$WORK/powercut-1.status" >> "$LOGS/powercut-1.log"
    check powercut-1 "files fsynced through cloopd, then the power cut drops the disk's write cache" \
        "served on /dev/nbd0 by pid [0-9]+ with the persistent cowfile" \
        "POWERCUT-1: synced [0-9a-f]{64} /root/synced-4" "POWERCUT-1: writing" \
        "HOST: disk cut: dropped [1-9][0-9]* bytes in [1-9][0-9]* writes not yet flushed \([1-9][0-9]* flushes committed\)"

    # The host, on a copy of what the disk kept: the cowfile is dirty,
    # cowrepair fixes it, it merges into the image, fsck is clean after the
    # journal replay, and every synced file is there byte for byte.
    local hostlog=$LOGS/powercut-host.log state f sum want
    : > "$hostlog"
    # What the disk kept, for a look after a failure (boot two changes it).
    cp --sparse=always "$disk" "$dir/after-cut.img"
    state=$(persist_cow_state "$disk" "$dir")
    echo "HOST: after the cut the cowfile is ${state:-unreadable}" >> "$hostlog"
    # The control file the guest fsynced beside the cowfile.
    sum=$(grep -a "^POWERCUT-1: control " "$LOGS/powercut-1.log" | tr -d '\r' | cut -d" " -f3) || true
    debugfs -R "dump /live/control $dir/control" "$dir/part.img" 2>/dev/null
    [ -n "$sum" ] && [ "$(sha256sum < "$dir/control" | cut -d" " -f1)" = "$sum" ] &&
        echo "HOST: the control file on the persistence partition intact" >> "$hostlog"
    "$CLOOPBOX_BIN" cowrepair "$dir/knoppix.cow" >> "$hostlog" 2>&1 && echo "HOST: cowrepair done" >> "$hostlog"
    "$CLOOPBOX_BIN" extract_compressed_fs -q "$WORK/root-ext4.cloop" "$dir/root.img"
    "$CLOOPBOX_BIN" cowmerge -y -q "$dir/root.img" "$dir/knoppix.cow" >> "$hostlog" 2>&1 &&
        echo "HOST: merged" >> "$hostlog"
    # The journal replay is the one repair allowed (exit 1: fixed).
    local rc=0
    e2fsck -fy "$dir/root.img" > "$dir/fsck1.txt" 2>&1 || rc=$?
    [ "$rc" -le 1 ] && e2fsck -fn "$dir/root.img" > "$dir/fsck2.txt" 2>&1 && echo "HOST: fsck clean" >> "$hostlog"
    : > "$dir/synced.sha256"
    while read -r _ _ sum f; do
        [ -n "$f" ] || continue
        printf '%s  %s\n' "$sum" "$f" >> "$dir/synced.sha256"
        debugfs -R "dump $f $dir/file" "$dir/root.img" 2>/dev/null
        want=$(sha256sum < "$dir/file" 2>/dev/null | cut -d" " -f1) || true
        [ "$want" = "$sum" ] && echo "HOST: $f intact" >> "$hostlog"
        rm -f "$dir/file"
    done < <(grep -a "^POWERCUT-1: synced " "$LOGS/powercut-1.log" | tr -d '\r')
    # The list was the last file synced: the guest printed what it holds.
    debugfs -R "dump /root/synced.sha256 $dir/list" "$dir/root.img" 2>/dev/null
    if cmp -s "$dir/list" "$dir/synced.sha256"; then
        echo "HOST: /root/synced.sha256 intact" >> "$hostlog"
    else
        # What is there instead, for the diagnosis.
        debugfs -R "stat /root/synced.sha256" "$dir/root.img" 2>&1 | sed -n 's/^/HOST-LIST: /; /Size:\|time:/p' >> "$hostlog"
        od -An -c -N 96 "$dir/list" 2>&1 | sed 's/^/HOST-LIST: /' >> "$hostlog"
    fi
    check powercut-host "host: cut cowfile dirty; cowrepair, cowmerge, fsck clean; synced files byte for byte" \
        "HOST: the control file on the persistence partition intact" "HOST: after the cut the cowfile is dirty" "HOST: cowrepair done" "HOST: merged" "HOST: fsck clean" \
        "HOST: /root/synced-1 intact" "HOST: /root/synced-2 intact" "HOST: /root/synced-3 intact" "HOST: /root/synced-4 intact" \
        "HOST: /root/synced.sha256 intact"

    # Boot two, on the same disk: the cowfile repaired, the files intact.
    volatile_disk powercut-2 "$disk"
    boot powercut-2 "$SHUTDOWN_UNTIL" -kernel "$KERNEL" -initrd "$WORK/initrd.gz" -cdrom "$WORK/cd-ext4.iso" \
        -drive "$VOLATILE_DRIVE" -append "$append cloopbox.phase=check"
    stop_volatile
    check powercut-2 "next boot: the cowfile repaired, every synced file intact, clean shutdown" \
        "cloopd: /run/initramfs/persist/live/knoppix.cow: was not closed cleanly; repaired" \
        "POWERCUT-2: 4 synced files intact" \
        "cloopbox-shutdown: clean shutdown, poweroff, 1 server flushed and detached"
}
