#!/usr/bin/env bash
# Boot-to-multi-user benchmark: a real Debian bookworm system with systemd
# (the root of the debian-systemd scenario, tests/qemu/lib.sh) booted
# from a CD under QEMU -accel tcg, through
#   ours      the cloopbox initramfs: ext4 in cloop (64 KiB blocks, zlib 9)
#             on /dev/nbd0 with the block-level cowfile on tmpfs
#   ours-ublk the same with cloopbox.transport=ublk: the root on /dev/ublkb0
#             (kernels with ublk_drv: KERNEL_SUITE=trixie; elsewhere init
#             falls back to NBD and says so)
#   ours-iso  the cloopbox initramfs with the squashfs contender's design:
#             iso9660 in cloop (64 KiB blocks, zlib 9; mklive --fs
#             iso9660) on /dev/nbd0 under overlayfs with a tmpfs upper. No
#             ext4 module to load (0.4 s of kernel work under TCG)
#   ours-iso-ublk  the same with cloopbox.transport=ublk
#   ours-iso-small, ours-iso-ublk-small
#             ours-iso and ours-iso-ublk with the initramfs a CD-only
#             builder ships, as the busybox contenders' is: mkinitramfs.sh
#             --media cd --fs iso9660 and the boot build without https://
#             (scripts/build-static.sh --boot-offline, or
#             CLOOPBOX_BOOT_OFFLINE)
#   squashfs  the usual live boot, a busybox initramfs: insmod, mount the
#             CD, losetup + mount the squashfs (gzip, -b 65536), overlayfs
#             with a tmpfs upper (the contender of bench/boot.sh)
#   erofs     the same busybox initramfs with EROFS instead of squashfs
#             (mkfs.erofs -zlz4hc,12 -C65536), as Fedora's live media
#   dracut    a dracut initramfs (systemd in the initrd) with our module
#             dracut-module/50cloopbox, built by tests/qemu/mkdracut.sh,
#             booting the same image as ours with root=live:cloop. Skipped,
#             with a note in the report, when that script or dracut is
#             missing.
# Same kernel, same root tree, same ISO layout and boot loader.
# One of ours may carry extra kernel arguments after '@', separated by
# '+', as in bench/boot.sh: ours-ublk@cloopbox.prefetch=0 boots the
# ours-ublk image and command line with cloopbox.prefetch=0 added.
#
#   bench/boot-systemd.sh [-n RUNS] [-c CONTENDER,...] [-r] [WORKDIR]   (default ./work/bench)
#
# -r reuses the ISOs of the previous run and only boots.
#
# The guest's check (cloopbox.test=boot on the command line) waits for
# `systemctl is-system-running --wait`, prints ROOT-UP with the guest's
# uptime at once, then `systemd-analyze time` and what the boot read, and
# the host stops QEMU. The time is measured on the host, from starting
# QEMU to the ROOT-UP line; so is the CPU time QEMU has used by then (the
# emulation work, which depends much less than the wall time on how loaded
# the host is). Boots run in rounds, one boot of each contender per round
# in a rotated order; the report gives medians with min-max, and
# /proc/loadavg before, after and at the start of each boot (the machine
# is shared: TCG timings are emulation timings, slowed by whatever else
# runs).
#
# Environment: RUNS (default 5), SMP (default 2, as qemu-test.sh), MEM (guest
# MiB, 1024), QEMU_TIMEOUT (seconds per boot, 600), CLOOPBOX (the static
# binary; default scripts/build-static.sh), CLOOPBOX_BOOT (our initramfs's;
# default CLOOPBOX if set, else scripts/build-static.sh --boot), DEBIAN_TAR (the root tarball,
# default work/qemu/debian-root.tar, built by tests/qemu/mkdebian.sh when
# missing), MKDRACUT (the dracut builder, default tests/qemu/mkdracut.sh of
# this tree; it takes the module from its own tree). Output: a Markdown
# report on stdout, kept in WORKDIR/boot-systemd/report.md; per-boot data
# in runs.jsonl and serial logs in logs/. Not a test: nothing fails on
# slow results.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/options.sh
. "$ROOT/bench/options.sh"
bench_options ours,squashfs,erofs,dracut "$@"
WORK=$BENCH/boot-systemd
MEM=${MEM:-1024}
SMP=${SMP:-2}
TIMEOUT=${QEMU_TIMEOUT:-600}
MKDRACUT=$(realpath -m "${MKDRACUT:-$ROOT/tests/qemu/mkdracut.sh}")
DEBIAN_TAR=$(realpath -m "${DEBIAN_TAR:-$ROOT/work/qemu/debian-root.tar}")
[ -z "${CLOOPBOX:-}" ] || CLOOPBOX=$(realpath "$CLOOPBOX")
[ -z "${CLOOPBOX_BOOT:-}" ] || CLOOPBOX_BOOT=$(realpath "$CLOOPBOX_BOOT")
APPEND="console=ttyS0 panic=-1 loglevel=4 cloopbox.test=boot"
say() { printf '[boot-systemd] %s\n' "$*" >&2; }

