#!/usr/bin/env bash
# Live-boot benchmark: the cloopbox initramfs against the usual live boots
# (a busybox initramfs that loop-mounts a squashfs or an EROFS image from
# the CD and puts overlayfs on top), same kernel, same root tree, same ISO
# layout and boot loader, the same block size, under QEMU -accel tcg.
#
#   bench/boot.sh [-n RUNS] [-c CONTENDER,...] [-r] [WORKDIR]   (default ./work/bench)
#
# -r reuses the images of the previous run (ours' initramfs and every ISO
# are rebuilt: they are quick, and the binary may have changed).
#
# Contenders (each a hybrid ISO of initramfs/mklive.sh, booted by isolinux,
# the image at KNOPPIX/KNOPPIX; BLOCK bytes per block, default 131072):
#   ours-zlib    cloopbox initramfs; iso9660 in cloop (zlib -L 9), served by
#                cloopd on /dev/nbd0, overlayfs on top (as Knoppix)
#   ours-zstd    the same with --codec zstd (its default level, 19)
#   ours-lz4     the same with --codec lz4 (its default level)
#   ours-zlib-verity
#                ours-zlib's image made with --verity (the tree on the CD
#                as KNOPPIX/KNOPPIX.verity, mklive --verity), booted with
#                cloopbox.verity=ROOTHASH: every block checked (issue 13);
#                with it in the run, ours-zlib is a reference of the report
#   sq-gzip      busybox initramfs: insmod, mount the CD, losetup + mount
#   sq-xz        the squashfs (mksquashfs -comp gzip|xz|zstd -b BLOCK),
#   sq-zstd      overlayfs with a tmpfs upper
#   erofs-lz4hc  the same busybox initramfs with erofs instead of squashfs
#                (mkfs.erofs -zlz4hc,12 -C BLOCK)
#   ours-CODEC-small
#                ours-CODEC's image with the initramfs a CD-only builder
#                ships, as the busybox contenders' is: mkinitramfs.sh
#                --media cd --fs iso9660 and the boot build without https://
#                (scripts/build-static.sh --boot-offline; CLOOPBOX_BOOT_OFFLINE
#                to use another)
# A contender may carry extra kernel arguments after '@', separated by
# '+': ours-zlib@cloopbox.prefetch=8 boots the ours-zlib image with
# cloopbox.prefetch=8 (the levers of docs/boot-options.md, measured in the
# same rotated rounds as the rest).
#
# The root tree is the Debian bookworm root of the systemd scenarios
# (DEBIAN_TAR, default work/qemu/debian-root.tar, built by
# tests/qemu/mkdebian.sh when missing) plus a static busybox and
# /opt/bench/init (tests/qemu/guest/bench-init.sh), booted with
# init=/opt/bench/init. That init prints ROOT-UP with the guest's uptime,
# what the boot read from the root device (/sys/block/DEV/stat), the
# device's queue limits and cloopd's counters, then drops the page cache,
# times `busybox tar cf - usr | wc -c` and powers off. Boot time is
# measured on the host from starting QEMU to the ROOT-UP line. Boots run in
# rounds, one boot of each contender and vCPU count per round, in a rotated
# order; the report gives medians with min-max, ratios against sq-gzip and
# erofs-lz4hc, and the median of the per-round ratios (each contender
# against the reference booted in the same round). Boot to systemd's
# multi-user target is bench/boot-systemd.sh.
#
# Environment: RUNS (default 5), SMP (default "1 2"), BLOCK (131072), MEM
# (guest MiB, 1024), QEMU_TIMEOUT (seconds per boot, 600), CLOOPBOX (the
# static binary; default: scripts/build-static.sh), CLOOPBOX_BOOT (the
# initramfs's; default CLOOPBOX if set, else scripts/build-static.sh --boot),
# DEBIAN_TAR.
# Output: a Markdown report on stdout, kept in WORKDIR/boot/boot-report.md;
# per-boot data in WORKDIR/boot/runs.jsonl and serial logs in
# WORKDIR/boot/logs. Not a test: nothing fails on slow results.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/options.sh
. "$ROOT/bench/options.sh"
bench_options ours-zlib,ours-zstd,sq-gzip,sq-xz,sq-zstd,erofs-lz4hc "$@"
WORK=$BENCH/boot
MEM=${MEM:-1024}
SMP=${SMP:-1 2}
BLOCK=${BLOCK:-131072}
TIMEOUT=${QEMU_TIMEOUT:-600}
DEBIAN_TAR=$(realpath -m "${DEBIAN_TAR:-$ROOT/work/qemu/debian-root.tar}")
[ -z "${CLOOPBOX:-}" ] || CLOOPBOX=$(realpath "$CLOOPBOX")
[ -z "${CLOOPBOX_BOOT:-}" ] || CLOOPBOX_BOOT=$(realpath "$CLOOPBOX_BOOT")
# no_timer_check: on a loaded host the kernel's IO-APIC timer check fails
# under TCG now and then ("IO-APIC + timer doesn't work!", a panic).
APPEND="console=ttyS0 panic=-1 loglevel=4 no_timer_check init=/opt/bench/init"
FAIL="Kernel panic|boot failed|cloopbox rescue|bench-init: no CD"
say() { printf '[boot-bench] %s\n' "$*" >&2; }

