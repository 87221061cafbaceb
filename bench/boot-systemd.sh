#!/usr/bin/env bash
# Boot-to-multi-user benchmark: a real Debian bookworm system with systemd
# (the root of the debian-systemd scenario, tests/qemu/debian.sh) booted
# from a CD under QEMU -accel tcg, through
#   ours      the cloopbox initramfs: ext4 in cloop (64 KiB blocks, zlib 9)
#             on /dev/nbd0 with the block-level cowfile on tmpfs
#   squashfs  the usual live boot, a busybox initramfs: insmod, mount the
#             CD, losetup + mount the squashfs (gzip, -b 65536), overlayfs
#             with a tmpfs upper (the contender of bench/boot.sh)
#   dracut    a dracut initramfs (systemd in the initrd) with our module
#             dracut-module/50cloopbox, built by tests/qemu/mkdracut.sh,
#             booting the same image as ours with root=live:cloop. Skipped,
#             with a note in the report, when that script or dracut is
#             missing.
# Same kernel, same root tree, same ISO layout and boot loader.
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
# binary; default scripts/build-static.sh), DEBIAN_TAR (the root tarball,
# default work/qemu/debian-root.tar, built by tests/qemu/mkdebian.sh when
# missing), MKDRACUT (the dracut builder, default tests/qemu/mkdracut.sh of
# this tree; it takes the module from its own tree). Output: a Markdown
# report on stdout, kept in WORKDIR/boot-systemd/report.md; per-boot data
# in runs.jsonl and serial logs in logs/. Not a test: nothing fails on
# slow results.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
CONTENDERS=ours,squashfs,dracut
REUSE=0
while getopts "n:c:rh" opt; do
    case $opt in
        n) RUNS=$OPTARG ;;
        c) CONTENDERS=$OPTARG ;;
        r) REUSE=1 ;;
        h) sed -n '2,41p' "$0"; exit 0 ;;
        *) sed -n '2,41p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
BENCH=$(mkdir -p "${1:-$ROOT/work/bench}" && cd "${1:-$ROOT/work/bench}" && pwd)
WORK=$BENCH/boot-systemd
MEM=${MEM:-1024}
SMP=${SMP:-2}
TIMEOUT=${QEMU_TIMEOUT:-600}
MKDRACUT=$(realpath -m "${MKDRACUT:-$ROOT/tests/qemu/mkdracut.sh}")
DEBIAN_TAR=$(realpath -m "${DEBIAN_TAR:-$ROOT/work/qemu/debian-root.tar}")
[ -z "${CLOOPBOX:-}" ] || CLOOPBOX=$(realpath "$CLOOPBOX")
APPEND="console=ttyS0 panic=-1 loglevel=4 cloopbox.test=boot"
say() { printf '[boot-systemd] %s\n' "$*" >&2; }

need() { # COMMAND PACKAGE
    command -v "$1" >/dev/null || { echo "boot-systemd: missing $1 (apt-get install $2)" >&2; exit 1; }
}
need qemu-system-x86_64 qemu-system-x86
need xorriso xorriso
need mksquashfs squashfs-tools
need mkfs.ext4 e2fsprogs
need cpio cpio
need depmod kmod
need python3 python3
[ -f /usr/lib/ISOLINUX/isolinux.bin ] || { echo "boot-systemd: apt-get install isolinux" >&2; exit 1; }
[ -f /usr/lib/syslinux/modules/bios/ldlinux.c32 ] || { echo "boot-systemd: apt-get install syslinux-common" >&2; exit 1; }
BUSYBOX=/bin/busybox
if [ ! -x $BUSYBOX ] || readelf -lW $BUSYBOX | grep -q INTERP; then
    echo "boot-systemd: $BUSYBOX must be static (apt-get install busybox-static)" >&2
    exit 1
fi

# The Debian kernel that qemu-test.sh unpacks (dpkg -x, not installed).
KDIR=$ROOT/work/qemu/kernel
if [ ! -f "$KDIR/vmlinuz" ]; then
    say "no kernel at $KDIR: running ./qemu-test.sh smoke to fetch it"
    "$ROOT/qemu-test.sh" smoke >&2
