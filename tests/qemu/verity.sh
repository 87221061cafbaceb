# shellcheck shell=bash
# Verified images (cloopbox.verity=, docs/boot-options.md), sourced by
# qemu-test.sh with the helpers of tests/qemu/lib.sh:
#
#   verity             the busybox ext4 root recompressed with
#                      create_compressed_fs --verity, its tree on the CD as
#                      KNOPPIX/KNOPPIX.verity, booted with
#                      cloopbox.verity=ROOTHASH: init says the tree matches,
#                      the root is up on nbd and the daemon runs with
#                      --root-hash ROOTHASH
#   verity-wrong-hash  the same CD booted with another root hash: init
#                      refuses, naming the image, and drops to the rescue
#                      shell; no daemon is started
#   verity-tampered    a root with two files, compressed with --codec none
#                      and --verity, then one byte of /verity/bad flipped
#                      in the image: the guest (guest/verity.sh) gets EIO
#                      reading that file and reads /verity/good whole; the
#                      console names the block
ALL_SCENARIOS+=(verity verity-wrong-hash verity-tampered)

VERITY_WORK=$WORK/verity

# verity_image: the busybox ext4 root recompressed with --verity, and a
# directory holding its tree as KNOPPIX/KNOPPIX.verity (mklive --add),
# once per run; VERITY_ROOT is the root hash create_compressed_fs printed.
verity_image() {
    [ -z "${VERITY_ROOT:-}" ] || return 0
    prepare_live
    rm -rf "$VERITY_WORK" && mkdir -p "$VERITY_WORK/add/KNOPPIX"
    "$CLOOPBOX_BIN" extract_compressed_fs -q "$WORK/root-ext4.cloop" "$VERITY_WORK/root.ext4"
    local out
    out=$("$CLOOPBOX_BIN" create_compressed_fs -q -B 65536 --verity "$VERITY_WORK/root.ext4" "$VERITY_WORK/root.cloop")
    rm -f "$VERITY_WORK/root.ext4"
    VERITY_ROOT=$(sed -n 's/^root hash: \([0-9a-f]\{64\}\)$/\1/p' <<< "$out")
    [ -n "$VERITY_ROOT" ] || { log "create_compressed_fs --verity printed no root hash: $out"; exit 1; }
    cp "$VERITY_WORK/root.cloop.verity" "$VERITY_WORK/add/KNOPPIX/KNOPPIX.verity"
}

# verity_iso OUT ROOTHASH: the CD with the verified image and its tree,
# booting with cloopbox.verity=ROOTHASH.
verity_iso() {
    local MKLIVE_ARGS=(--add "$VERITY_WORK/add")
    make_iso "$1" "$APPEND_BASE cloopbox.verity=$2" "$VERITY_WORK/root.cloop"
}

scenario_verity() {
    verity_image
    verity_iso "$VERITY_WORK/good.iso" "$VERITY_ROOT"
    boot verity "$UNTIL_LIVE" -cdrom "$VERITY_WORK/good.iso" -boot d
    local forbid=("boot failed" "verity: .*block")
    check_absent verity "verified root: the tree matches, the daemon runs with --root-hash" forbid \
        "KNOPPIX/KNOPPIX: hash tree .*KNOPPIX.verity matches root hash ${VERITY_ROOT:0:16}" \
        "DAEMON: [0-9]+ @cloopd .*--root-hash $VERITY_ROOT" "${BLOCK_COW_CHECKS[@]}"
}

scenario_verity-wrong-hash() {
    verity_image
    # The right hash with its last digit changed.
    local wrong=${VERITY_ROOT:0:63}
    if [ "${VERITY_ROOT:63}" = 0 ]; then wrong+=1; else wrong+=0; fi
    verity_iso "$VERITY_WORK/wrong.iso" "$wrong"
    boot verity-wrong-hash "cloopbox rescue|Kernel panic|CHECKS-DONE" -cdrom "$VERITY_WORK/wrong.iso" -boot d
    local forbid=("DAEMON: " "CHECKS-DONE" "served on /dev/nbd")
    check_absent verity-wrong-hash "wrong root hash: init refuses, naming the image, then the rescue shell" forbid \
        "boot failed: .*KNOPPIX/KNOPPIX: refusing to boot an image that does not match cloopbox.verity=" \
        "dropping to the rescue shell" "cloopbox rescue"
}

scenario_verity-tampered() {
    prepare_live
    local d=$VERITY_WORK/tampered
    rm -rf "$d" && mkdir -p "$d/add/KNOPPIX"
    cp -a "$WORK/rootfs" "$d/root"
    mkdir -p "$d/root/verity"
    head -c 65536 < <(yes BADBADBADBADBAD) > "$d/root/verity/bad"
    head -c 65536 < <(yes goodgoodgoodgood) > "$d/root/verity/good"
    sha256sum < "$d/root/verity/good" | cut -d' ' -f1 > "$d/root/verity/good.sum"
    local out root off
    out=$(mklive --image-only --root "$d/root" --fs ext4 --fs-size 48 --codec none -o "$d/raw.cloop" 2>&1) ||
        { log "mklive: $out"; exit 1; }
    out=$("$CLOOPBOX_BIN" extract_compressed_fs -q "$d/raw.cloop" "$d/root.ext4" &&
        "$CLOOPBOX_BIN" create_compressed_fs -q -B 65536 --codec none --verity "$d/root.ext4" "$d/root.cloop")
    root=$(sed -n 's/^root hash: \([0-9a-f]\{64\}\)$/\1/p' <<< "$out")
    [ -n "$root" ] || { log "no root hash: $out"; exit 1; }
    cp "$d/root.cloop.verity" "$d/add/KNOPPIX/KNOPPIX.verity"
    # A byte in the middle of /verity/bad, as stored in the image.
    off=$(grep -obaF BADBADBADBADBAD "$d/root.cloop" | sed -n '100{s/:.*//;p}')
    [ -n "$off" ] || { log "/verity/bad not found in $d/root.cloop"; exit 1; }
    printf 'X' | dd of="$d/root.cloop" bs=1 seek="$off" conv=notrunc status=none
    local MKLIVE_ARGS=(--add "$d/add")
    make_iso "$d/cd.iso" "$APPEND_BASE cloopbox.verity=$root cloopbox.test=verity" "$d/root.cloop"
    boot verity-tampered "$UNTIL_LIVE" -cdrom "$d/cd.iso" -boot d
    local forbid=("VERITY-BAD: read" "VERITY-GOOD: wrong" "boot failed")
    check_absent verity-tampered "one tampered block: EIO for exactly that file, the block named" forbid \
        "VERITY-BAD: refused: .*Input/output error" "VERITY-GOOD: ok" "KNOPPIX: verity: .*block [0-9]+" "CHECKS-DONE"
}