# The Debian kernel, the images, ISOs (initramfs/mklive.sh) and the boot
# runner: tests/qemu/lib.sh, shared with qemu-test.sh.
LOGS=$WORK/logs
# shellcheck source=tests/qemu/lib.sh
. "$ROOT/tests/qemu/lib.sh"
bench_setup boot-bench
command -v mkfs.erofs > /dev/null || { echo "boot-bench: missing mkfs.erofs (apt-get install erofs-utils)" >&2; exit 1; }

IFS=, read -ra NAMES <<< "$CONTENDERS"
# A contender's image is its contender_base, its ISO contender_iso, its
# extra kernel arguments contender_args (bench/options.sh).

# image NAME: the compressed root of one contender (kept with -r).
image() {
    local b=$1
    [ "$REUSE" = 0 ] || [ ! -s "$b.img" ] || { [[ $b == *-verity ]] && [ ! -s "$b.img.verity" ]; } || return 0
    say "image $b"
    case $b in
        ours-zlib) cloop_of iso9660 tree "$b.img" --block-size "$BLOCK" --level 9 ;;
        ours-zstd) cloop_of iso9660 tree "$b.img" --block-size "$BLOCK" --codec zstd ;;
        ours-lz4) cloop_of iso9660 tree "$b.img" --block-size "$BLOCK" --codec lz4 ;;
        ours-zlib-verity) cloop_of iso9660 tree "$b.img" --block-size "$BLOCK" --level 9 --verity ;;
        sq-*) mksquashfs tree "$b.img" -noappend -quiet -no-progress -comp "${b#sq-}" -b "$BLOCK" > /dev/null ;;
        erofs-lz4hc) mkfs.erofs --quiet -zlz4hc,12 -C"$BLOCK" "$b.img" tree > /dev/null ;;
        *) echo "boot-bench: unknown contender '$b'" >&2; exit 2 ;;
    esac
}

