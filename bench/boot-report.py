#!/usr/bin/env python3
"""The report of bench/boot.sh, from runs.jsonl, sizes.txt, tree.json and
host.json in the current directory:

    boot-report.py CONTENDERS SMP RUNS

Medians (min-max) per contender and vCPU count; ratios against sq-gzip and
erofs-lz4hc (and ours-zlib when a -verity contender runs) twice: of the medians, and the median of the per-round ratios
(each boot against the reference's boot of the same round, which ran next to
it and saw about the same host load)."""
import json
import statistics
import sys

names, smps, runs_per_row = sys.argv[1].split(","), [int(x) for x in sys.argv[2].split()], sys.argv[3]
host = json.load(open("host.json"))
tree = json.load(open("tree.json"))
sizes = {}
for line in open("sizes.txt"):
    n, img, initrd = line.split()
    sizes[n] = (int(img), int(initrd))
runs = [json.loads(l) for l in open("runs.jsonl")]
for r in runs:
    if r.get("boot_reqs"):
        r["boot_kib_req"] = r["boot_bytes"] / r["boot_reqs"] / 1024
        r["boot_mb"] = r["boot_bytes"] / 1e6
    if r.get("tar_dev_reqs"):
        r["tar_kib_req"] = r["tar_dev_bytes"] / r["tar_dev_reqs"] / 1024
        r["tar_dev_mb"] = r["tar_dev_bytes"] / 1e6
ok = [r for r in runs if not r["error"]]
REFS = [ref for ref in ("sq-gzip", "erofs-lz4hc") if ref in names]
# A verified contender (ours-zlib-verity) is compared with the same image
# unverified: ours-zlib is then a reference too.
if "ours-zlib" in names and any(n.split("@")[0].endswith("-verity") for n in names):
    REFS.append("ours-zlib")


def vals(n, smp, key):
    return [r[key] for r in ok if r["name"] == n and r["smp"] == smp and r.get(key) is not None]


def med(n, smp, key):
    v = vals(n, smp, key)
    return statistics.median(v) if v else None


def cell(n, smp, key, fmt="{:.2f}", spread=True):
    v = vals(n, smp, key)
    if not v:
        return "—"
    m = fmt.format(statistics.median(v))
    return f"{m} ({fmt.format(min(v))}–{fmt.format(max(v))})" if spread and len(v) > 1 else m


def ratio(n, smp, key, ref):
    a, b = med(n, smp, key), med(ref, smp, key)
    return f"{a / b:.2f}×" if a and b and n != ref else "—"


def paired(n, smp, key, ref):
    """Median of the per-round ratios n/ref."""
    if n == ref:
        return "—"
    by_round = {r["round"]: r[key] for r in ok if r["name"] == ref and r["smp"] == smp and r.get(key)}
    rs = [r[key] / by_round[r["round"]] for r in ok
          if r["name"] == n and r["smp"] == smp and r.get(key) and r["round"] in by_round]
    return f"{statistics.median(rs):.2f}× ({len(rs)})" if rs else "—"


loads = [r["load"] for r in runs if r.get("load") is not None]
print(f"Host: {host['nproc']} cores ({host['cpu']}), Linux {host['host_kernel']}, {host['qemu']}; "
      f"`qemu-system-x86_64 -accel tcg -m {host['mem']} -smp N -cdrom ISO -boot d`; guest kernel Debian "
      f"{host['kernel']}, `{host['append']}`. Host load average (1 min) {open('load-before').read().strip()} "
      f"before, {open('load-after').read().strip()} after"
      + (f", {min(loads):.1f}–{max(loads):.1f} (median {statistics.median(loads):.1f}) at the starts of the boots"
         if loads else "")
      + f". {runs_per_row} boots per row in rotated rounds; medians (min–max). TCG timings are emulation "
      f"timings. cloopbox: {host['binary']}. Block size {host['block']} bytes everywhere.\n")
print(f"Root tree {tree['tree_bytes'] / 1e6:.0f} MB, of which /usr {tree['usr_bytes'] / 1e6:.0f} MB. "
      f"Busybox initramfs modules: {host['modules']}.\n")
print("| contender | image bytes | vs sq-gzip | vs erofs-lz4hc | initramfs bytes |")
print("|---|---|---|---|---|")
for n in names:
    img, ird = sizes[n]
    rel = [f"{img / sizes[ref][0]:.3f}×" if ref in sizes else "—" for ref in ("sq-gzip", "erofs-lz4hc")]
    print(f"| {n} | {img:,} | {rel[0]} | {rel[1]} | {ird:,} |")
print()
for smp in smps:
    for key, what in (("rootup_host_s", "boot: QEMU start → ROOT-UP (s)"),
                      ("tar_s", "whole-/usr read: `tar cf - usr | wc -c` after dropping the page cache (s)")):
        print(f"**-smp {smp}, {what}** (ratios below 1: faster than the reference; paired = median of the "
              "per-round ratios, (rounds))\n")
        hdr = "".join(f" vs {ref} | paired vs {ref} |" for ref in REFS)
        print(f"| contender | median (min–max) |{hdr}")
        print("|---|---|" + "---|---|" * len(REFS))
        for n in names:
            cells = "".join(f" {ratio(n, smp, key, ref)} | {paired(n, smp, key, ref)} |" for ref in REFS)
            print(f"| {n} | {cell(n, smp, key)} |{cells}")
        print()
    print(f"**-smp {smp}, what the root device saw** (guest /sys/block/DEV/stat: during the boot until ROOT-UP, "
          "and during the /usr read; cloopd CPU during the /usr read)\n")
    print("| contender | device | boot MB | boot requests | boot KiB/request | /usr read MB | /usr requests "
          "| /usr KiB/request | cloopd CPU (s) | queue |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in names:
        q = sorted({r.get("queue", "") for r in ok if r["name"] == n and r["smp"] == smp})
        dev = sorted({r.get("dev") or "—" for r in ok if r["name"] == n and r["smp"] == smp})
        print(f"| {n} | {', '.join(dev)} | {cell(n, smp, 'boot_mb', '{:.1f}', False)} | "
              f"{cell(n, smp, 'boot_reqs', '{:.0f}', False)} | {cell(n, smp, 'boot_kib_req', '{:.1f}', False)} | "
              f"{cell(n, smp, 'tar_dev_mb', '{:.0f}', False)} | {cell(n, smp, 'tar_dev_reqs', '{:.0f}', False)} | "
              f"{cell(n, smp, 'tar_kib_req', '{:.1f}', False)} | {cell(n, smp, 'tar_daemon_cpu_s', '{:.1f}', False)} | "
              f"{'; '.join(q)} |")
    print()
    d = [(n, r) for n in names for r in ok if r["name"] == n and r["smp"] == smp and r.get("daemon_end")]
    if d:
        print("cloopd's counters at the end (control socket, `cowdev -l -v`; median): "
              + "; ".join(f"{n}: " + ", ".join(
                  f"{k} {statistics.median([r['daemon_end'].get(k, 0) for m, r in d if m == n]):.0f}"
                  for k in sorted({k for m, r in d if m == n for k in r['daemon_end']}))
                  for n in names if any(m == n for m, _ in d)) + "\n")
for r in runs:
    if r["error"]:
        print(f"FAILED: {r['name']} -smp {r['smp']} round {r['round']}: {r['error']} ({r['log']})\n")