fi
KERNEL=$KDIR/vmlinuz
KVER=$(cat "$KDIR/version")
MODSRC=$KDIR/pkg/lib/modules/$KVER

# debian_tree and debian_ext4_cloop: the same root and image as the
# debian-systemd scenario.
# shellcheck disable=SC2034 # the scenario file appends its names to it
ALL_SCENARIOS=()
# shellcheck source=tests/qemu/debian.sh
. "$ROOT/tests/qemu/debian.sh"

mkdir -p "$WORK/logs"
cd "$WORK"

build() {
if [ -n "${CLOOPBOX:-}" ]; then
    BINARY="$CLOOPBOX"
else
    CLOOPBOX=$("$ROOT/scripts/build-static.sh")
    BINARY="scripts/build-static.sh at $(git -C "$ROOT" describe --always --dirty)"
fi
# shellcheck disable=SC2034 # debian_ext4_cloop compresses with it
CLOOPBOX_BIN=$CLOOPBOX
"$ROOT/tests/qemu/mkdebian.sh" "$DEBIAN_TAR"

say "root tree and images: ext4 in cloop (-B 65536 -L 9), squashfs (gzip, -b 65536)"
debian_tree tree
TREE_BYTES=$(du -sb tree | cut -f1)
debian_ext4_cloop tree ours.cloop
mksquashfs tree theirs.squashfs -noappend -quiet -no-progress -comp gzip -b 65536 >/dev/null
rm -rf tree

say "initramfs: ours (initramfs/mkinitramfs.sh), a minimal busybox one, dracut if available"
"$ROOT/initramfs/mkinitramfs.sh" -q -b "$CLOOPBOX" -k "$KVER" -m "$KDIR/pkg" -o ours-initrd.gz

# Their modules in dependency order, from the same kernel (as bench/boot.sh).
scratch=$WORK/modscratch
rm -rf "$scratch" && mkdir -p "$scratch/lib/modules/$KVER"
ln -s "$MODSRC/kernel" "$scratch/lib/modules/$KVER/kernel"
cp "$MODSRC"/modules.builtin* "$MODSRC/modules.order" "$scratch/lib/modules/$KVER/"
depmod -b "$scratch" "$KVER"
mapfile -t THEIR_MODS < <(modprobe -d "$scratch" -S "$KVER" --show-depends -a ata_piix sr_mod isofs loop squashfs overlay |
    awk '$1 == "insmod" && !seen[$2]++ { print $2 }')
rm -rf theirs-initrd && mkdir -p theirs-initrd/{bin,dev,proc,sys,run,newroot,lib/modules}
cp $BUSYBOX theirs-initrd/bin/busybox
for a in sh mount umount insmod losetup mkdir switch_root sleep cat cut echo; do ln -s busybox "theirs-initrd/bin/$a"; done
INSMODS=""
for m in "${THEIR_MODS[@]}"; do
    cp "$m" theirs-initrd/lib/modules/
    INSMODS+="insmod /lib/modules/$(basename "$m")"$'\n'
done
cat > theirs-initrd/init <<INIT
#!/bin/sh
# The usual live boot, reduced to its steps: modules, the CD, the squashfs
# on a loop device, overlayfs with a tmpfs upper, switch_root.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs -o mode=0755 devtmpfs /dev
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
echo "bench-init: start"
$INSMODS
mkdir -p /run/live/medium /run/live/rootfs /run/live/overlay
n=0
until mount -t iso9660 -o ro /dev/sr0 /run/live/medium 2> /dev/null; do
    n=\$((n + 1))
    [ \$n -lt 240 ] || { echo "bench-init: no CD"; exec sh; }
    sleep 0.25
done
losetup -r /dev/loop0 /run/live/medium/KNOPPIX/KNOPPIX
mount -t squashfs -o ro /dev/loop0 /run/live/rootfs
mount -t tmpfs -o mode=0755 tmpfs /run/live/overlay
mkdir -p /run/live/overlay/upper /run/live/overlay/work
mount -t overlay -o lowerdir=/run/live/rootfs,upperdir=/run/live/overlay/upper,workdir=/run/live/overlay/work overlay /newroot
for d in dev proc sys run; do mount --move /\$d /newroot/\$d; done
echo "bench-init: switching to the new root"
exec switch_root /newroot /sbin/init
INIT
chmod 0755 theirs-initrd/init
find theirs-initrd -exec touch -h -d @0 {} +
(cd theirs-initrd && find . -mindepth 1 -printf '%P\0' | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --reproducible) |
    gzip -9 -n > theirs-initrd.gz

DRACUT_NOTE=""
rm -f dracut-initrd.img
if [ ! -x "$MKDRACUT" ]; then
    DRACUT_NOTE="no $MKDRACUT"
elif ! command -v dracut >/dev/null; then
    DRACUT_NOTE="dracut is not installed (apt-get install dracut-core)"
elif ! "$MKDRACUT" -o dracut-initrd.img -f systemd -b "$CLOOPBOX" -k "$KVER" \
    -m "$KDIR/pkg" -w "$WORK/dracut-work" > dracut-build.log 2>&1; then
    DRACUT_NOTE="$MKDRACUT failed: $(tail -n 1 dracut-build.log)"
    rm -f dracut-initrd.img
fi
[ -z "$DRACUT_NOTE" ] || say "dracut: skipped ($DRACUT_NOTE)"

# --- ISOs: identical layout and boot loader ------------------------------
iso() { # OUT INITRD IMAGE APPEND
    local t=$WORK/isotree
    rm -rf "$t" && mkdir -p "$t/boot/isolinux" "$t/KNOPPIX"
    cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$t/boot/isolinux/"
    cp "$KERNEL" "$t/boot/isolinux/linux"
    cp "$2" "$t/boot/isolinux/initrd.gz"
    printf 'DEFAULT live\nPROMPT 0\nTIMEOUT 0\nLABEL live\n  KERNEL linux\n  APPEND initrd=initrd.gz %s\n' \
        "$4" > "$t/boot/isolinux/isolinux.cfg"
    ln "$3" "$t/KNOPPIX/KNOPPIX"
    xorriso -as mkisofs -quiet -R -J -V KNOPPIX -o "$1" \
        -b boot/isolinux/isolinux.bin -c boot/isolinux/boot.cat -no-emul-boot -boot-load-size 4 \
        -boot-info-table -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin "$t" 2>/dev/null
    rm -rf "$t"
}
iso ours.iso ours-initrd.gz ours.cloop "$APPEND"
iso squashfs.iso theirs-initrd.gz theirs.squashfs "$APPEND"
rm -f dracut.iso
[ ! -f dracut-initrd.img ] || iso dracut.iso dracut-initrd.img ours.cloop "$APPEND root=live:cloop"

size() { if [ -f "$1" ]; then stat -c %s "$1"; else echo null; fi; }
cat > sizes.json <<JSON
{"tree_bytes": $TREE_BYTES,
 "image": {"ours": $(size ours.cloop), "squashfs": $(size theirs.squashfs), "dracut": $(size ours.cloop)},
 "iso": {"ours": $(size ours.iso), "squashfs": $(size squashfs.iso), "dracut": $(size dracut.iso)},
 "initrd": {"ours": $(size ours-initrd.gz), "squashfs": $(size theirs-initrd.gz), "dracut": $(size dracut-initrd.img)},
 "dracut_note": "${DRACUT_NOTE//[\"\\]/\'}",
 "kernel": "$KVER", "qemu": "$(qemu-system-x86_64 --version | head -1)", "mem": $MEM, "smp": $SMP,
 "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')", "nproc": $(nproc),
 "host_kernel": "$(uname -r)", "append": "$APPEND", "binary": "$BINARY"}
JSON
}
if [ "$REUSE" = 0 ] || [ ! -f sizes.json ]; then build; else say "reusing the ISOs in $WORK"; fi