build() {
    bench_binary
    "$ROOT/tests/qemu/mkdebian.sh" "$DEBIAN_TAR"
    if [ "$REUSE" = 0 ] || [ ! -f tree.json ]; then
        say "root tree: $DEBIAN_TAR + busybox + /opt/bench/init"
        rm -rf tree && mkdir tree
        tar --numeric-owner -xf "$DEBIAN_TAR" -C tree
        mkdir -p tree/opt/bench
        cp "$BUSYBOX" tree/opt/bench/busybox
        install -m 0755 "$GUEST/bench-init.sh" tree/opt/bench/init
        echo "{\"tree_bytes\": $(du -sb tree | cut -f1), \"usr_bytes\": $(du -sb tree/usr | cut -f1)}" > tree.json
        rm -f ./*.img
    fi
    install -m 0755 "$GUEST/bench-init.sh" tree/opt/bench/init
    local n b
    # Each image once, however many contenders boot it.
    for b in $(for n in "${NAMES[@]}"; do b=$(contender_base "$n"); echo "${b%-small}"; done | sort -u); do image "$b"; done
    say "initramfs: ours (initramfs/mkinitramfs.sh), busybox with squashfs, busybox with erofs"
    "$ROOT/initramfs/mkinitramfs.sh" -q -b "$CLOOPBOX_BOOT" -k "$KVER" -m "$KERNEL_DIR/pkg" -o ours-initrd.gz
    rm -f ours-small-initrd.gz
    [[ " ${NAMES[*]%%@*} " != *-small\ * ]] || small_initrd ours-small-initrd.gz iso9660
    squashfs_initrd sq-initrd.gz squashfs
    SQ_MODULES=$SQUASHFS_MODULES
    squashfs_initrd erofs-initrd.gz erofs
    for n in "${NAMES[@]}"; do
        b=$(contender_base "$n")
        case $b in ours-*-small) i=ours-small-initrd.gz ;; ours-*) i=ours-initrd.gz ;; sq-*) i=sq-initrd.gz ;; *) i=erofs-initrd.gz ;; esac
        b=${b%-small}
        # --verity: the image's tree onto the CD, cloopbox.verity= into the command line.
        MKLIVE_ARGS=()
        [[ $b != *-verity ]] || MKLIVE_ARGS=(--verity)
        MKLIVE_INITRD=$i make_iso "$(contender_iso "$n")" "$APPEND$(contender_args "$n")" "$b.img" > /dev/null
        echo "$n $(stat -c %s "$b.img") $(stat -c %s "$i")"
    done > sizes.txt
    cat > host.json <<JSON
{"kernel": "$KVER", "qemu": "$(qemu-system-x86_64 --version | head -1)", "mem": $MEM, "block": $BLOCK,
 "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')", "nproc": $(nproc),
 "host_kernel": "$(uname -r)", "append": "$APPEND", "binary": "$BINARY",
 "modules": "$SQ_MODULES / erofs: $SQUASHFS_MODULES"}
JSON
}
build

# --- boots -------------------------------------------------------------------
# bench_boot NAME SMP ROUND: one boot (lib.sh's boot: every console line
# stamped with the seconds since QEMU was started, in logs/*.log.times);
# one JSON line per boot goes to runs.jsonl.
bench_boot() {
    local name=$1 smp=$2 rnd=$3 log
    log=$(contender_iso "$1" | sed 's/\.iso$//')-smp$2-$3
    QEMU_SMP=$smp QEMU_MEM=$MEM boot "$log" "$FAIL" -cdrom "$(contender_iso "$name")" -boot d
    python3 - "$name" "$smp" "$rnd" "logs/$log.log.times" "$BOOT_TOTAL" "$BOOT_END" "$BOOT_LOAD" "$FAIL" <<'PY'
import json, re, sys
name, smp, rnd, log_path, total, end, load, fail = sys.argv[1:9]
smp, rnd, total = int(smp), int(rnd), float(total)
lines = []
for l in open(log_path, errors="replace", newline="\n"):
    t, _, text = l.rstrip("\n").partition(" ")
    lines.append((float(t), text))
stop = "timeout" if end == "timeout" else None
if end == "until":
    stop = "failure: " + next((t for _, t in lines if re.search(fail, t)), "?")
res = {"name": name, "smp": smp, "round": rnd, "total_s": round(total, 3), "error": stop, "log": log_path,
       "load": float(load) if load not in ("", "-") else None}
snap = {"A": {}, "B": {}}
for t, text in lines:
    m = re.match(r"ROOT-UP uptime=([\d.]+)", text)
    if m:
        res["rootup_host_s"] = round(t, 3)
        res["rootup_guest_s"] = float(m.group(1))
    m = re.match(r"DMESG: \[\s*([\d.]+)\] Run /init", text)
    if m:
        res["run_init_guest_s"] = float(m.group(1))
    m = re.match(r"BOOT-DISK (\S+) (\d+) (\d+)", text)
    if m:
        res["dev"], res["boot_reqs"], res["boot_bytes"] = m.group(1), int(m.group(2)), int(m.group(3)) * 512
    m = re.match(r"QUEUE: (.*)", text)
    if m:
        res["queue"] = m.group(1)
    m = re.match(r"DAEMON-(BOOT|END) (.*)=(\d+)", text)
    if m:
        res.setdefault("daemon_" + m.group(1).lower(), {})[m.group(2)] = int(m.group(3))
    m = re.match(r"TAR-BYTES (\d+)", text)
    if m:
        res["tar_bytes"] = int(m.group(1))
    m = re.match(r"TAR-STATUS (\d+)", text)
    if m and m.group(1) != "0":
        stop = stop or f"tar exit status {m.group(1)}"
    m = re.match(r"SNAP-([AB]) (.*)", text)
    if m:
        k, rest = m.group(1), m.group(2).split()
        if rest[0] == "uptime":
            snap[k]["uptime"] = float(rest[1])
        elif rest[0] == "disk":
            snap[k]["disk_" + rest[1]] = int(rest[2]) * 512
            snap[k]["reqs_" + rest[1]] = int(rest[3])
        elif rest[0] == "task" and len(rest) == 5:
            snap[k].setdefault("tasks", {})[rest[1]] = (rest[2], int(rest[3]), int(rest[4]))
a, b = snap["A"], snap["B"]
if "uptime" in a and "uptime" in b:
    res["tar_s"] = round(b["uptime"] - a["uptime"], 2)
    dev = res.get("dev")
    if dev and f"disk_{dev}" in b:
        res["tar_dev_bytes"] = b[f"disk_{dev}"] - a.get(f"disk_{dev}", 0)
        res["tar_dev_reqs"] = b[f"reqs_{dev}"] - a.get(f"reqs_{dev}", 0)
    d = 0
    for pid, (task, ut, st) in b.get("tasks", {}).items():
        if task == "@daemon":
            ua, sa = a.get("tasks", {}).get(pid, (task, 0, 0))[1:]
            d += (ut - ua + st - sa) / 100
    res["tar_daemon_cpu_s"] = round(d, 2)
if "BENCH-DONE" not in [t for _, t in lines] and not stop:
    stop = "no BENCH-DONE"
res["error"] = stop
with open("runs.jsonl", "a") as f:
    f.write(json.dumps(res) + "\n")
print(f"[boot-bench] {name} smp {smp} round {rnd}: root up {res.get('rootup_host_s')} s, "
      f"boot read {res.get('boot_bytes', 0) / 1e6:.1f} MB in {res.get('boot_reqs')} requests, "
      f"/usr {res.get('tar_s')} s, {res.get('tar_bytes', 0) / 1e6:.0f} MB, load {res['load']}"
      + (f", ERROR {res['error']}" if res["error"] else ""), file=sys.stderr)
PY
}

read -ra SMPS <<< "$SMP"
PAIRS=()
for s in "${SMPS[@]}"; do for c in "${NAMES[@]}"; do PAIRS+=("$c $s"); done; done
rm -f runs.jsonl logs/*.log logs/*.log.times
say "$RUNS rounds of ${#PAIRS[@]} boots (${NAMES[*]} at -smp ${SMPS[*]}), rotated order"
cut -d' ' -f1-3 /proc/loadavg > load-before
bench_rounds bench_boot "${PAIRS[@]}"
cut -d' ' -f1-3 /proc/loadavg > load-after

# --- report ------------------------------------------------------------------
python3 "$ROOT/bench/boot-report.py" "$CONTENDERS" "$SMP" "$RUNS" | tee boot-report.md
