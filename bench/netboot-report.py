#!/usr/bin/env python3
"""The report of bench/netboot.sh, from runs.jsonl, sizes.json and the
load-* files in the current directory:

    netboot-report.py CONTENDERS RUNS PAR_RUNS

Medians (min-max); ratios against the local CD (cd, par-cd) twice: of the
medians, and the median of the per-round ratios (each boot against the CD
boot of the same round, which ran next to it under about the same load).
Targets of issue 12: bytes nginx sent <= 1.5x the bytes the guest read
from its root device; time to multi-user <= 1.3x the local CD."""
import json
import statistics
import sys

from bootstats import Stats

names = [n for n in sys.argv[1].split(",") if n]
runs_n, par_n = sys.argv[2], int(sys.argv[3])
s = json.load(open("sizes.json"))
runs = [json.loads(line) for line in open("runs.jsonl")]
for r in runs:
    if r.get("dev_bytes"):
        r["dev_mb"] = r["dev_bytes"] / 1e6
        r["sent_mb"] = r["http_bytes"] / 1e6
        r["sent_per_read"] = r["http_bytes"] / r["dev_bytes"]
        r["distinct_mb"] = r.get("http_distinct_bytes", 0) / 1e6
    if "switch_s" in r and "welcome_s" in r:
        r["switch_to_welcome_s"] = r["welcome_s"] - r["switch_s"]
    if "welcome_s" in r and "multiuser_host_s" in r:
        r["systemd_phase_s"] = r["multiuser_host_s"] - r["welcome_s"]
    if "net_up_s" in r and "switch_s" in r:
        r["net_to_switch_s"] = r["switch_s"] - r["net_up_s"]
ok = [r for r in runs if not r["error"]]


stats = Stats(runs)
vals, med, cell = stats.vals, stats.med, stats.cell


def ratio(n, ref, key):
    a, b = med(n, key), med(ref, key)
    return f"{a / b:.2f}×" if a and b and n != ref else "—"


def round_ratio(n, ref, key):
    """Median over rounds of (median of n's boots) / (median of ref's boots) in that round."""
    out = []
    for rnd in sorted({r["round"] for r in ok if r["name"] == n}):
        a = [r[key] for r in ok if r["name"] == n and r["round"] == rnd and key in r]
        b = [r[key] for r in ok if r["name"] == ref and r["round"] == rnd and key in r]
        if a and b:
            out.append(statistics.median(a) / statistics.median(b))
    return statistics.median(out) if out and n != ref else None


def load(f):
    try:
        return open(f).read().strip()
    except OSError:
        return "?"


print(f"Host: {s['nproc']} cores ({s['cpu']}), Linux {s['host_kernel']}, {s['qemu']}, nginx {s['nginx']}; "
      f"`qemu-system-x86_64 -accel tcg -m {s['mem']} -smp {s['smp']} -kernel vmlinuz -initrd initrd.gz` "
      f"(the ISO's own, mklive -N) and a virtio NIC on user networking with restrict=on and a guestfwd "
      f"rule to nginx, plus `-cdrom debian.iso` for cd; guest kernel Debian {s['kernel']}, "
      f"`{s['append']}` plus the contender's option. Image {s['image']:,} bytes, ISO {s['iso']:,} bytes, "
      f"initramfs {s['initrd']:,} bytes. Delay proxy: {s['delay_ms']} ms each way per chunk; "
      f"prefetch contender: `cloopbox.prefetch={s['prefetch']}`. Load average {load('load-before')} "
      f"before, {load('load-mid')} after the single boots, {load('load-after')} after the concurrent "
      f"ones (2 cores shared with other jobs). {runs_n} rounds, rotated order; medians (min–max). "
      f"cloopbox: {s['binary']}.\n")

print("| contender | QEMU start → multi-user (s) | ÷ cd | per-round ÷ cd | QEMU CPU to multi-user (s) | ÷ cd "
      "| load (1 min) at start |")
print("|---|---|---|---|---|---|---|")
for n in names:
    rr = round_ratio(n, "cd", "multiuser_host_s")
    print(f"| {n} | {cell(n, 'multiuser_host_s', '{:.2f}')} | {ratio(n, 'cd', 'multiuser_host_s')} | "
          f"{f'{rr:.2f}×' if rr else '—'} | {cell(n, 'qemu_cpu_s')} | {ratio(n, 'cd', 'qemu_cpu_s')} | "
          f"{cell(n, 'load_at_start')} |")

