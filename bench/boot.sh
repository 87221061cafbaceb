#!/usr/bin/env bash
# Live-boot benchmark: the cloopbox initramfs against the usual modern live
# boot (a busybox initramfs that loop-mounts a squashfs from the CD and puts
# overlayfs on top), same kernel, same root tree, same ISO layout, under
# QEMU -accel tcg.
#
#   bench/boot.sh [-n RUNS] [-c CONTENDER,...] [-r] [WORKDIR]   (default ./work/bench)
#
# -r reuses the ISOs of the previous run (no rebuild) and only boots.
#
# Contenders (each a hybrid ISO of initramfs/mklive.sh, booted by isolinux,
# the image at KNOPPIX/KNOPPIX):
#   ours-iso   cloopbox initramfs; iso9660 in cloop (64 KiB blocks, zlib -L 9),
#              served by cloopd on /dev/nbd0, overlayfs on top (as Knoppix)
#   ours-ext4  cloopbox initramfs; ext4 in cloop, block-level cowfile on tmpfs
#   squashfs   busybox initramfs: insmod, mount the CD, losetup + mount the
#              squashfs (gzip, -b 65536), overlayfs with a tmpfs upper
#
# The root tree is the Debian bookworm minbase of bench/rootfs-image.sh (its
# debootstrap tree, reused when present) plus a static busybox at
# /opt/bench/busybox and a /sbin/init that prints ROOT-UP (with the guest's
# uptime and its dmesg landmarks), drops the page cache, times
# `busybox tar cf /dev/null` over every top-level directory except the API
# filesystems (GNU tar does not read file data when the archive is
# /dev/null; busybox tar does), and powers off. Boots run in rounds, one boot
# of each contender per round in a rotated order; the report gives medians
# with min-max. Boot time is measured on the host, from starting QEMU to the
# ROOT-UP line on the serial console. TCG timings are emulation timings.
#
# Environment: RUNS (default 5), SMP (the -smp values to run, default "1 2":
# one vCPU gives stable CPU-bound timings, two are what qemu-test.sh uses),
# MEM (guest MiB, 1024), QEMU_TIMEOUT (seconds per boot, 600), CLOOPBOX (the
# static binary for our initramfs; default: scripts/build-static.sh).
# Output: a Markdown report on stdout, kept in WORKDIR/boot/boot-report.md;
# per-boot data in WORKDIR/boot/runs.jsonl and serial logs in
# WORKDIR/boot/logs. Not a test: nothing fails on slow results.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/options.sh
. "$ROOT/bench/options.sh"
bench_options 36 ours-iso,ours-ext4,squashfs "$@"
WORK=$BENCH/boot
MEM=${MEM:-1024}
SMP=${SMP:-1 2}
TIMEOUT=${QEMU_TIMEOUT:-600}
[ -z "${CLOOPBOX:-}" ] || CLOOPBOX=$(realpath "$CLOOPBOX")
APPEND="console=ttyS0 panic=-1 loglevel=4"
say() { printf '[boot-bench] %s\n' "$*" >&2; }

# The Debian kernel, the images, ISOs (initramfs/mklive.sh) and the boot
# runner: tests/qemu/lib.sh, shared with qemu-test.sh.
LOGS=$WORK/logs
# shellcheck source=tests/qemu/lib.sh
. "$ROOT/tests/qemu/lib.sh"
bench_setup boot-bench

