#!/usr/bin/env python3
"""Times shell commands in interleaved rounds and writes hyperfine-style JSON.

usage: interleave.py OUT.json RUNS [--no-warmup] [--prepare CMD] NAME=CMD...

Every round runs each command once (one untimed warm-up round first), in an
order rotated per round, so a burst of load from elsewhere on a shared
machine hits every command alike instead of all runs of one. Per command it
records the median wall time and the median CPU time (user + system of the
command and its children), which load from other processes hardly changes.
stdout and stderr of the commands go to /dev/null.
"""
import json
import os
import statistics
import subprocess
import sys
import time

out_path, runs = sys.argv[1], int(sys.argv[2])
args = sys.argv[3:]
prepare = None
warmup = 1
if args[:1] == ["--no-warmup"]:
    warmup, args = 0, args[1:]
if args[:1] == ["--prepare"]:
    prepare, args = args[1], args[2:]
commands = [a.split("=", 1) for a in args]


def timed(cmd):
    if prepare:
        subprocess.run(prepare, shell=True, check=True)
    before = os.times()
    start = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu


results = {name: {"wall": [], "cpu": []} for name, _ in commands}
for round_ in range(1 - warmup, runs + 1):
    shift = round_ % len(commands)
    for name, cmd in commands[shift:] + commands[:shift]:
        wall, cpu = timed(cmd)
        if round_ > 0:
            results[name]["wall"].append(wall)
            results[name]["cpu"].append(cpu)
    print(f"round {round_}/{runs} done", file=sys.stderr)

report = {
    "results": [
        {
            "command": name,
            "median": statistics.median(r["wall"]),
            "cpu_median": statistics.median(r["cpu"]),
            "times": r["wall"],
            "cpu_times": r["cpu"],
        }
        for name, r in results.items()
    ]
}
with open(out_path, "w") as f:
    json.dump(report, f, indent=1)
for r in report["results"]:
    print(f"{r['command']:>12}: wall {r['median']:.3f} s, cpu {r['cpu_median']:.3f} s (medians of {runs})",
          file=sys.stderr)
