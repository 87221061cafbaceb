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
#   verity-mklive      the CD of mklive --verity --root (the image, its tree
#                      and the root hash in the boot entry all from
#                      mklive, no cloopbox.verity= given): init says the
#                      tree matches the root hash mklive printed, the daemon
#                      runs with it, and its status counts 4 KiB blocks
#                      checked (> 0) and none refused; then, on the host,
#                      mklive --verity --image takes an image's own tree
#                      (the root hash create_compressed_fs printed) and
#                      refuses a tree of another image
#   uki-secureboot     OVMF with Secure Boot enforced and Debian's snakeoil
#                      test keys enrolled (PK, KEK, db): the CD of mklive
#                      --verity --uki, its UEFI path one unified kernel
#                      image signed with the snakeoil key; the guest sees
#                      Secure Boot on and systemd's stub, boots the
#                      verified root and powers off through the exitrd.
#                      Then the same image signed with a key made in the
#                      test (not enrolled): the firmware refuses it
ALL_SCENARIOS+=(verity verity-wrong-hash verity-tampered verity-mklive uki-secureboot)

VERITY_WORK=$WORK/verity

# verity_image: the busybox ext4 root recompressed with --verity, and a
# directory holding its tree as KNOPPIX/KNOPPIX.verity (mklive --add),
# once per run for every parallel job (the local and the network verity
# scenarios share it); VERITY_ROOT is the root hash create_compressed_fs
# printed. Only its own files are replaced: the scenarios' directories
# under VERITY_WORK belong to jobs that may be running.
verity_image() {
    [ -z "${VERITY_ROOT:-}" ] || return 0
    once verity verity_image_build
    VERITY_ROOT=$(cat "$VERITY_WORK/root.hash" 2> /dev/null)
    [[ $VERITY_ROOT =~ ^[0-9a-f]{64}$ ]] || { log "verity_image: no root hash in $VERITY_WORK/root.hash"; exit 1; }
}
verity_image_build() {
    prepare_live
    rm -rf "$VERITY_WORK/add" "$VERITY_WORK/root.cloop" "$VERITY_WORK/root.cloop.verity" "$VERITY_WORK/root.hash"
    mkdir -p "$VERITY_WORK/add/KNOPPIX"
    "$CLOOPBOX_BIN" extract_compressed_fs -q "$WORK/root-ext4.cloop" "$VERITY_WORK/root.ext4"
    local out root
    out=$("$CLOOPBOX_BIN" create_compressed_fs -q -B 65536 --verity "$VERITY_WORK/root.ext4" "$VERITY_WORK/root.cloop")
    rm -f "$VERITY_WORK/root.ext4"
    root=$(sed -n 's/^root hash: \([0-9a-f]\{64\}\)$/\1/p' <<< "$out")
    [ -n "$root" ] || { log "create_compressed_fs --verity printed no root hash: $out"; exit 1; }
    cp "$VERITY_WORK/root.cloop.verity" "$VERITY_WORK/add/KNOPPIX/KNOPPIX.verity"
    echo "$root" > "$VERITY_WORK/root.hash"
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

# verity_tampered_image DIR: in DIR, root.cloop (a root with two files,
# --codec none and --verity, then one byte of /verity/bad flipped in the
# image), its tree root.cloop.verity and add/KNOPPIX/KNOPPIX.verity; sets
# TAMPERED_ROOT to the root hash of the image before the flip.
verity_tampered_image() {
    prepare_live
    local d=$1
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
    TAMPERED_ROOT=$root
}

scenario_verity-tampered() {
    local d=$VERITY_WORK/tampered root
    verity_tampered_image "$d"
    root=$TAMPERED_ROOT
    local MKLIVE_ARGS=(--add "$d/add")
    make_iso "$d/cd.iso" "$APPEND_BASE cloopbox.verity=$root cloopbox.test=verity" "$d/root.cloop"
    boot verity-tampered "$UNTIL_LIVE" -cdrom "$d/cd.iso" -boot d
    local forbid=("VERITY-BAD: read" "VERITY-GOOD: wrong" "boot failed")
    check_absent verity-tampered "one tampered block: EIO for exactly that file, the block named" forbid \
        "VERITY-BAD: refused: .*Input/output error" "VERITY-GOOD: ok" "KNOPPIX: verity: .*block [0-9]+" "CHECKS-DONE"
}

# verity_mklive_iso OUT APPEND [MKLIVE ARGS...]: mklive --verity of the
# busybox root (ext4, as cloop_of makes it) with our initramfs; MKLIVE_ROOT
# is the root hash mklive printed.
verity_mklive_iso() {
    local out=$1 append=$2 printed
    shift 2
    printed=$(mklive --initrd "$WORK/initrd.gz" --append "$append" --root "$WORK/rootfs" --fs ext4 --fs-size 48 \
        --verity "$@" -o "$out") || { log "mklive --verity failed: $printed"; exit 1; }
    MKLIVE_ROOT=$(sed -n 's|^root hash: \([0-9a-f]\{64\}\) KNOPPIX/KNOPPIX$|\1|p' <<< "$printed")
    [ -n "$MKLIVE_ROOT" ] || { log "mklive --verity printed no root hash: $printed"; exit 1; }
}

# The facts only a verifying daemon produces: the tree checked against the
# root hash at boot, cloopd's --root-hash, and its status counting blocks
# hashed against the tree (the status of a daemon without --root-hash has
# no verity lines).
verity_served_checks() { # ROOTHASH
    VERITY_SERVED=("KNOPPIX/KNOPPIX: hash tree .*KNOPPIX.verity matches root hash ${1:0:16}"
        "DAEMON: [0-9]+ @cloopd .*--root-hash $1" "CTL: +verity checked: +[1-9][0-9]*\b"
        "CTL: +verity refused: +0\b")
}

scenario_verity-mklive() {
    prepare_live
    mkdir -p "$VERITY_WORK"
    local iso=$VERITY_WORK/mklive.iso
    verity_mklive_iso "$iso" "$APPEND_BASE"
    # The boot entry carries the hash mklive printed (no one else put it there).
    xorriso -osirrox on -indev "$iso" -extract /boot/isolinux/isolinux.cfg "$VERITY_WORK/mklive.cfg" 2>/dev/null
    grep -q "cloopbox.verity=$MKLIVE_ROOT " "$VERITY_WORK/mklive.cfg" ||
        { log "isolinux.cfg of $iso has no cloopbox.verity=$MKLIVE_ROOT"; exit 1; }
    boot verity-mklive "$UNTIL_LIVE" -cdrom "$iso" -boot d
    verity_served_checks "$MKLIVE_ROOT"
    local forbid=("boot failed" "verity: .*block")
    check_absent verity-mklive "mklive --verity: tree on the CD, root hash in the entry, daemon verifies (blocks checked > 0, none refused)" \
        forbid "${VERITY_SERVED[@]}" "${BLOCK_COW_CHECKS[@]}"

    # --image: the tree beside the image is checked against it first.
    verity_image
    local d=$VERITY_WORK/mklive-image out t0=$SECONDS
    rm -rf "$d" && mkdir -p "$d"
    out=$(mklive --initrd "$WORK/initrd.gz" --image "$VERITY_WORK/root.cloop" --verity -o "$d/good.iso" 2>&1) || true
    cp "$WORK/root-iso.cloop" "$d/other.cloop"
    cp "$VERITY_WORK/root.cloop.verity" "$d/other.cloop.verity"
    local refused
    refused=$(mklive --initrd "$WORK/initrd.gz" --image "$d/other.cloop" --verity -o "$d/bad.iso" 2>&1) &&
        refused="exit 0: $refused"
    if [ "$out" != "root hash: $VERITY_ROOT KNOPPIX/KNOPPIX" ]; then
        record verity-mklive-image FAIL $((SECONDS - t0)) "mklive --verity --image printed '$out', not root hash $VERITY_ROOT"
    elif [[ $refused != *"mklive: --verity: $d/other.cloop does not match its tree $d/other.cloop.verity"* ]] ||
        [ -e "$d/bad.iso" ]; then
        record verity-mklive-image FAIL $((SECONDS - t0)) "another image's tree was not refused: $refused"
    else
        record verity-mklive-image PASS $((SECONDS - t0)) "mklive --verity --image: its own tree's root hash, another image's tree refused"
    fi
}

scenario_uki-secureboot() {
    prepare_live
    local d=$UEFI_WORK/uki
    rm -rf "$d" && mkdir -p "$d"
    # Debian's snakeoil pair (package ovmf): its certificate is PK, KEK and
    # db in OVMF_VARS_4M.snakeoil.fd; the key's passphrase is "snakeoil".
    openssl rsa -in /usr/share/ovmf/PkKek-1-snakeoil.key -passin pass:snakeoil -out "$d/snakeoil.key" 2>/dev/null ||
        { log "openssl could not read the snakeoil key"; exit 1; }
    local append="$APPEND_BASE cloopbox.test=efi"
    verity_mklive_iso "$d/signed.iso" "$append" --uki "$d/snakeoil.key,/usr/share/ovmf/PkKek-1-snakeoil.pem"
    local root=$MKLIVE_ROOT
    local sb=(-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on
        -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF/OVMF_CODE_4M.snakeoil.fd")
    cp "$OVMF/OVMF_VARS_4M.snakeoil.fd" "$d/vars-signed.fd"
    local TIMEOUT=${QEMU_TIMEOUT:-600}
    boot uki-secureboot "$SHUTDOWN_UNTIL" "${sb[@]}" -drive "if=pflash,format=raw,unit=1,file=$d/vars-signed.fd" \
        -drive "file=$d/signed.iso,media=cdrom,readonly=on"
    verity_served_checks "$root"
    local forbid=("boot failed" "verity: .*block" "GRUB")
    check_absent uki-secureboot "OVMF Secure Boot (snakeoil keys): signed UKI from the CD, no GRUB; SecureBoot=1, lockdown; verified root on nbd; exitrd poweroff" \
        forbid "EFI-SECUREBOOT-VAR: 1" "EFI-KMSG: Kernel is locked down from EFI Secure Boot" "EFI-STUB: systemd-stub" \
        "EFI-NBD: loaded, taint ''" "${VERITY_SERVED[@]}" "${EFI_ROOT_CHECKS[@]}"

    # The same build signed with a key of our own that the firmware does
    # not know: it must not run.
    openssl req -x509 -newkey rsa:2048 -nodes -subj "/CN=cloopbox test, not enrolled/" -days 2 \
        -keyout "$d/other.key" -out "$d/other.pem" 2>/dev/null || { log "openssl could not make a key"; exit 1; }
    verity_mklive_iso "$d/other.iso" "$append" --uki "$d/other.key,$d/other.pem"
    cp "$OVMF/OVMF_VARS_4M.snakeoil.fd" "$d/vars-other.fd"
    local TIMEOUT=${QEMU_TIMEOUT:-300}
    boot uki-secureboot-refused "Access Denied|Security Violation|cloopbox|Kernel panic" "${sb[@]}" \
        -drive "if=pflash,format=raw,unit=1,file=$d/vars-other.fd" -drive "file=$d/other.iso,media=cdrom,readonly=on"
    local forbid=("cloopbox" "EFI stub" "ROOT-UP")
    check_absent uki-secureboot-refused "OVMF Secure Boot (snakeoil keys): a UKI signed with a key not in db is refused by the firmware" \
        forbid "BdsDxe: failed to load .*(Access Denied|Security Violation)"
}