# build: the root tree, the images, both initramfs images and the ISOs,
# into $WORK; sizes.json records what the report needs about them.
build() {
bench_binary
"$ROOT/bench/rootfs-image.sh" "$BENCH" >/dev/null

# --- the root tree -----------------------------------------------------------
say "root tree: $BENCH/rootfs + busybox + the benchmark's /sbin/init"
rm -rf tree
cp -a "$BENCH/rootfs" tree
rm -f tree/.complete
mkdir -p tree/opt/bench
cp $BUSYBOX tree/opt/bench/busybox
[ ! -e tree/sbin/init ] || { echo "boot-bench: the root tree already has a /sbin/init" >&2; exit 1; }
install -m 0755 "$GUEST/bench-init.sh" tree/sbin/init
TREE_BYTES=$(du -sb tree | cut -f1)

# --- images ------------------------------------------------------------------
say "images: iso9660 and ext4 in cloop (-B 65536 -L 9), squashfs (gzip, -b 65536)"
cloop_of iso9660 tree ours-iso.cloop
# ext4 with a quarter free and 4 KiB blocks (mkfs.ext4 picks 1 KiB below
# 512 MiB; a real live root is bigger).
EXT4_MB=$((TREE_BYTES * 4 / 3 / 1048576 + 64))
cloop_of ext4 tree ours-ext4.cloop --fs-size "$EXT4_MB"
FS_ISO_BYTES=$("$CLOOPBOX" cloopinfo ours-iso.cloop | awk '/^uncompressed size:/ { print $3 }')
FS_EXT4_BYTES=$((EXT4_MB * 1048576))
mksquashfs tree theirs.squashfs -noappend -quiet -no-progress -comp gzip -b 65536 >/dev/null

# --- initramfs images --------------------------------------------------------
say "initramfs: ours (initramfs/mkinitramfs.sh) and a minimal busybox one"
"$ROOT/initramfs/mkinitramfs.sh" -q -b "$CLOOPBOX" -k "$KVER" -m "$KERNEL_DIR/pkg" -o ours-initrd.gz
# Size only: ours without the busybox rescue shell.
"$ROOT/initramfs/mkinitramfs.sh" -q -b "$CLOOPBOX" -k "$KVER" -m "$KERNEL_DIR/pkg" -s none -o ours-initrd-noshell.gz

squashfs_initrd theirs-initrd.gz

# --- ISOs: identical layout and boot loader (initramfs/mklive.sh) -------------
for c in ours-iso ours-ext4; do MKLIVE_INITRD=ours-initrd.gz make_iso "$c.iso" "$APPEND" "$c.cloop"; done
MKLIVE_INITRD=theirs-initrd.gz make_iso squashfs.iso "$APPEND" theirs.squashfs

cat > sizes.json <<JSON
{"tree_bytes": $TREE_BYTES, "fs_iso_bytes": $FS_ISO_BYTES, "fs_ext4_bytes": $FS_EXT4_BYTES,
 "image": {"ours-iso": $(stat -c %s ours-iso.cloop), "ours-ext4": $(stat -c %s ours-ext4.cloop), "squashfs": $(stat -c %s theirs.squashfs)},
 "iso": {"ours-iso": $(stat -c %s ours-iso.iso), "ours-ext4": $(stat -c %s ours-ext4.iso), "squashfs": $(stat -c %s squashfs.iso)},
 "initrd": {"ours-iso": $(stat -c %s ours-initrd.gz), "ours-ext4": $(stat -c %s ours-initrd.gz), "squashfs": $(stat -c %s theirs-initrd.gz)},
 "initrd_ours_noshell": $(stat -c %s ours-initrd-noshell.gz),
 "their_modules": "$SQUASHFS_MODULES",
 "kernel": "$KVER", "qemu": "$(qemu-system-x86_64 --version | head -1)", "mem": $MEM,
 "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')", "nproc": $(nproc),
 "host_kernel": "$(uname -r)", "append": "$APPEND", "binary": "$BINARY"}
JSON

}
if [ "$REUSE" = 0 ] || [ ! -f sizes.json ]; then build; else say "reusing the ISOs in $WORK"; fi

# --- boots -------------------------------------------------------------------
# bench_boot NAME SMP ROUND: one boot (lib.sh's boot: every console line
# stamped with the seconds since QEMU was started, in logs/*.log.times);
# one JSON line per boot goes to runs.jsonl.
bench_boot() {
    local name=$1 smp=$2 rnd=$3 log=$1-smp$2-$3
    QEMU_SMP=$smp QEMU_MEM=$MEM boot "$log" "Kernel panic|boot failed|cloopbox rescue|bench-init: no CD" \
        -cdrom "$name.iso" -boot d
    python3 - "$name" "$smp" "$rnd" "logs/$log.log.times" "$BOOT_TOTAL" "$BOOT_END" <<'PY'
import json, re, sys
name, smp, rnd, log_path, total, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5]), sys.argv[6]
lines = []
for l in open(log_path, errors="replace", newline="\n"):
    t, _, text = l.rstrip("\n").partition(" ")
    lines.append((float(t), text))