print("\nBytes: what the guest read from /dev/nbd0 by multi-user (/sys/block/nbd0/stat, sectors × 512) "
      "and what nginx sent (access log, `$body_bytes_sent` summed, until QEMU stopped):\n")
print("| contender | nbd0 read requests | nbd0 MB read | nginx requests | nginx MB sent | of which distinct "
      "(MB of the file) | sent ÷ read |")
print("|---|---|---|---|---|---|---|")
for n in names:
    print(f"| {n} | {cell(n, 'dev_reqs', '{:.0f}')} | {cell(n, 'dev_mb')} | {cell(n, 'http_reqs', '{:.0f}')} | "
          f"{cell(n, 'sent_mb')} | {cell(n, 'distinct_mb')} | {cell(n, 'sent_per_read', '{:.2f}')} |")

print("\nWhere the time goes (host clock, seconds):\n")
print("| contender | QEMU start → initramfs's first line | → network up | fetch copy (its own line) "
      "| initramfs → switch_root | switch_root → systemd banner | banner → multi-user |")
print("|---|---|---|---|---|---|---|")
for n in names:
    print(f"| {n} | {cell(n, 'initrd_start_s', '{:.2f}')} | {cell(n, 'net_up_after_initrd_s', '{:.2f}')} | "
          f"{cell(n, 'fetch_s', '{:.2f}')} | {cell(n, 'switch_after_initrd_s', '{:.2f}')} | "
          f"{cell(n, 'switch_to_welcome_s', '{:.2f}')} | {cell(n, 'systemd_phase_s', '{:.2f}')} |")

if par_n:
    par = ["par-http", "par-cd"]
    print(f"\n{s['parallel']} guests booting at once ({par_n} rounds of each, alternating which goes first; "
          "each guest -smp " f"{s['smp']} on the 2-core host, so the guests compete for the CPU):\n")
    print("| group | QEMU start → multi-user (s), all guests | ÷ par-cd | per-round ÷ par-cd "
          "| QEMU CPU (s) | nginx MB sent per guest | nbd0 MB read per guest | sent ÷ read |")
    print("|---|---|---|---|---|---|---|---|")
    for n in par:
        rr = round_ratio(n, "par-cd", "multiuser_host_s")
        print(f"| {n} | {cell(n, 'multiuser_host_s', '{:.2f}')} | {ratio(n, 'par-cd', 'multiuser_host_s')} | "
              f"{f'{rr:.2f}×' if rr else '—'} | {cell(n, 'qemu_cpu_s')} | {cell(n, 'sent_mb')} | "
              f"{cell(n, 'dev_mb')} | {cell(n, 'sent_per_read', '{:.2f}')} |")
    print("\nEach guest:\n")
    print("| group | round | guest | multi-user (s) | nginx MB sent | nginx requests |")
    print("|---|---|---|---|---|---|")
    for r in sorted((r for r in runs if r["name"] in par), key=lambda r: (r["name"], r["round"], r["guest"])):
        t = f"{r['multiuser_host_s']:.2f}" if "multiuser_host_s" in r else r["error"]
        print(f"| {r['name']} | {r['round']} | {r['guest']} | {t} | {r['http_bytes'] / 1e6:.1f} | {r['http_reqs']} |")

print("\nTargets (issue 12): bytes fetched ≤ 1.5× the bytes read from the root device; time to multi-user "
      "≤ 1.3× the local CD.\n")
for n in [x for x in names + ["par-http"] if x.startswith(("http", "par-http"))]:
    ref = "par-cd" if n.startswith("par") else "cd"
    b = med(n, "sent_per_read")
    t = med(n, "multiuser_host_s"), med(ref, "multiuser_host_s")
    c = med(n, "qemu_cpu_s"), med(ref, "qemu_cpu_s")
    if b is None or None in t:
        continue
    rr = round_ratio(n, ref, "multiuser_host_s")
    print(f"* {n}: bytes {b:.2f}× ({'met' if b <= 1.5 else 'MISSED'}); time {t[0] / t[1]:.2f}× of {ref} by "
          f"median wall time, {rr:.2f}× by per-round ratio, {c[0] / c[1]:.2f}× by QEMU CPU time "
          f"({'met' if t[0] / t[1] <= 1.3 else 'MISSED'} by the median wall time)")
for r in runs:
    if r["error"]:
        print(f"\nFAILED: {r['name']} round {r['round']} guest {r['guest']}: {r['error']} ({r['log']})")