# The Debian kernel, the Debian root (debian_tree, debian_ext4_cloop: the
# same root and image as the debian-systemd scenario), the squashfs
# contender's initramfs, the ISOs (initramfs/mklive.sh) and the boot
# runner: tests/qemu/lib.sh, shared with qemu-test.sh.
LOGS=$WORK/logs
# shellcheck source=tests/qemu/lib.sh
. "$ROOT/tests/qemu/lib.sh"
bench_setup boot-systemd

# ours_iso OUT NAME EXTRA: the ISO of one of our contenders, with EXTRA
# (kernel arguments, each with a leading space) after its command line.
ours_iso() {
    local img=ours.cloop args=$APPEND initrd=ours-initrd.gz
    case $2 in
        ours | ours-ublk) ;;
        ours-iso | ours-iso-ublk) img=ours-iso.cloop ;;
        ours-iso-small | ours-iso-ublk-small) img=ours-iso.cloop initrd=ours-small-initrd.gz ;;
        *) echo "boot-systemd: '$2@...': arguments after '@' go with ours, ours-ublk, ours-iso, ours-iso-ublk or their -small" >&2; exit 2 ;;
    esac
    [[ $2 != *-ublk* ]] || args+=" cloopbox.transport=ublk"
    MKLIVE_INITRD=$initrd make_iso "$1" "$args$3" "$img"
}