# --- boots -------------------------------------------------------------------
# boot NAME ROUND: one boot, serial console on a pipe, every line stamped
# with the seconds since QEMU started; QEMU is stopped at BOOT-DONE. One
# JSON line per boot goes to runs.jsonl.
boot() {
    python3 - "$1" "$2" "$TIMEOUT" "$MEM" "$SMP" <<'PY'
import json, os, re, select, subprocess, sys, time
name, rnd, timeout, mem, smp = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
log_path = f"logs/{name}-{rnd}.log"
cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", mem, "-smp", smp, "-nodefaults", "-no-reboot",
       "-cdrom", f"{name}.iso", "-boot", "d", "-display", "none", "-serial", "stdio"]
fail = re.compile(r"Kernel panic|boot failed|cloopbox rescue|bench-init: no CD|emergency mode|"
                  r"Emergency shell|dracut Warning: FATAL|Could not boot")
lines, buf, stop, done, cpu = [], b"", None, False, None
load = float(open("/proc/loadavg").read().split()[0])
t0 = time.monotonic()
p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
tick = os.sysconf("SC_CLK_TCK")

def qemu_cpu():
    # user + system time of all QEMU threads: the emulation work, which
    # (unlike wall time) hardly changes when other jobs load the host.
    f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
fd = p.stdout.fileno()
while not stop and not done:
    left = t0 + timeout - time.monotonic()
    if left <= 0:
        stop = "timeout"
        break
    r, _, _ = select.select([fd], [], [], min(left, 1.0))
    if not r:
        continue
    chunk = os.read(fd, 65536)
    now = time.monotonic() - t0
    if not chunk:
        stop = "QEMU exited"
        break
    buf += chunk
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        text = line.decode(errors="replace").rstrip("\r")
        lines.append((now, text))
        # The guest prints ROOT-UP as soon as is-system-running returns;
        # what it reports afterwards (until BOOT-DONE) is not boot time.
        if text.startswith("ROOT-UP multi-user") and cpu is None:
            cpu = qemu_cpu()
        if text.startswith("BOOT-DONE"):
            done = True
        elif fail.search(text):
            stop = "failure: " + text
