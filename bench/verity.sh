#!/bin/bash
# Cost of verified images: cloopd with and without --root-hash, the same
# client, interleaved rounds; plus the offline check and the tree's cost
# at compression time.
#
#   bench/verity.sh [WORKDIR]        (default: ./work/bench, gitignored)
#
# Environment: REPS (rounds, default 7), CLOOPBOX (a cloopbox binary;
# default: scripts/build-static.sh builds it).
#
# Image: the Debian bookworm minbase ext4 of the other benches
# (bench/rootfs-image.sh, 512 MiB), compressed once with
#   create_compressed_fs -q -B 65536 -L 9 --verity --salt 00 rootfs.img v64.cloop
# Serving workload: `nbdcopy --no-extents URI null:` (every byte of the
# 512 MiB export, 4 connections) against a freshly started cloopd (cache
# cold) on a unix socket, for four stacks: default cache, and
# --cache-size 0 (every read decodes), each without and with --root-hash.
# Per run: wall time of nbdcopy and the server's CPU time (utime + stime
# from /proc/PID/stat). Each round runs the four stacks in an order rotated
# per round, so a burst of load from other jobs hits all alike; the report
# gives the median and (min-max) of the rounds and the with/without ratio.
# /proc/loadavg is printed before and after. Not a test: nothing fails on
# slow results.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mkdir -p "${1:-$ROOT/work/bench}" && cd "${1:-$ROOT/work/bench}" && pwd)
REPS=${REPS:-7}
for t in nbdcopy:libnbd-bin python3:python3; do
    command -v "${t%%:*}" >/dev/null || { echo "verity.sh: apt-get install ${t#*:}" >&2; exit 1; }
done
IMG=$("$ROOT/bench/rootfs-image.sh" "$WORK")
BIN=${CLOOPBOX:-$("$ROOT/scripts/build-static.sh")}
cd "$WORK"
if [ ! -f v64.cloop.root ]; then
    "$BIN" create_compressed_fs -q -B 65536 -L 9 --verity --salt 00 "$IMG" v64.cloop > v64.cloop.root.tmp
    mv v64.cloop.root.tmp v64.cloop.root
fi
export BIN REPS IMG
python3 - <<'PY'
import os, statistics, subprocess, time

BIN, REPS, IMG = os.environ["BIN"], int(os.environ["REPS"]), os.environ["IMG"]
ROOT_HASH = open("v64.cloop.root").read().split()[-1]
TICK = os.sysconf("SC_CLK_TCK")
SOCK = os.path.abspath("verity-bench.sock")
STACKS = {
    "cache cold": [],
    "cache cold --root-hash": ["--root-hash", ROOT_HASH],
    "no cache": ["--cache-size", "0"],
    "no cache --root-hash": ["--cache-size", "0", "--root-hash", ROOT_HASH],
}

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK

def serve_once(extra):
    p = subprocess.Popen([BIN, "cloopd", "v64.cloop", "--unix", SOCK, *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    banner = p.stdout.readline()
    assert "serving" in banner, p.stderr.read()
    t = time.monotonic()
    subprocess.run(["nbdcopy", "--no-extents", f"nbd+unix:///?socket={SOCK}", "null:"], check=True)
    wall = time.monotonic() - t
    used = cpu(p.pid)
    p.terminate()
    p.wait()
    return wall, used

def loadavg():
    return open("/proc/loadavg").read().split()[:3]

print(f"load before: {' '.join(loadavg())}")
results = {name: [] for name in STACKS}
names = list(STACKS)
for r in range(REPS):
    order = names[r % len(names):] + names[:r % len(names)]
    for name in order:
        results[name].append(serve_once(STACKS[name]))
print(f"load after: {' '.join(loadavg())}")

def cell(values, fmt):
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"

def sec(v):
    return f"{v:.2f} s"

print(f"\n{REPS} rounds, median (min-max)\n")
print("| stack | nbdcopy --no-extents wall | server CPU |")
print("|---|---|---|")
for name in names:
    walls = [w for w, _ in results[name]]
    cpus = [c for _, c in results[name]]
    print(f"| {name} | {cell(walls, sec)} | {cell(cpus, sec)} |")
print()
for base in ("cache cold", "no cache"):
    w0 = statistics.median(w for w, _ in results[base])
    w1 = statistics.median(w for w, _ in results[base + " --root-hash"])
    c0 = statistics.median(c for _, c in results[base])
    c1 = statistics.median(c for _, c in results[base + " --root-hash"])
    print(f"{base}: --root-hash wall x{w1 / w0:.3f}, server CPU x{c1 / c0:.3f}")

def timed(cmd):
    t = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t

print("\nOffline, 3 runs each, interleaved, median (min-max):\n")
jobs = {
    "cloopinfo --verify (decode only)": [BIN, "cloopinfo", "--verify", "v64.cloop"],
    "verity v64.cloop - ROOT (decode + hash)": [BIN, "verity", "-q", "v64.cloop", "-", ROOT_HASH],
    "create_compressed_fs -L 9": [BIN, "create_compressed_fs", "-q", "-B", "65536", "-L", "9", IMG, "c1.cloop"],
    "create_compressed_fs -L 9 --verity": [BIN, "create_compressed_fs", "-q", "-B", "65536", "-L", "9",
                                           "--verity", "--salt", "00", IMG, "c2.cloop"],
}
times = {k: [] for k in jobs}
for r in range(3):
    for k, cmd in jobs.items():
        times[k].append(timed(cmd))
print("| command | wall |")
print("|---|---|")
for k in jobs:
    print(f"| {k} | {cell(times[k], sec)} |")
print(f"\nload after: {' '.join(loadavg())}")
PY