build() {
bench_binary
"$ROOT/tests/qemu/mkdebian.sh" "$DEBIAN_TAR"

command -v mkfs.erofs > /dev/null || { echo "boot-systemd: missing mkfs.erofs (apt-get install erofs-utils)" >&2; exit 1; }
say "root tree and images: ext4 and iso9660 in cloop (-B 65536 -L 9), squashfs (gzip, -b 65536), EROFS (lz4hc 12, -C65536)"
debian_tree tree
TREE_BYTES=$(du -sb tree | cut -f1)
debian_ext4_cloop tree ours.cloop
mklive --image-only --root tree --fs iso9660 --block-size 65536 --level 9 -o ours-iso.cloop
mksquashfs tree theirs.squashfs -noappend -quiet -no-progress -comp gzip -b 65536 >/dev/null
mkfs.erofs --quiet -zlz4hc,12 -C65536 theirs.erofs tree >/dev/null
rm -rf tree

say "initramfs: ours (initramfs/mkinitramfs.sh), a minimal busybox one, dracut if available"
"$ROOT/initramfs/mkinitramfs.sh" -q -b "$CLOOPBOX_BOOT" -k "$KVER" -m "$KERNEL_DIR/pkg" -o ours-initrd.gz
small_initrd ours-small-initrd.gz iso9660

squashfs_initrd theirs-initrd.gz
squashfs_initrd erofs-initrd.gz erofs

DRACUT_NOTE=""
rm -f dracut-initrd.img
if [ ! -x "$MKDRACUT" ]; then
    DRACUT_NOTE="no $MKDRACUT"
elif ! command -v dracut >/dev/null; then
    DRACUT_NOTE="dracut is not installed (apt-get install dracut-core)"
elif ! "$MKDRACUT" -o dracut-initrd.img -f systemd -b "$CLOOPBOX" -k "$KVER" \
    -m "$KERNEL_DIR/pkg" -w "$WORK/dracut-work" > dracut-build.log 2>&1; then
    DRACUT_NOTE="$MKDRACUT failed: $(tail -n 1 dracut-build.log)"
    rm -f dracut-initrd.img
fi
[ -z "$DRACUT_NOTE" ] || say "dracut: skipped ($DRACUT_NOTE)"

# --- ISOs: identical layout and boot loader (initramfs/mklive.sh) ---------
for c in ours ours-ublk ours-iso ours-iso-ublk ours-iso-small ours-iso-ublk-small; do ours_iso "$c.iso" "$c" ""; done
MKLIVE_INITRD=theirs-initrd.gz make_iso squashfs.iso "$APPEND" theirs.squashfs
MKLIVE_INITRD=erofs-initrd.gz make_iso erofs.iso "$APPEND" theirs.erofs
rm -f dracut.iso
[ ! -f dracut-initrd.img ] || MKLIVE_INITRD=dracut-initrd.img make_iso dracut.iso "$APPEND root=live:cloop" ours.cloop

size() { if [ -f "$1" ]; then stat -c %s "$1"; else echo null; fi; }
cat > sizes.json <<JSON
{"tree_bytes": $TREE_BYTES,
 "image": {"ours": $(size ours.cloop), "ours-ublk": $(size ours.cloop), "ours-iso": $(size ours-iso.cloop), "ours-iso-ublk": $(size ours-iso.cloop), "ours-iso-small": $(size ours-iso.cloop), "ours-iso-ublk-small": $(size ours-iso.cloop), "squashfs": $(size theirs.squashfs), "erofs": $(size theirs.erofs), "dracut": $(size ours.cloop)},
 "iso": {"ours": $(size ours.iso), "ours-ublk": $(size ours-ublk.iso), "ours-iso": $(size ours-iso.iso), "ours-iso-ublk": $(size ours-iso-ublk.iso), "ours-iso-small": $(size ours-iso-small.iso), "ours-iso-ublk-small": $(size ours-iso-ublk-small.iso), "squashfs": $(size squashfs.iso), "erofs": $(size erofs.iso), "dracut": $(size dracut.iso)},
 "initrd": {"ours": $(size ours-initrd.gz), "ours-ublk": $(size ours-initrd.gz), "ours-iso": $(size ours-initrd.gz), "ours-iso-ublk": $(size ours-initrd.gz), "ours-iso-small": $(size ours-small-initrd.gz), "ours-iso-ublk-small": $(size ours-small-initrd.gz), "squashfs": $(size theirs-initrd.gz), "erofs": $(size erofs-initrd.gz), "dracut": $(size dracut-initrd.img)},
 "dracut_note": "${DRACUT_NOTE//[\"\\]/\'}",
 "kernel": "$KVER", "qemu": "$(qemu-system-x86_64 --version | head -1)", "mem": $MEM, "smp": $SMP,
 "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')", "nproc": $(nproc),
 "host_kernel": "$(uname -r)", "append": "$APPEND", "binary": "$BINARY"}
JSON
}
if [ "$REUSE" = 0 ] || [ ! -f sizes.json ]; then build; else say "reusing the ISOs in $WORK"; fi

IFS=, read -ra WANTED <<< "$CONTENDERS"
for c in "${WANTED[@]}"; do
    [[ $c == *@* ]] || continue
    # With -r, an ISO of such a contender is made once and kept.
    [ "$REUSE" = 1 ] && [ -f "$(contender_iso "$c")" ] && continue
    [ -n "${CLOOPBOX_BIN:-}" ] || bench_binary # mklive's, after -r
    ours_iso "$(contender_iso "$c")" "$(contender_base "$c")" "$(contender_args "$c")"