stop = "timeout" if end == "timeout" else None
if end == "until":
    stop = "failure: " + next((t for _, t in lines if re.search(r"Kernel panic|boot failed|cloopbox rescue|bench-init: no CD", t)), "?")
res = {"name": name, "smp": smp, "round": rnd, "total_s": round(total, 3), "error": stop, "log": log_path}
snap = {"A": {}, "B": {}}
for t, text in lines:
    m = re.match(r"ROOT-UP uptime=([\d.]+)", text)
    if m:
        res["rootup_host_s"] = round(t, 3)
        res["rootup_guest_s"] = float(m.group(1))
    m = re.match(r"DMESG: \[\s*([\d.]+)\] Run /init", text)
    if m:
        res["run_init_guest_s"] = float(m.group(1))
    m = re.match(r"PIPE-210MB ([\d.]+) ([\d.]+)", text)
    if m:
        res["pipe_s"] = round(float(m.group(2)) - float(m.group(1)), 2)
    # The initramfs's module loading, from its own kernel-log lines.
    m = re.match(r"DMESG: \[\s*([\d.]+)\] (cloopbox: cloopbox .* live boot|bench-init: start)", text)
    if m:
        res["init_start_guest_s"] = float(m.group(1))
    m = re.match(r"DMESG: \[\s*([\d.]+)\] (cloopbox: modules loaded|bench-init: modules loaded)", text)
    if m and "init_start_guest_s" in res:
        res["modules_s"] = round(float(m.group(1)) - res["init_start_guest_s"], 3)
    m = re.match(r"ROOTFS: (.*)", text)
    if m:
        res["rootfs"] = m.group(1)
    m = re.match(r"TAR-RCHAR (\d+)", text)
    if m:
        res["tar_bytes"] = int(m.group(1))
    m = re.match(r"TAR-CPU (\d+) (\d+)", text)
    if m:
        res["tar_own_cpu_s"] = (int(m.group(1)) + int(m.group(2))) / 100
    m = re.match(r"TAR-STATUS (\d+)", text)
    if m and m.group(1) != "0":
        stop = stop or f"tar exit status {m.group(1)}"
    m = re.match(r"SNAP-([AB]) (.*)", text)
    if m:
        k, rest = m.group(1), m.group(2).split()
        if rest[0] == "uptime":
            snap[k]["uptime"] = float(rest[1])
        elif rest[0] == "cpu":
            snap[k]["cpu"] = [int(x) for x in rest[1:]]
        elif rest[0] == "disk":
            snap[k]["disk_" + rest[1]] = int(rest[2]) * 512
            snap[k]["reqs_" + rest[1]] = int(rest[3])
        elif rest[0] == "task" and len(rest) == 5:
            snap[k].setdefault("tasks", {})[rest[1]] = (rest[2], int(rest[3]), int(rest[4]))
a, b = snap["A"], snap["B"]
if "uptime" in a and "uptime" in b:
    res["tar_s"] = round(b["uptime"] - a["uptime"], 2)
    ca, cb = a.get("cpu"), b.get("cpu")
    if ca and cb:
        d = [y - x for x, y in zip(ca, cb)]
        tot = sum(d[:8]) or 1
        # user+nice, system+irq+softirq, iowait, idle: shares of all CPUs
        res["tar_cpu"] = {"user": (d[0] + d[1]) / tot, "system": (d[2] + d[5] + d[6]) / tot,
                          "iowait": d[4] / tot, "idle": d[3] / tot}
    for k in b:
        if k.startswith(("disk_", "reqs_")):
            res["tar_" + k] = b[k] - a.get(k, 0)
    # CPU seconds per task during the tar (USER_HZ is 100); kworkers are
    # grouped by what they run ("kworker/1:1H-kblockd" -> "kworker:kblockd").
    tasks = {}
    for pid, (task, ut, st) in b.get("tasks", {}).items():
        ua, sa = a.get("tasks", {}).get(pid, (task, 0, 0))[1:]
        if task.startswith("kworker/"):
            task = "kworker:" + (task.split("-", 1)[1] if "-" in task else "idle")
        u, s_ = tasks.get(task, (0, 0))
        tasks[task] = (u + (ut - ua) / 100, s_ + (st - sa) / 100)
    res["tar_tasks"] = {t: [round(u, 2), round(s_, 2)] for t, (u, s_) in tasks.items() if u + s_ > 0}
    if "@daemon" in tasks:
        res["tar_daemon_cpu_s"] = round(sum(tasks["@daemon"]), 2)
    res["tar_kthreads_cpu_s"] = round(sum(u + s_ for t, (u, s_) in tasks.items()
                                          if t.startswith(("kworker", "ksoftirqd", "loop", "scsi", "rcu"))), 2)
