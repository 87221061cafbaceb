# shellcheck shell=bash
# Every image kind at boot (issue 14), sourced by qemu-test.sh with the
# helpers of tests/qemu/lib.sh. One small root (prepare_live's busybox root
# plus /kinds: base64 text, random bytes, a number list), made into one
# ext4 filesystem once per run; each scenario compresses that same
# filesystem its own way, boots it from a CD, and checks what the guest
# read (guest/kind.sh): cloopinfo of the image on the medium names the
# kind, and the sha256 of every file under /kinds, read through the root
# after drop_caches, equals the host's.
#
#   kind-xz           V4, xz blocks
#   kind-lz4          V4, lz4 blocks
#   kind-zstd         V4, zstd blocks
#   kind-header-end   V4 (zlib), header and index at the end of the file
#   kind-bs128k       128 KiB blocks (zlib, V2)      (cd covers 64 KiB)
#   kind-bs256k       256 KiB blocks
#   kind-bs1m         1 MiB blocks, the largest cloop allows
#   kind-cloop-utils  made by Debian cloop-utils' create_compressed_fs
#   kind-over4g       an iso9660 image of 4.2 GiB (sparse padding first,
#                     so every other file, the whole live root, lies past
#                     4 GiB): overlayfs root; the host finds each file's
#                     place, the guest also reads the raw device there
ALL_SCENARIOS+=(kind-xz kind-lz4 kind-zstd kind-header-end kind-bs128k kind-bs256k kind-bs1m kind-cloop-utils kind-over4g)

KINDS=$WORK/kinds

# kinds_prepare: the tree, its ext4 filesystem ($KINDS/root.ext4, made by
# mklive as cd's is, 48 MiB) and the host's sums ($KINDS/sums), once per
# run (once: a stamp under a lock, shared by parallel jobs).
kinds_prepare() {
    prepare_live
    once kinds kinds_build
}
kinds_build() {
    rm -rf "$KINDS" && mkdir -p "$KINDS"
    cp -a "$WORK/rootfs" "$KINDS/tree"
    mkdir -p "$KINDS/tree/kinds/sub"
    # Compressible but not trivial, so every codec has work in every block;
    # random bytes are stored raw by V4 (a block that does not shrink).
    head -c $((3 << 20)) /dev/urandom | base64 > "$KINDS/tree/kinds/text.b64"
    head -c $((1 << 20)) /dev/urandom > "$KINDS/tree/kinds/random.bin"
    seq 1 300000 > "$KINDS/tree/kinds/sub/numbers.txt"
    kinds_sums "$KINDS/tree" > "$KINDS/sums"
    cloop_of ext4 "$KINDS/tree" "$KINDS/base.cloop"
    "$CLOOPBOX_BIN" extract_compressed_fs -q "$KINDS/base.cloop" "$KINDS/root.ext4"
}
# kinds_sums TREE: what guest/kind.sh prints for TREE's /kinds.
kinds_sums() {
    (cd "$1" && find kinds -type f | LC_ALL=C sort | xargs sha256sum)
}