done

# --- boots -------------------------------------------------------------------
# bench_boot NAME ROUND: one boot (lib.sh's boot: every console line
# stamped with the seconds since QEMU started, in logs/*.log.times; QEMU's
# CPU time at the guest's ROOT-UP: the emulation work, which, unlike wall
# time, hardly changes when other jobs load the host); QEMU is stopped at
# BOOT-DONE. One JSON line per boot goes to runs.jsonl.
BENCH_FAIL="Kernel panic|boot failed|cloopbox rescue|bench-init: no CD|emergency mode|Emergency shell|dracut Warning: FATAL|Could not boot"
bench_boot() {
    local name=$1 rnd=$2 iso log
    iso=$(contender_iso "$name")
    # The log and QEMU's monitor socket are named like the ISO: QEMU's
    # option syntax takes no '=' in a socket path.
    log=${iso%.iso}-$rnd
    # The guest prints ROOT-UP as soon as is-system-running returns; what it
    # reports afterwards (until BOOT-DONE) is not boot time.
    BOOT_MARK="^ROOT-UP multi-user" QEMU_SMP=$SMP QEMU_MEM=$MEM boot "$log" "^BOOT-DONE|$BENCH_FAIL" \
        -cdrom "$iso" -boot d
    PYTHONPATH="$ROOT/bench" python3 - "$name" "$rnd" "logs/$log.log.times" "$BOOT_END" "${BOOT_CPU:--}" "$BOOT_LOAD" "$BENCH_FAIL" <<'PY'
import json, re, sys
from bootstats import console, multiuser_marks
name, rnd, log_path, end, cpu, load, fail = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6]), re.compile(sys.argv[7])
lines = console(log_path)
cpu = None if cpu == "-" else float(cpu)
stop = {"timeout": "timeout", "exit": "QEMU exited"}.get(end)
if end == "until" and not any(t.startswith("BOOT-DONE") for _, t in lines):
    stop = "failure: " + next((t for _, t in lines if fail.search(t)), "?")
res = {"name": name, "round": rnd, "error": stop, "log": log_path, "load_at_start": load}
if cpu is not None:
    res["qemu_cpu_s"] = round(cpu, 2)
# Host-clock landmarks: the initramfs's first and last line (ours and the
# busybox one print them; dracut's do not), systemd's banner.
for t, text in lines:
    if re.match(r"(cloopbox: cloopbox .* live boot|bench-init: start)", text) and "initrd_start_s" not in res:
        res["initrd_start_s"] = t
    if re.match(r"(cloopbox: switching to the new root|bench-init: switching to the new root)", text):
        res["switch_s"] = t
    if text.startswith("Welcome to ") and "welcome_s" not in res:
        res["welcome_s"] = t
if "initrd_start_s" in res and "switch_s" in res:
    res["initrd_phase_s"] = round(res["switch_s"] - res["initrd_start_s"], 3)
for t, text in lines:
    multiuser_marks(res, t, text)
    m = re.match(r"BOOT-DISK: (nbd0|ublkb0|loop0) (\d+) (\d+)", text)
    if m and int(m.group(2)) > 0:
        res["dev"], res["dev_reqs"], res["dev_mb"] = m.group(1), int(m.group(2)), int(m.group(3)) * 512 / 1e6
    m = re.match(r"BOOT-DAEMON-COUNT: (cache [a-z ]+)=(\d+)", text)
    if m:
        res[m.group(1).replace(" ", "_")] = int(m.group(2))
    m = re.match(r"BOOT-DAEMON-CPU: \d+ (\d+) (\d+)", text)
    if m:
        res["daemon_cpu_s"] = res.get("daemon_cpu_s", 0) + (int(m.group(1)) + int(m.group(2))) / 100
    m = re.match(r"SD-ANALYZE: Startup finished in (.*) = ", text)
    if m:
        for part in m.group(1).split(" + "):
            v, what = part.rsplit(" (", 1)
            sec = sum(float(x[:-3]) * 60 if x.endswith("min") else float(x[:-2]) / 1000 if x.endswith("ms")
                      else float(x[:-1]) for x in v.split())
            res["sd_" + what.rstrip(")")] = sec
