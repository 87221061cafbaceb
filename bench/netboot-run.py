#!/usr/bin/env python3
"""One boot of bench/netboot.sh as a JSON line on stdout (a note on stderr):

    netboot-run.py NAME ROUND GUEST LOG.times END CPU LOAD FAIL ACCESS_LOG FROM URI

LOG.times is the guest's console with host seconds since QEMU's start
(tests/qemu/boot.py); END, CPU and LOAD are what lib.sh's boot set
(BOOT_END, BOOT_CPU or -, BOOT_LOAD); FAIL the regex of a failed boot.
ACCESS_LOG is nginx's log of tests/qemu/net.sh ("status bytes uri range"):
the requests after its line FROM for URI are this guest's."""
import json
import re
import sys

from bootstats import console, multiuser_marks

name, rnd, guest, log_path, end, cpu, load, fail, access, start, uri = sys.argv[1:12]
fail = re.compile(fail)
lines = console(log_path)
stop = {"timeout": "timeout", "exit": "QEMU exited"}.get(end)
if end == "until" and not any(t.startswith("BOOT-DONE") for _, t in lines):
    stop = "failure: " + next((t for _, t in lines if fail.search(t)), "?")
res = {"name": name, "round": int(rnd), "guest": int(guest), "error": stop, "log": log_path,
       "load_at_start": float(load)}
if cpu != "-":
    res["qemu_cpu_s"] = round(float(cpu), 2)
for t, text in lines:
    if re.match(r"cloopbox: cloopbox .* live boot", text) and "initrd_start_s" not in res:
        res["initrd_start_s"] = t
    if re.match(r"cloopbox: switching to the new root", text):
        res["switch_s"] = t
    if re.search(r"network: \S+ .* is ", text) and "net_up_s" not in res:
        res["net_up_s"] = t
    if text.startswith("Welcome to ") and "welcome_s" not in res:
        res["welcome_s"] = t
    m = re.search(r"fetch: (\d+) MiB copied in ([\d.]+) s", text)
    if m:
        res["fetch_s"] = float(m.group(2))
    multiuser_marks(res, t, text)
    m = re.match(r"BOOT-DISK: (nbd0) (\d+) (\d+)", text)
    if m:
        res["dev_reqs"], res["dev_bytes"] = int(m.group(2)), int(m.group(3)) * 512
for k in ("switch_s", "welcome_s", "net_up_s"):
    if k in res and "initrd_start_s" in res:
        res[k.replace("_s", "_after_initrd_s")] = round(res[k] - res["initrd_start_s"], 3)
if "multiuser_host_s" not in res and not stop:
    res["error"] = "no ROOT-UP"
if res.get("state") not in (None, "running"):
    res["error"] = f"system state {res['state']}"
reqs = sent = 0
statuses = {}
ranges = []
with open(access) as f:
    for i, raw in enumerate(f):
        if i < int(start):
            continue
        parts = raw.split()
        if len(parts) >= 3 and parts[2] == uri:
            reqs += 1
            sent += int(parts[1])
            statuses[parts[0]] = statuses.get(parts[0], 0) + 1
            m = re.match(r'"bytes=(\d+)-(\d+)"', parts[3] if len(parts) > 3 else "")
            if m and int(parts[1]) > 0:
                first = int(m.group(1))
                ranges.append((first, first + int(parts[1])))
# Distinct bytes of the file sent: what was sent more than once is the
# difference to http_bytes.
distinct, reach = 0, 0
for a, b in sorted(ranges):
    a = max(a, reach)
    if b > a:
        distinct += b - a
    reach = max(reach, b)
res["http_reqs"], res["http_bytes"], res["http_status"] = reqs, sent, statuses
res["http_distinct_bytes"] = distinct
print(json.dumps(res))
print(f"[netboot] {name} round {rnd} guest {guest}: multi-user at {res.get('multiuser_host_s')} s, "
      f"nbd0 read {res.get('dev_bytes', 0) / 1e6:.1f} MB, nginx sent {sent / 1e6:.1f} MB in {reqs} requests"
      + (f", ERROR {res['error']}" if res["error"] else ""), file=sys.stderr)