# kind_boot NAME DETAIL IMAGE [APPEND] -- EXTRA-PATTERN...: the CD with
# IMAGE, booted; PASS if the guest read every file of the host's sums
# ($KIND_SUMS, default $KINDS/sums) and the patterns are in the log.
kind_boot() {
    local name=$1 detail=$2 image=$3 append=$4 sum path pats=()
    shift 5
    make_iso "$KINDS/$name.iso" "$APPEND_BASE cloopbox.test=kind $append" "$image"
    boot "$name" "$UNTIL_LIVE" -cdrom "$KINDS/$name.iso" -boot d
    # Facts the host found about the image (KIND_HOST) join the log.
    [ -z "${KIND_HOST:-}" ] || [ "$INTERACTIVE" = 1 ] || cat "$KIND_HOST" >> "$LOGS/$name.log"
    while read -r sum path; do
        # (The console's lines end in CR LF.)
        pats+=("KIND-SUM: $sum  ${path//./\\.}[[:space:]]*\$")
    done < "${KIND_SUMS:-$KINDS/sums}"
    [ ${#pats[@]} -ge 3 ] || { record "$name" FAIL - "no host sums in ${KIND_SUMS:-$KINDS/sums}"; return 0; }
    check "$name" "$detail" "$@" "${pats[@]}" "KIND: done" "WRITE: written at boot" "CHECKS-DONE"
    rm -f "$KINDS/$name.iso"
}

# kind_image NAME ARGS...: root.ext4 compressed by mklive with ARGS.
kind_image() {
    local name=$1
    shift
    mklive --image-only --root "$KINDS/root.ext4" "$@" -o "$KINDS/$name.cloop"
}

kind_codec() { # NAME CODEC
    kinds_prepare
    kind_image "$1" --codec "$2"
    kind_boot "$1" "V4 image, $2 blocks: the root's files read back bit-exact" "$KINDS/$1.cloop" "" -- \
        "KIND-INFO: version: cloop V4\.0" "KIND-INFO: codecs: (.*, )?$2 [1-9]" "${BLOCK_COW_CHECKS[@]}"
}
scenario_kind-xz() { kind_codec kind-xz xz; }
scenario_kind-lz4() { kind_codec kind-lz4 lz4; }
scenario_kind-zstd() { kind_codec kind-zstd zstd; }

kind_block() { # NAME BYTES
    kinds_prepare
    kind_image "$1" --block-size "$2"
    kind_boot "$1" "zlib image in $(($2 >> 10)) KiB blocks: the root's files read back bit-exact" "$KINDS/$1.cloop" "" -- \
        "KIND-INFO: version: cloop V2\.0" "KIND-INFO: block size: $2[[:space:]]*$" "${BLOCK_COW_CHECKS[@]}"
}
scenario_kind-bs128k() { kind_block kind-bs128k 131072; }
scenario_kind-bs256k() { kind_block kind-bs256k 262144; }
scenario_kind-bs1m() { kind_block kind-bs1m 1048576; }

# header_to_end IN OUT: the V2 image IN rewritten as the V4 layout with the
# header last (cloop 4.x): the blocks from offset 0, then the index, then
# the 136-byte header at the end of the file; the offsets move down by
# the header and index that no longer come first. Flags stay 0 (zlib).
header_to_end() {
    python3 - "$1" "$2" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
head = bytearray(data[:136])
assert head[11:15] == b"V2.0", "not a V2 image"
n = struct.unpack(">I", head[132:136])[0]
index = struct.unpack(f">{n + 1}Q", data[136:136 + 8 * (n + 1)])
shift = 136 + 8 * (n + 1)
assert index[0] == shift, "blocks do not follow the index"
head[11:15] = b"V4.0"
moved = struct.pack(f">{n + 1}Q", *(e - shift for e in index))
open(sys.argv[2], "wb").write(data[shift:] + moved + bytes(head))
PY
}

scenario_kind-header-end() {
    kinds_prepare
    header_to_end "$KINDS/base.cloop" "$KINDS/kind-header-end.cloop"
    kind_boot kind-header-end "V4 image with the header at the end: the root's files read back bit-exact" \
        "$KINDS/kind-header-end.cloop" "" -- \
        "KIND-INFO: version: cloop V4\.0" "KIND-INFO: header: last" "${BLOCK_COW_CHECKS[@]}"
}

# kind-cloop-utils: Debian's own tool (cloop-utils' advfs), default
# options (zlib 9, 64 KiB blocks); our reader must serve its bytes.
scenario_kind-cloop-utils() {
    kinds_prepare
    local tool=/usr/bin/create_compressed_fs
    "$tool" -q "$KINDS/root.ext4" "$KINDS/kind-cloop-utils.cloop" 2>"$KINDS/kind-cloop-utils.err" ||
        { record kind-cloop-utils FAIL - "$tool failed: $(tail -n 1 "$KINDS/kind-cloop-utils.err")"; return 0; }
    # The tool's usage line names it advfs: the image is not ours.
    local who
    who=$("$tool" -h 2>&1 | awk '/^Usage:/ { print $2; exit }' || true)
    kind_boot kind-cloop-utils "image by cloop-utils' create_compressed_fs ($who): the root's files read back bit-exact" \
        "$KINDS/kind-cloop-utils.cloop" "" -- "KIND-INFO: version: cloop V2\.0" "KIND-INFO: block size: 65536[[:space:]]*$" \
        "${BLOCK_COW_CHECKS[@]}"
    [ "$who" = advfs ] || record kind-cloop-utils-tool FAIL - "$tool is not cloop-utils' advfs ($who)"
}

# kind-over4g: iso9660 of the kinds tree behind 4.2 GiB of sparse padding
# (two files, no multi-extent files needed), so the root itself, /kinds
# and /bin/busybox included, sits past 4 GiB. The ISO stays sparse on the
# host (cp --sparse=always), the image is mostly zero blocks.
scenario_kind-over4g() {
    kinds_prepare
    local dir=$KINDS/over4g tree=$KINDS/over4g/tree fs=$KINDS/over4g/fs.iso
    rm -rf "$dir" && mkdir -p "$dir"
    cp -a "$KINDS/tree" "$tree"
    mkdir -p "$tree/0pad"
    truncate -s 2150M "$tree/0pad/a" "$tree/0pad/b"
    xorriso -as mkisofs -quiet -R -V KNOPPIX_FS --sort-weight 100 /0pad -o - "$tree" 2>"$dir/xorriso.err" |
        cp --sparse=always /dev/stdin "$fs"
    # Where each file landed: every file but the padding past 4 GiB.
    xorriso -indev "$fs" -find / -type f -exec report_lba -- 2>/dev/null |
        awk -F' *, *' '/^File data lba:/ { print $2, $4, $5 }' |
        tr -d "'" > "$dir/lbas"
    local files past lba len path raw=""
    files=$(grep -vc ' /0pad/' "$dir/lbas" || true)
    past=$(awk '$3 !~ /^\/0pad\// && $1 * 2048 >= 4294967296' "$dir/lbas" | wc -l)
    {
        echo "HOST: $(stat -c %s "$fs") bytes of iso9660, $(du -k "$fs" | cut -f1) KiB on the disk"
        echo "HOST: $past of $files files lie past 4 GiB"
    } > "$dir/host"
    # The guest reads the raw device where the host found the /kinds files.
    while read -r lba len path; do
        case $path in /kinds/*) raw+=" cloopbox.rawlba=$lba:$len:$path" ;; esac
    done < "$dir/lbas"
    mklive --image-only --root "$fs" -o "$KINDS/kind-over4g.cloop"
    rm -f "$fs"
    local rawpats=() sum path
    while read -r sum path; do
        rawpats+=("KIND-RAW: $sum /${path//./\\.} at byte [0-9]+ of /dev/nbd[0-9]+")
    done < "$KINDS/sums"
    KIND_HOST=$dir/host kind_boot kind-over4g \
        "iso9660 image of 4.2 GiB, the root past 4 GiB: files and raw device bytes read back bit-exact" \
        "$KINDS/kind-over4g.cloop" "$raw" -- "HOST: $files of $files files lie past 4 GiB" "KIND-INFO: uncompressed size: [0-9]+ \(4\.[0-9] GiB\)" \
        "KIND-DEV: /dev/nbd[0-9]+ (4[3-9][0-9]{8}|[5-9][0-9]{9}) bytes" "${rawpats[@]}" "${OVERLAY_CHECKS[@]}"
    [ "$files" -gt 10 ] || record kind-over4g-files FAIL - "only $files files found in the image (xorriso report_lba)"
    rm -rf "$dir"
}