if "multiuser_host_s" not in res and not stop:
    res["error"] = "no BOOT-DONE"
if res.get("state") not in (None, "running"):
    res["error"] = f"system state {res['state']}"
with open("runs.jsonl", "a") as f:
    f.write(json.dumps(res) + "\n")
print(f"[boot-systemd] {name} round {rnd}: multi-user at {res.get('multiuser_host_s')} s "
      f"(guest uptime {res.get('multiuser_guest_s')} s)" + (f", ERROR {res['error']}" if res["error"] else ""),
      file=sys.stderr)
PY
}

NAMES=()
for c in "${WANTED[@]}"; do
    if [ -f "$(contender_iso "$c")" ]; then NAMES+=("$c"); else say "$c: no ISO, not booted"; fi
done
rm -f runs.jsonl logs/*.log logs/*.log.times
say "$RUNS rounds of ${#NAMES[@]} boots (${NAMES[*]}), rotated order, -smp $SMP"
cut -d' ' -f1-3 /proc/loadavg > load-before
bench_rounds bench_boot "${NAMES[@]}"
cut -d' ' -f1-3 /proc/loadavg > load-after

# --- report ------------------------------------------------------------------
PYTHONPATH="$ROOT/bench" python3 - "$(IFS=,; echo "${NAMES[*]}")" "$RUNS" "$SMP" <<'PY' | tee report.md
import json, statistics, sys
from bootstats import Stats
names = [n for n in sys.argv[1].split(",") if n]
sizes = json.load(open("sizes.json"))
runs = [json.loads(l) for l in open("runs.jsonl")]
for r in runs:
    if "multiuser_guest_s" in r:
        r["before_kernel_s"] = r["multiuser_host_s"] - r["multiuser_guest_s"]
    if "welcome_s" in r and "multiuser_host_s" in r:
        r["systemd_phase_s"] = r["multiuser_host_s"] - r["welcome_s"]

stats = Stats(runs)
vals, med, cell = stats.vals, stats.med, stats.cell

def ratio(n, key, ref="squashfs"):
    if n == ref or not med(n, key) or not med(ref, key):
        return "—"
    return f"{med(n, key) / med(ref, key):.2f}×"

def paired(n, key, ref):
    """The median of the per-round ratios against ref, (rounds): the
    boots of one round ran back to back, under about the same host load."""
    if n == ref:
        return "—"
    by_round = {}
    for r in stats.ok:
        if r.get(key) is not None and r["name"] in (n, ref):
            by_round.setdefault(r["round"], {})[r["name"]] = r[key]
    rs = [v[n] / v[ref] for v in by_round.values() if n in v and ref in v and v[ref]]
    return f"{statistics.median(rs):.2f}× ({len(rs)})" if rs else "—"

print(f"Host: {sizes['nproc']} cores ({sizes['cpu']}), Linux {sizes['host_kernel']}, {sizes['qemu']}; "
      f"`qemu-system-x86_64 -accel tcg -m {sizes['mem']} -smp {sys.argv[3]} -cdrom ISO -boot d`; guest kernel "
      f"Debian {sizes['kernel']}, `{sizes['append']}`. Load average {open('load-before').read().strip()} before, "
      f"{open('load-after').read().strip()} after (the 2 cores are shared with other jobs). {sys.argv[2]} boots "
      f"per contender, rotated order; medians (min–max). TCG timings are emulation timings. cloopbox: "
      f"{sizes['binary']}.\n")
print(f"Root tree {sizes['tree_bytes'] / 1e6:.0f} MB (Debian bookworm minbase + systemd-sysv, udev, kmod, "
      "e2fsprogs, procps, util-linux; apt lists, docs, man pages and locales removed).\n")
print("| contender | image bytes | ISO bytes | initramfs bytes |")
print("|---|---|---|---|")
for n in names:
    b = n.split("@")[0]  # arguments after '@' change only the command line
    print(f"| {n} | {sizes['image'][b]:,} | {sizes['iso'][b]:,} | {sizes['initrd'][b]:,} |")
if sizes.get("dracut_note"):
    print(f"\ndracut: not measured ({sizes['dracut_note']}).")
refs = [r for r in ("squashfs", "erofs") if r in names] or ["squashfs"]
print("\n| contender | QEMU start → multi-user (s) | "
      + " | ".join(f"vs {r} | paired vs {r} (rounds)" for r in refs)
      + " | QEMU CPU time to multi-user (s) | vs squashfs | host load (1 min) at the start |")
print("|---|---|" + "---|---|" * len(refs) + "---|---|---|")
for n in names:
    vs = " | ".join(f"{ratio(n, 'multiuser_host_s', r)} | {paired(n, 'multiuser_host_s', r)}" for r in refs)
    print(f"| {n} | {cell(n, 'multiuser_host_s', '{:.2f}')} | {vs} | "
          f"{cell(n, 'qemu_cpu_s', '{:.1f}')} | {ratio(n, 'qemu_cpu_s')} | {cell(n, 'load_at_start', '{:.1f}')} |")
print("\nWhere the time goes (wall time; host clock unless marked guest):\n")
print("| contender | guest uptime at multi-user (s) | before the kernel (s) "
      "| initramfs first → last line (s) | systemd banner → multi-user (s) "
      "| systemd-analyze kernel / initrd / userspace (s) |")
print("|---|---|---|---|---|---|")
for n in names:
    sd = " / ".join(cell(n, "sd_" + k, "{:.1f}") if vals(n, "sd_" + k) else "—"
                    for k in ("kernel", "initrd", "userspace"))
    print(f"| {n} | {cell(n, 'multiuser_guest_s', '{:.2f}')} | {cell(n, 'before_kernel_s', '{:.2f}')} | "
          f"{cell(n, 'initrd_phase_s', '{:.2f}')} | {cell(n, 'systemd_phase_s', '{:.2f}')} | {sd} |")
print("\nWhat the boot read from the root device (the guest's /sys/block/DEV/stat at multi-user), the "
      "CPU time of the root-storage daemon (cloopd) by then, and its cache's counters (control socket, "
      "`cowdev -l -v`: blocks loaded on a reader's miss, loaded ahead by the prefetcher, and of those read):\n")
print("| contender | device | read requests | MB read | KiB per request | cloopd CPU (s) "
      "| cache misses | prefetched | prefetched and read |")
print("|---|---|---|---|---|---|---|---|---|")
for n in names:
    devs = sorted({r["dev"] for r in runs if r["name"] == n and r.get("dev")})
    for r in runs:
        if r.get("dev_reqs"):
            r["dev_kib"] = r["dev_mb"] * 1e6 / 1024 / r["dev_reqs"]
    print(f"| {n} | {', '.join(devs) or '—'} | {cell(n, 'dev_reqs', '{:.0f}')} | {cell(n, 'dev_mb', '{:.0f}')} | "
          f"{cell(n, 'dev_kib', '{:.0f}')} | {cell(n, 'daemon_cpu_s', '{:.1f}')} | "
          + " | ".join(cell(n, k, "{:.0f}") for k in ("cache_misses", "cache_prefetched", "cache_prefetch_hit"))
          + " |")
print()
for r in runs:
    if r["error"]:
        print(f"FAILED: {r['name']} round {r['round']}: {r['error']} ({r['log']})\n")
PY
