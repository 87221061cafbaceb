#!/usr/bin/env python3
"""Markdown report for bench/compress.sh (run in its work directory).

usage: compress-report.py IMAGE TARGET FLAGS
"""
import json
import os
import platform
import subprocess
import sys

image, target, flags = sys.argv[1:4]
names = ["cloop-utils", "ours", "miniz", "glibc"]
labels = {
    "cloop-utils": "cloop-utils 3.14 (zlib 1.2.13)",
    "ours": f"cloopbox, {target}, zlib-rs (shipped)",
    "miniz": f"cloopbox, {target}, miniz_oxide",
    "glibc": "cloopbox, x86_64-unknown-linux-gnu, zlib-rs",
}
files = {"cloop-utils": "theirs.cloop", "ours": "ours.cloop", "miniz": "miniz.cloop", "glibc": "glibc.cloop"}


def medians(path, key="median"):
    with open(path) as f:
        return {r["command"]: r[key] for r in json.load(f)["results"]}


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def zero_fraction(path, bs):
    zero = total = 0
    with open(path, "rb") as f:
        while block := f.read(bs):
            total += 1
            zero += block.count(0) == len(block)
    return zero / max(total, 1)


CLOOP_UTILS = sh("dpkg-query -W -f='${Version}' cloop-utils")
bs = int(flags.split("-B ")[1].split()[0])
size = os.path.getsize(image)
comp = medians("compress.json")
comp_cpu = medians("compress.json", "cpu_median")
xfile = medians("extract-file.json")
xnull = medians("extract-null.json")
xnull_cpu = medians("extract-null.json", "cpu_median")
sizes = {n: os.path.getsize(files[n]) for n in names}
base_c, base_size = comp["cloop-utils"], sizes["cloop-utils"]

print(f"Machine: {cpu_model()}, {os.cpu_count()} CPUs ({sh('nproc')} online), "
      f"Linux {platform.release()}, {sh('rustc --version')}, "
      f"cloop-utils {CLOOP_UTILS}.")
print()
print(f"Input: `{os.path.basename(image)}`, {size >> 20} MiB ext4 holding a Debian bookworm minbase "
      f"root filesystem (debootstrap); {zero_fraction(image, bs):.1%} of its {bs >> 10} KiB blocks are all zeros.")
print()
runs = len(json.load(open("compress.json"))["results"][0]["times"])
print(f"**Compression**, `create_compressed_fs {flags} rootfs.img out.cloop`, medians of {runs} interleaved runs:")
print()
print("| Build | Wall time | MB/s | Speed-up | CPU time (user+sys) | CPU speed-up | Image bytes | Size vs cloop-utils |")
print("|---|---|---|---|---|---|---|---|")
labels["ours-L8"] = labels["ours"] + ", **-L 8** (for reference)"
sizes["ours-L8"] = os.path.getsize("ours-L8.cloop")
for n in names + ["ours-L8"]:
    t, c = comp[n], comp_cpu[n]
    print(f"| {labels[n]} | {t:.2f} s | {size / t / 1e6:.0f} | {base_c / t:.2f}× | {c:.2f} s | "
          f"{comp_cpu['cloop-utils'] / c:.2f}× | {sizes[n]:,} | {sizes[n] / base_size - 1:+.2%} |")
print()
print("**Extraction** of cloop-utils' image (`extract_compressed_fs theirs.cloop OUT`), median:")
print()
print("| Build | To a file | Speed-up | To /dev/null | Speed-up | CPU time to /dev/null |")
print("|---|---|---|---|---|---|")
for n in names:
    print(f"| {labels[n]} | {xfile[n]:.2f} s | {xfile['cloop-utils'] / xfile[n]:.2f}× | "
          f"{xnull[n]:.2f} s | {xnull['cloop-utils'] / xnull[n]:.2f}× | {xnull_cpu[n]:.2f} s |")
print()
c_ok = base_c / comp["ours"] >= 3 and sizes["ours"] <= base_size * 1.01
x_ok = xfile["cloop-utils"] / xfile["ours"] >= 2 and xnull["cloop-utils"] / xnull["ours"] >= 2
print(f"Targets (shipped build): creation ≥ 3× faster at ≤ 1 % larger: "
      f"**{'met' if c_ok else 'NOT met'}** ({base_c / comp['ours']:.2f}×, {sizes['ours'] / base_size - 1:+.2%}); "
      f"extraction ≥ 2× faster: **{'met' if x_ok else 'NOT met'}** "
      f"({xfile['cloop-utils'] / xfile['ours']:.2f}× to a file, {xnull['cloop-utils'] / xnull['ours']:.2f}× to /dev/null).")
win_c = "zlib-rs" if comp["ours"] <= comp["miniz"] else "miniz_oxide"
win_x = "zlib-rs" if xnull["ours"] <= xnull["miniz"] else "miniz_oxide"
print(f"flate2 backend: {win_c} compresses faster ({comp['miniz'] / comp['ours']:.2f}× miniz time), "
      f"{win_x} extracts faster ({xnull['miniz'] / xnull['ours']:.2f}× miniz time to /dev/null); "
      f"images: zlib-rs {sizes['ours'] / sizes['miniz'] - 1:+.2%} vs miniz.")
print(f"musl vs glibc (zlib-rs): compression {comp['ours'] / comp['glibc']:.2f}× the glibc wall time "
      f"({comp_cpu['ours'] / comp_cpu['glibc']:.2f}× its CPU time), extraction to /dev/null "
      f"{xnull['ours'] / xnull['glibc']:.2f}× ({xnull_cpu['ours'] / xnull_cpu['glibc']:.2f}× CPU).")