if "BENCH-DONE" not in [t for _, t in lines] and not stop:
    stop = "no BENCH-DONE"
res["error"] = stop
with open("runs.jsonl", "a") as f:
    f.write(json.dumps(res) + "\n")
print(f"[boot-bench] {name} smp {smp} round {rnd}: root up {res.get('rootup_host_s')} s, "
      f"tar {res.get('tar_s')} s, {res.get('tar_bytes', 0) / 1e6:.0f} MB, total {total:.1f} s"
      + (f", ERROR {res['error']}" if res["error"] else ""), file=sys.stderr)
PY
}

IFS=, read -ra NAMES <<< "$CONTENDERS"
read -ra SMPS <<< "$SMP"
PAIRS=()
for s in "${SMPS[@]}"; do for c in "${NAMES[@]}"; do PAIRS+=("$c $s"); done; done
rm -f runs.jsonl logs/*.log logs/*.log.times
say "$RUNS rounds of ${#PAIRS[@]} boots (${NAMES[*]} at -smp ${SMPS[*]}), rotated order"
cut -d' ' -f1-3 /proc/loadavg > load-before
for ((r = 1; r <= RUNS; r++)); do
    n=${#PAIRS[@]}
    for ((i = 0; i < n; i++)); do
        # shellcheck disable=SC2086
        bench_boot ${PAIRS[$(((i + r - 1) % n))]} "$r"
    done
done
cut -d' ' -f1-3 /proc/loadavg > load-after

# --- report ------------------------------------------------------------------
python3 - "$CONTENDERS" "$SMP" "$RUNS" <<'PY' | tee boot-report.md
import json, statistics, sys
names, smps = sys.argv[1].split(","), [int(x) for x in sys.argv[2].split()]
sizes = json.load(open("sizes.json"))
runs = [json.loads(l) for l in open("runs.jsonl")]
bad = [r for r in runs if r["error"] or "tar_s" not in r]
for r in runs:
    if "run_init_guest_s" in r and "rootup_guest_s" in r:
        r["before_kernel_s"] = r["rootup_host_s"] - r["rootup_guest_s"]
        r["init_phase_s"] = r["rootup_guest_s"] - r["run_init_guest_s"]
    if r.get("tar_s"):
        r["tar_mb"] = r["tar_bytes"] / 1e6
        r["mbps"] = r["tar_bytes"] / 1e6 / r["tar_s"]
    for dev in ("nbd0", "loop0"):
        if r.get(f"tar_reqs_{dev}"):
            r["dev_mb"] = r[f"tar_disk_{dev}"] / 1e6
            r["dev_req_kib"] = r[f"tar_disk_{dev}"] / r[f"tar_reqs_{dev}"] / 1024
    if "tar_cpu" in r:
        r.update({"cpu_" + k: v * 100 for k, v in r["tar_cpu"].items()})

def vals(n, smp, key):
    return [r[key] for r in runs if r["name"] == n and r["smp"] == smp and not r["error"]
            and r.get(key) is not None]

def med(n, smp, key):
    v = vals(n, smp, key)
    return statistics.median(v) if v else None

def cell(n, smp, key, fmt="{:.1f}", spread=True):
    v = vals(n, smp, key)
    if not v:
        return "—"
    m = fmt.format(statistics.median(v))
    return f"{m} ({fmt.format(min(v))}–{fmt.format(max(v))})" if spread and len(v) > 1 else m

def ratio(n, smp, key):
    ref = "squashfs"
    if n == ref or ref not in names or not med(n, smp, key) or not med(ref, smp, key):
        return "—"
    return f"{med(n, smp, key) / med(ref, smp, key):.2f}×"

print(f"Host: {sizes['nproc']} cores ({sizes['cpu']}), Linux {sizes['host_kernel']}, {sizes['qemu']}; "
      f"`qemu-system-x86_64 -accel tcg -m {sizes['mem']} -smp N -cdrom ISO -boot d`; guest kernel Debian "
      f"{sizes['kernel']}, `{sizes['append']}`. Load average {open('load-before').read().strip()} before, "
      f"{open('load-after').read().strip()} after. {sys.argv[3]} boots per row, interleaved; medians "
      f"(min–max). TCG timings are emulation timings. cloopbox: {sizes['binary']}.\n")
print(f"Root tree {sizes['tree_bytes'] / 1e6:.0f} MB (iso9660 {sizes['fs_iso_bytes'] / 1e6:.0f} MB, ext4 "
      f"{sizes['fs_ext4_bytes'] / 1e6:.0f} MB before compression).\n")
print("| contender | image bytes | ISO bytes | initramfs bytes (gzip -9) |")
print("|---|---|---|---|")
for n in names:
    print(f"| {n} | {sizes['image'][n]:,} | {sizes['iso'][n]:,} | {sizes['initrd'][n]:,} |")
print(f"\nOur initramfs without the busybox rescue shell (`mkinitramfs.sh -s none`): "
      f"{sizes['initrd_ours_noshell']:,} bytes. Theirs holds busybox and {sizes['their_modules']}.\n")
for smp in smps:
    print(f"**-smp {smp}: boot** (ratio: ours / squashfs; below 1 ours is faster)\n")
    print("| contender | QEMU start → ROOT-UP (s) | ratio | before the kernel (s) | kernel → /init (s) | /init → ROOT-UP (s) | of which modules (s) |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        print(f"| {n} | {cell(n, smp, 'rootup_host_s', '{:.2f}')} | {ratio(n, smp, 'rootup_host_s')} | "
              f"{cell(n, smp, 'before_kernel_s', '{:.2f}', False)} | {cell(n, smp, 'run_init_guest_s', '{:.2f}', False)} | "
              f"{cell(n, smp, 'init_phase_s', '{:.2f}', False)} | {cell(n, smp, 'modules_s', '{:.2f}', False)} |")
    print(f"\n**-smp {smp}: reading the whole root** (`busybox tar cf /dev/null`, page cache dropped first; "
          "CPU shares are of all guest CPUs during the tar)\n")
    print("| contender | tar (s) | ratio | MB read | MB/s | user / system / iowait / idle % | tar CPU (s) | cloopd CPU (s) | kernel threads CPU (s) | device MB, KiB per request |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in names:
        shares = " / ".join(cell(n, smp, "cpu_" + k, "{:.0f}", False) for k in ("user", "system", "iowait", "idle"))
        print(f"| {n} | {cell(n, smp, 'tar_s')} | {ratio(n, smp, 'tar_s')} | {cell(n, smp, 'tar_mb', '{:.0f}', False)} | "
              f"{cell(n, smp, 'mbps')} | {shares} | {cell(n, smp, 'tar_own_cpu_s', '{:.1f}', False)} | "
              f"{cell(n, smp, 'tar_daemon_cpu_s', '{:.1f}', False)} | {cell(n, smp, 'tar_kthreads_cpu_s', '{:.1f}', False)} | "
              f"{cell(n, smp, 'dev_mb', '{:.0f}', False)}, {cell(n, smp, 'dev_req_kib', '{:.0f}', False)} |")
    pipe = [r["pipe_s"] for r in runs if r["smp"] == smp and r.get("pipe_s")]
    if pipe:
        print(f"\nCopying 210 MB through a pipe in the same guests (two copies, as through the NBD socket): "
              f"{statistics.median(pipe):.1f} s (median of all boots).")
    print()
for r in bad:
    print(f"FAILED: {r['name']} -smp {r['smp']} round {r['round']}: {r['error'] or 'no tar result'} ({r['log']})\n")
PY