if p.poll() is None:
    p.kill()
p.wait()
with open(log_path, "w") as f:
    for t, text in lines:
        f.write(f"{t:9.3f} {text}\n")
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
    m = re.match(r"ROOT-UP multi-user uptime=([\d.]+)", text)
    if m:
        res["multiuser_host_s"] = round(t, 3)
        res["multiuser_guest_s"] = float(m.group(1))
    m = re.match(r"BOOT-DONE uptime=[\d.]+ state=(\S+)", text)
    if m:
        res["state"] = m.group(1)
    m = re.match(r"BOOT-DISK: (nbd0|loop0) (\d+) (\d+)", text)
    if m and int(m.group(2)) > 0:
        res["dev"], res["dev_reqs"], res["dev_mb"] = m.group(1), int(m.group(2)), int(m.group(3)) * 512 / 1e6
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

IFS=, read -ra WANTED <<< "$CONTENDERS"
NAMES=()
for c in "${WANTED[@]}"; do
    if [ -f "$c.iso" ]; then NAMES+=("$c"); else say "$c: no ISO, not booted"; fi
done
rm -f runs.jsonl logs/*.log
say "$RUNS rounds of ${#NAMES[@]} boots (${NAMES[*]}), rotated order, -smp $SMP"
cut -d' ' -f1-3 /proc/loadavg > load-before
for ((r = 1; r <= RUNS; r++)); do
    n=${#NAMES[@]}
    for ((i = 0; i < n; i++)); do
        boot "${NAMES[$(((i + r - 1) % n))]}" "$r"
    done
done
cut -d' ' -f1-3 /proc/loadavg > load-after

# --- report ------------------------------------------------------------------
python3 - "$(IFS=,; echo "${NAMES[*]}")" "$RUNS" <<'PY' | tee report.md
import json, statistics, sys
names = [n for n in sys.argv[1].split(",") if n]
sizes = json.load(open("sizes.json"))
runs = [json.loads(l) for l in open("runs.jsonl")]
for r in runs:
    if "multiuser_guest_s" in r:
        r["before_kernel_s"] = r["multiuser_host_s"] - r["multiuser_guest_s"]
    if "welcome_s" in r and "multiuser_host_s" in r:
        r["systemd_phase_s"] = r["multiuser_host_s"] - r["welcome_s"]

def vals(n, key):
    return [r[key] for r in runs if r["name"] == n and not r["error"] and r.get(key) is not None]

def med(n, key):
    v = vals(n, key)
    return statistics.median(v) if v else None

def cell(n, key, fmt="{:.1f}"):
    v = vals(n, key)
    if not v:
        return "—"
    m = fmt.format(statistics.median(v))
    return f"{m} ({fmt.format(min(v))}–{fmt.format(max(v))})" if len(v) > 1 else m

def ratio(n, key):
    ref = "squashfs"
    if n == ref or not med(n, key) or not med(ref, key):
        return "—"
    return f"{med(n, key) / med(ref, key):.2f}×"

print(f"Host: {sizes['nproc']} cores ({sizes['cpu']}), Linux {sizes['host_kernel']}, {sizes['qemu']}; "
      f"`qemu-system-x86_64 -accel tcg -m {sizes['mem']} -smp {sizes['smp']} -cdrom ISO -boot d`; guest kernel "
      f"Debian {sizes['kernel']}, `{sizes['append']}`. Load average {open('load-before').read().strip()} before, "
      f"{open('load-after').read().strip()} after (the 2 cores are shared with other jobs). {sys.argv[2]} boots "
      f"per contender, rotated order; medians (min–max). TCG timings are emulation timings. cloopbox: "
      f"{sizes['binary']}.\n")
print(f"Root tree {sizes['tree_bytes'] / 1e6:.0f} MB (Debian bookworm minbase + systemd-sysv, udev, kmod, "
      "e2fsprogs, procps, util-linux; apt lists, docs, man pages and locales removed).\n")
print("| contender | image bytes | ISO bytes | initramfs bytes |")
print("|---|---|---|---|")
for n in names:
    print(f"| {n} | {sizes['image'][n]:,} | {sizes['iso'][n]:,} | {sizes['initrd'][n]:,} |")
if sizes.get("dracut_note"):
    print(f"\ndracut: not measured ({sizes['dracut_note']}).")
print("\n| contender | QEMU start → multi-user (s) | ratio | QEMU CPU time to multi-user (s) | ratio "
      "| host load (1 min) at the start |")
print("|---|---|---|---|---|---|")
for n in names:
    print(f"| {n} | {cell(n, 'multiuser_host_s', '{:.2f}')} | {ratio(n, 'multiuser_host_s')} | "
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
print("\nWhat the boot read from the root device (the guest's /sys/block/DEV/stat at multi-user) and the "
      "CPU time of the root-storage daemon (cloopd) by then:\n")
print("| contender | device | read requests | MB read | KiB per request | cloopd CPU (s) |")
print("|---|---|---|---|---|---|")
for n in names:
    devs = sorted({r["dev"] for r in runs if r["name"] == n and r.get("dev")})
    for r in runs:
        if r.get("dev_reqs"):
            r["dev_kib"] = r["dev_mb"] * 1e6 / 1024 / r["dev_reqs"]
    print(f"| {n} | {', '.join(devs) or '—'} | {cell(n, 'dev_reqs', '{:.0f}')} | {cell(n, 'dev_mb', '{:.0f}')} | "
          f"{cell(n, 'dev_kib', '{:.0f}')} | {cell(n, 'daemon_cpu_s', '{:.1f}')} |")
print()
for r in runs:
    if r["error"]:
        print(f"FAILED: {r['name']} round {r['round']}: {r['error']} ({r['log']})\n")
PY
