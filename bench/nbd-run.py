#!/usr/bin/env python3
"""Runs the NBD benchmark matrix of bench/nbd.sh and reports it.

usage: nbd-run.py run WORKDIR OUT.jsonl [--reps N] [--runtime S] [--only REGEX]
                      [--matrix full|ab] [--bin NAME=PATH ...]
       nbd-run.py report OUT.jsonl [--matrix full|ab]

WORKDIR holds the images bench/nbd.sh prepares (rootfs.img, rootfs-64k.cloop,
rootfs-256k.cloop, rootfs-zlib.qcow2, rootfs-zstd.qcow2, rootfs.img.xz).

Every measurement is one (server, workload) pair and runs against a freshly
started server: its caches start cold, its overlay (cowfile, --snapshot file,
nbd-server diff) starts empty. "Warm" cloopd servers are filled first with
one 4 KiB read per cloop block (which the cache keeps). Rounds: each round
runs every pair once, in an order rotated per round, so that a burst of load
from other jobs on this shared machine hits every server alike; the report
gives the median of the rounds and their min-max. For each measurement it
records /proc/loadavg before and after, and the CPU time the server's
process tree used (utime + stime from /proc, which load from other processes
hardly distorts), from which it derives CPU µs per request.

Results are appended to OUT.jsonl one line per measurement, so a run that is
interrupted keeps what it measured. Not a test: nothing fails on slow
results.
"""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

SIZE = 512 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- servers -------------------------------------------------------------

class Server:
    """A server command line and how to reach it."""

    def __init__(self, name, argv, export="", prefill_block=None, fresh=(), label=None, group=None):
        self.name = name
        self.argv = argv
        self.export = export
        self.prefill_block = prefill_block
        self.fresh = fresh
        self.label = label or name
        self.group = group or name


def servers(work, bins, sock):
    """Every server configuration of the full matrix, by name."""
    w = lambda f: os.path.join(work, f)
    cow = w("bench.cow")
    out = {}
    for name, binpath in bins.items():
        tag = "" if name == "cloopbox" else f"[{name}] "
        cloopd = [binpath, "cloopd", "-q", "--unix", sock]
        for bs in ("64k", "256k"):
            img = w(f"rootfs-{bs}.cloop")
            block = 65536 if bs == "64k" else 262144
            g = f"{tag}cloopd {bs}"
            out[f"{tag}cloopd-{bs}-nocache"] = Server(
                f"{tag}cloopd-{bs}-nocache", cloopd + [img, "--cache-size", "0"],
                label=f"{tag}cloopd, {bs} blocks, no cache (every read decodes)", group=g)
            out[f"{tag}cloopd-{bs}-cold"] = Server(
                f"{tag}cloopd-{bs}-cold", cloopd + [img],
                label=f"{tag}cloopd, {bs} blocks, cache cold (default 64 MiB)", group=g)
            out[f"{tag}cloopd-{bs}-warm"] = Server(
                f"{tag}cloopd-{bs}-warm", cloopd + [img, "--cache-size", "1G"], prefill_block=block,
                label=f"{tag}cloopd, {bs} blocks, cache warm (1 GiB, filled)", group=g)
            out[f"{tag}cloopd-{bs}-cow-cold"] = Server(
                f"{tag}cloopd-{bs}-cow-cold", cloopd + [img, "--cow", cow], fresh=(cow,),
                label=f"{tag}cloopd --cow, {bs} blocks, cache cold", group=g)
            out[f"{tag}cloopd-{bs}-cow-warm"] = Server(
                f"{tag}cloopd-{bs}-cow-warm", cloopd + [img, "--cow", cow, "--cache-size", "1G"],
                prefill_block=block, fresh=(cow,),
                label=f"{tag}cloopd --cow, {bs} blocks, cache warm (1 GiB, filled)", group=g)
        g = f"{tag}cloopd raw"
        out[f"{tag}cloopd-raw"] = Server(
            f"{tag}cloopd-raw", cloopd + [w("rootfs.img")], label=f"{tag}cloopd, raw image", group=g)
        out[f"{tag}cloopd-raw-cow"] = Server(
            f"{tag}cloopd-raw-cow", cloopd + [w("rootfs.img"), "--cow", cow], fresh=(cow,),
            label=f"{tag}cloopd --cow, raw image", group=g)
    for codec in ("zlib", "zstd"):
        img = w(f"rootfs-{codec}.qcow2")
        g = f"qemu-nbd qcow2 {codec}"
        out[f"qemu-{codec}"] = Server(
            f"qemu-{codec}", ["qemu-nbd", "-r", "-e", "8", "-t", "-f", "qcow2", "-k", sock, img],
            label=f"qemu-nbd -e 8, compressed qcow2 ({codec}, 64 KiB clusters)", group=g)
        out[f"qemu-{codec}-snap"] = Server(
            f"qemu-{codec}-snap", ["qemu-nbd", "-s", "-e", "8", "-t", "-f", "qcow2", "-k", sock, img],
            label=f"qemu-nbd -e 8 --snapshot, compressed qcow2 ({codec})", group=g)
    out["nbdkit-xz"] = Server(
        "nbdkit-xz", ["nbdkit", "-r", "-f", "-U", sock, "--filter=xz", "file", w("rootfs.img.xz")],
        label="nbdkit xz filter (xz --block-size=256KiB)", group="nbdkit xz")
    out["nbdkit-cow-xz"] = Server(
        "nbdkit-cow-xz", ["nbdkit", "-f", "-U", sock, "--filter=cow", "--filter=xz", "file",
                          w("rootfs.img.xz")],
        label="nbdkit cow + xz filters", group="nbdkit xz")
    out["nbdkit-file"] = Server(
        "nbdkit-file", ["nbdkit", "-r", "-f", "-U", sock, "file", w("rootfs.img")],
        label="nbdkit file, raw image (ceiling)", group="nbdkit file")
    out["nbdkit-file-rw"] = Server(
        "nbdkit-file-rw", ["nbdkit", "-f", "-U", sock, "file", w("rootfs-rw.img")],
        label="nbdkit file, writable copy of the raw image", group="nbdkit file")
    out["nbd-server-c"] = Server(
        "nbd-server-c", ["nbd-server", "-C", w("nbd-server.conf"), "-p", w("nbd-server.pid")], export="disk",
        label="nbd-server -c (copyonwrite, sparse_cow)", group="nbd-server")
    return out


def nbd_server_conf(work, sock):
    cowdir = os.path.join(work, "nbd-server-cow")
    os.makedirs(cowdir, exist_ok=True)
    with open(os.path.join(work, "nbd-server.conf"), "w") as f:
        f.write(f"""[generic]
user = root
group = root
unixsock = {sock}
allowlist = true
[disk]
exportname = {os.path.join(work, "rootfs.img")}
copyonwrite = true
sparse_cow = true
cowdir = {cowdir}
flush = true
fua = true
trim = true
""")


def proc_tree(pid):
    """pid and all its descendants."""
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return seen


def cpu_seconds(pid):
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # utime, stime, and those of reaped children (nbd-server
            # forks one per connection).
            total += sum(int(x) for x in fields[11:15])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def wait_for_socket(path, proc, log):
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            break
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                s.close()
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.02)
    raise RuntimeError(f"server did not come up: {' '.join(proc.args)}\n{open(log).read()}")


class Running:
    def __init__(self, srv, sock, work):
        self.srv, self.sock = srv, sock
        for f in srv.fresh:
            if os.path.exists(f):
                os.unlink(f)
        if os.path.exists(sock):
            os.unlink(sock)
        self.log = os.path.join(work, "server.log")
        env = dict(os.environ, TMPDIR=work)
        self.pidfile = next((a for a in srv.argv if a.endswith(".pid")), None)
        if self.pidfile and os.path.exists(self.pidfile):
            os.unlink(self.pidfile)
        self.proc = subprocess.Popen(srv.argv, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"),
                                     env=env)
        self.pid = self.proc.pid
        if self.pidfile:
            # nbd-server daemonizes (its -d serves one connection only, and
            # fio's nbd engine connects twice): follow the daemon's pid.
            self.proc.wait(timeout=20)
            deadline = time.time() + 20
            while not (os.path.exists(self.pidfile) and os.path.getsize(self.pidfile)):
                if time.time() > deadline:
                    raise RuntimeError(f"no pid file from {srv.argv}: {open(self.log).read()}")
                time.sleep(0.02)
            self.pid = int(open(self.pidfile).read().split()[0])
            deadline = time.time() + 20
            while not os.path.exists(sock) and time.time() < deadline:
                time.sleep(0.02)
        else:
            wait_for_socket(sock, self.proc, self.log)
        self.uri = f"nbd+unix:///{srv.export}?socket={sock}"

    def stop(self):
        if self.pidfile:
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.time() + 60
            while os.path.exists(f"/proc/{self.pid}") and time.time() < deadline:
                time.sleep(0.02)
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- workloads -----------------------------------------------------------

def fio(uri, runtime, rw, bs, qd, jobs=1, extra=()):
    cmd = ["fio", "--name=b", "--ioengine=nbd", f"--uri={uri}", f"--rw={rw}", f"--bs={bs}",
           f"--iodepth={qd}", f"--numjobs={jobs}", "--group_reporting", "--time_based",
           f"--runtime={runtime}", "--size=512M", "--randrepeat=0", "--norandommap",
           "--output-format=json", *extra]
    return parse_fio(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def parse_fio(out):
    j = json.loads(out[out.index("{"):])["jobs"][0]
    r = {}
    for d in ("read", "write"):
        if j[d]["total_ios"]:
            r["iops"] = j[d]["iops"]
            r["mbs"] = j[d]["bw_bytes"] / 1e6
            r["ios"] = j[d]["total_ios"]
            pct = j[d]["clat_ns"].get("percentile", {})
            r["p50_us"] = pct.get("50.000000", 0) / 1000
            r["p99_us"] = pct.get("99.000000", 0) / 1000
    if j.get("sync", {}).get("total_ios"):
        pct = j["sync"]["lat_ns"].get("percentile", {})
        r["sync_p50_us"] = pct.get("50.000000", 0) / 1000
        r["ios"] = r.get("ios", 0) + j["sync"]["total_ios"]
    return r


def nbdcopy(uri, extents=True):
    cmd = ["nbdcopy", uri, "null:"] + ([] if extents else ["--no-extents"])
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = time.perf_counter() - start
    return {"seconds": t, "mbs": SIZE / 1e6 / t}


WORKLOADS = {
    "copy": ("nbdcopy → null:", lambda u, rt: nbdcopy(u)),
    "copy-noext": ("nbdcopy --no-extents → null:", lambda u, rt: nbdcopy(u, extents=False)),
    "rr1": ("randread 4K QD1", lambda u, rt: fio(u, rt, "randread", "4k", 1)),
    "rr16": ("randread 4K QD16", lambda u, rt: fio(u, rt, "randread", "4k", 16)),
    "rr4x16": ("randread 4K 4 jobs × QD16", lambda u, rt: fio(u, rt, "randread", "4k", 16, 4)),
    "seq": ("read 1M QD8", lambda u, rt: fio(u, rt, "read", "1m", 8)),
    "rr128k": ("randread 128K QD16", lambda u, rt: fio(u, rt, "randread", "128k", 16)),
    "rw16": ("randwrite 4K QD16", lambda u, rt: fio(u, rt, "randwrite", "4k", 16)),
    "rw128k": ("randwrite 128K QD16", lambda u, rt: fio(u, rt, "randwrite", "128k", 16)),
    "wflush": ("write 4K + flush QD1", lambda u, rt: fio(u, rt, "randwrite", "4k", 1, extra=["--fsync=1"])),
}
READS = ["copy", "rr1", "rr16", "rr4x16", "seq"]
WRITES = ["rw16", "wflush"]


def fdatasync_baseline(work, runtime, kind):
    """pwrite + fdatasync of 4 KiB at random offsets, on the cowfile's
    filesystem: into a fresh sparse file (each write allocates, as a new
    cowfile unit does) or over a fully written one."""
    path = os.path.join(work, f"fdatasync-{kind}.test")
    extra = ["--fallocate=none"]
    if kind == "sparse":
        if os.path.exists(path):
            os.unlink(path)
    else:
        extra = ["--overwrite=1"]
    cmd = ["fio", "--name=b", "--ioengine=psync", f"--filename={path}", "--rw=randwrite", "--bs=4k",
           "--iodepth=1", "--fdatasync=1", "--size=512M", "--time_based", f"--runtime={runtime}",
           "--randrepeat=0", "--norandommap", "--output-format=json", *extra]
    return parse_fio(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


# ---- the matrix ----------------------------------------------------------

def full_matrix(names):
    m = []
    for bs in ("64k", "256k"):
        m += [(f"cloopd-{bs}-nocache", w) for w in ("rr1", "rr16", "copy-noext")]
        m += [(f"cloopd-{bs}-cold", w) for w in READS + ["copy-noext"]]
        m += [(f"cloopd-{bs}-warm", w) for w in READS]
        m += [(f"cloopd-{bs}-cow-cold", w) for w in READS + WRITES]
        m += [(f"cloopd-{bs}-cow-warm", w) for w in READS]
    for codec in ("zlib", "zstd"):
        m += [(f"qemu-{codec}", w) for w in READS + ["copy-noext"]]
        m += [(f"qemu-{codec}-snap", w) for w in WRITES]
    m += [("nbdkit-xz", w) for w in READS]
    m += [("nbdkit-cow-xz", w) for w in WRITES]
    m += [("nbdkit-file", w) for w in READS]
    m += [("nbdkit-file-rw", w) for w in WRITES]
    m += [("nbd-server-c", w) for w in WRITES]
    m += [("fdatasync", "sparse"), ("fdatasync", "overwrite")]
    return m


def ab_matrix(names):
    """Before/after matrix: the same cloopd workloads for every --bin."""
    m = []
    for tag in names:
        p = "" if tag == "cloopbox" else f"[{tag}] "
        m += [(f"{p}cloopd-raw", w) for w in ("rr16", "rr128k", "seq", "copy")]
        m += [(f"{p}cloopd-64k-warm", w) for w in ("rr16", "seq", "copy")]
        m += [(f"{p}cloopd-256k-cold", w) for w in ("rr16", "seq")]
        m += [(f"{p}cloopd-raw-cow", w) for w in ("rw16", "rw128k")]
    return m


def prefill(uri, block):
    subprocess.run(["fio", "--name=fill", "--ioengine=nbd", f"--uri={uri}", f"--rw=read:{block - 4096}",
                    "--bs=4k", "--iodepth=16", "--size=512M", "--output-format=json"],
                   check=True, capture_output=True)


def run(args):
    work = os.path.abspath(args.work)
    bins = dict(b.split("=", 1) for b in args.bin) if args.bin else {"cloopbox": os.environ["CLOOPBOX"]}
    sock = os.path.join(work, "nbd.sock")
    nbd_server_conf(work, sock)
    srv = servers(work, bins, sock)
    matrix = (ab_matrix if args.matrix == "ab" else full_matrix)(list(bins))
    if args.only:
        matrix = [(s, w) for s, w in matrix if re.search(args.only, f"{s} {w}")]
    out = open(args.out, "a")
    for rnd in range(args.reps):
        shift = (rnd * len(matrix)) // args.reps
        order = matrix[shift:] + matrix[:shift]
        for i, (sname, wname) in enumerate(order):
            rec = {"server": sname, "workload": wname, "round": rnd, "runtime": args.runtime,
                   "load_before": loadavg(), "time": time.time()}
            if sname == "fdatasync":
                rec.update(fdatasync_baseline(work, args.runtime, wname))
            else:
                r = Running(srv[sname], sock, work)
                try:
                    if srv[sname].prefill_block:
                        prefill(r.uri, srv[sname].prefill_block)
                    cpu0 = cpu_seconds(r.pid)
                    rec.update(WORKLOADS[wname][1](r.uri, args.runtime))
                    rec["server_cpu"] = cpu_seconds(r.pid) - cpu0
                finally:
                    r.stop()
            rec["load_after"] = loadavg()
            out.write(json.dumps(rec) + "\n")
            out.flush()
            print(f"round {rnd + 1}/{args.reps} [{i + 1}/{len(order)}] {sname} {wname}: "
                  f"{summary(rec)} (load {rec['load_before']:.2f}→{rec['load_after']:.2f})",
                  file=sys.stderr)


def summary(rec):
    if "seconds" in rec:
        return f"{rec['seconds']:.2f} s = {rec['mbs']:.0f} MB/s"
    return f"{rec.get('iops', 0):,.0f} IOPS, {rec.get('mbs', 0):.0f} MB/s"


# ---- the report ----------------------------------------------------------

def load(path):
    recs = [json.loads(line) for line in open(path) if line.strip()]
    by = {}
    for r in recs:
        by.setdefault((r["server"], r["workload"]), []).append(r)
    return recs, by


def fmt(v, digits=0):
    return "—" if v is None else f"{v:,.{digits}f}"


class Report:
    def __init__(self, path):
        self.recs, self.by = load(path)
        self.labels = {s.name: s.label for s in servers("/", {"cloopbox": "x"}, "s").values()}
        self.groups = {s.name: s.group for s in servers("/", {"cloopbox": "x"}, "s").values()}

    def values(self, server, workload, key):
        return [r[key] for r in self.by.get((server, workload), []) if key in r]

    def med(self, server, workload, key):
        v = self.values(server, workload, key)
        return statistics.median(v) if v else None

    def cell(self, server, workload, key, digits=0):
        v = self.values(server, workload, key)
        if not v:
            return "—"
        m = fmt(statistics.median(v), digits)
        return m if len(v) == 1 else f"{m} ({fmt(min(v), digits)}–{fmt(max(v), digits)})"

    def load_range(self, servers_):
        loads = [x for s in servers_ for (srv, _), rs in self.by.items() if srv == s
                 for r in rs for x in (r["load_before"], r["load_after"])]
        return f"{min(loads):.1f}–{max(loads):.1f}" if loads else "—"

    def cpu(self, server, workload):
        v = [r["server_cpu"] / r["ios"] * 1e6 for r in self.by.get((server, workload), [])
             if r.get("ios") and "server_cpu" in r]
        return statistics.median(v) if v else None

    def present(self, names, workloads):
        return [n for n in names if any((n, w) in self.by for w in workloads)]

    def table(self, names, columns):
        """columns: (header, workload, key, digits)"""
        print("| Server | " + " | ".join(c[0] for c in columns) + " | load |")
        print("|---|" + "---|" * (len(columns) + 1))
        for n in names:
            row = [self.labels.get(n, n)] + [self.cell(n, w, k, d) for _, w, k, d in columns]
            print("| " + " | ".join(row) + f" | {self.load_range([n])} |")
        print()

    def ratio(self, a, b, workload, key, invert=False):
        x, y = self.med(a, workload, key), self.med(b, workload, key)
        if not x or not y:
            return None
        return y / x if invert else x / y


READ_COLS = [
    ("nbdcopy → null: (s)", "copy", "seconds", 2),
    ("nbdcopy --no-extents (s)", "copy-noext", "seconds", 2),
    ("randread 4K QD1 IOPS", "rr1", "iops", 0),
    ("QD1 p50 µs", "rr1", "p50_us", 0),
    ("randread 4K QD16 IOPS", "rr16", "iops", 0),
    ("4 jobs × QD16 IOPS", "rr4x16", "iops", 0),
    ("read 1M QD8 MB/s", "seq", "mbs", 0),
]
WRITE_COLS = [
    ("randwrite 4K QD16 IOPS", "rw16", "iops", 0),
    ("write 4K + flush, QD1: pairs/s", "wflush", "iops", 0),
    ("write p50 µs", "wflush", "p50_us", 0),
    ("flush p50 µs", "wflush", "sync_p50_us", 0),
]
CPU_COLS = ["rr1", "rr16", "rr4x16", "seq", "rw16", "wflush"]

READ_SERVERS = ["cloopd-64k-nocache", "cloopd-64k-cold", "cloopd-64k-warm", "cloopd-64k-cow-cold",
                "cloopd-64k-cow-warm", "cloopd-256k-nocache", "cloopd-256k-cold", "cloopd-256k-warm",
                "cloopd-256k-cow-cold", "cloopd-256k-cow-warm", "qemu-zlib", "qemu-zstd", "nbdkit-xz",
                "nbdkit-file"]
WRITE_SERVERS = ["cloopd-64k-cow-cold", "cloopd-256k-cow-cold", "qemu-zlib-snap", "qemu-zstd-snap",
                 "nbdkit-cow-xz", "nbdkit-file-rw", "nbd-server-c"]


def report(args):
    rp = Report(args.out)
    if args.env:
        print("Run: " + "; ".join(line.strip() for line in open(args.env) if line.strip()) + ".")
    loads = [x for r in rp.recs for x in (r["load_before"], r["load_after"])]
    runs = sorted({r["round"] for r in rp.recs})
    print(f"{len(rp.recs)} measurements in {len(runs)} rounds; 1-minute load average over the run: "
          f"median {statistics.median(loads):.2f}, {min(loads):.2f}–{max(loads):.2f}.")
    print("Cells: median (min–max) of the rounds; load = range of /proc/loadavg before and after "
          "each of the row's measurements.")
    print()
    print("Reads:")
    print()
    rp.table(rp.present(READ_SERVERS, [c[1] for c in READ_COLS]), READ_COLS)
    print("Writes (randwrite over the whole export; write+flush = fio --fsync=1, each write followed "
          "by NBD_CMD_FLUSH):")
    print()
    rp.table(rp.present(WRITE_SERVERS, [c[1] for c in WRITE_COLS]), WRITE_COLS)
    for kind, text in (("sparse", "into a new sparse file (each write allocates, as a new cowfile unit does)"),
                       ("overwrite", "over a fully written file (no allocation)")):
        if ("fdatasync", kind) in rp.by:
            print(f"* Baseline, fio psync 4 KiB pwrite + fdatasync at QD1 {text}: "
                  f"{rp.cell('fdatasync', kind, 'iops')} writes/s, p50 {rp.cell('fdatasync', kind, 'p50_us')} µs "
                  f"(load {rp.load_range(['fdatasync'])}).")
    print()
    print("Ratios (of medians):")
    print()
    lines = [
        ("cache-miss randread QD1, 64K blocks vs qemu qcow2 zlib", "cloopd-64k-nocache", "qemu-zlib", "rr1", "iops"),
        ("cache-miss randread QD16, 64K blocks vs qemu qcow2 zlib", "cloopd-64k-nocache", "qemu-zlib", "rr16", "iops"),
        ("cache-miss randread QD1, 256K blocks vs nbdkit xz 256K", "cloopd-256k-nocache", "nbdkit-xz", "rr1", "iops"),
        ("cache-miss randread QD16, 256K blocks vs nbdkit xz 256K", "cloopd-256k-nocache", "nbdkit-xz", "rr16", "iops"),
        ("warm randread QD1, 64K vs nbdkit file (ceiling)", "cloopd-64k-warm", "nbdkit-file", "rr1", "iops"),
        ("warm randread QD16, 64K vs nbdkit file (ceiling)", "cloopd-64k-warm", "nbdkit-file", "rr16", "iops"),
        ("warm randread 4×QD16, 64K vs nbdkit file (ceiling)", "cloopd-64k-warm", "nbdkit-file", "rr4x16", "iops"),
        ("nbdcopy, 64K cold vs qemu qcow2 zlib (speed)", "cloopd-64k-cold", "qemu-zlib", "copy", "seconds", True),
        ("nbdcopy, 64K cold vs qemu qcow2 zstd (speed)", "cloopd-64k-cold", "qemu-zstd", "copy", "seconds", True),
        ("nbdcopy --no-extents, 64K cold vs qemu qcow2 zlib (speed)", "cloopd-64k-cold", "qemu-zlib", "copy-noext", "seconds", True),
        ("read 1M QD8, 64K cold vs qemu qcow2 zlib", "cloopd-64k-cold", "qemu-zlib", "seq", "mbs"),
        ("read 1M QD8, 64K cold vs qemu qcow2 zstd", "cloopd-64k-cold", "qemu-zstd", "seq", "mbs"),
        ("cow randwrite QD16, 64K vs nbd-server -c", "cloopd-64k-cow-cold", "nbd-server-c", "rw16", "iops"),
        ("cow randwrite QD16, 64K vs qemu --snapshot zlib", "cloopd-64k-cow-cold", "qemu-zlib-snap", "rw16", "iops"),
        ("cow write+flush QD1, 64K vs nbd-server -c", "cloopd-64k-cow-cold", "nbd-server-c", "wflush", "iops"),
    ]
    for text, a, b, w, k, *inv in lines:
        r = rp.ratio(a, b, w, k, invert=bool(inv))
        if r is not None:
            print(f"* {text}: {r:.2f}×")
    for kind in ("sparse", "overwrite"):
        for bs in ("64k", "256k"):
            x, y = rp.med(f"cloopd-{bs}-cow-cold", "wflush", "iops"), rp.med("fdatasync", kind, "iops")
            if x and y:
                print(f"* cow write+flush QD1 ({bs}) time per pair vs pwrite+fdatasync ({kind}): {y / x:.2f}×")
    print()
    print("Server CPU µs per request (median; CPU time of the server's processes / requests completed):")
    print()
    names = [n for n in READ_SERVERS + WRITE_SERVERS if any((n, w) in rp.by for w in CPU_COLS)]
    names = list(dict.fromkeys(names))
    print("| Server | " + " | ".join(WORKLOADS[w][0] for w in CPU_COLS) + " |")
    print("|---|" + "---|" * len(CPU_COLS))
    for n in names:
        print("| " + " | ".join([rp.labels.get(n, n)] + [fmt(rp.cpu(n, w), 1) for w in CPU_COLS]) + " |")
    if args.matrix == "ab":
        ab_report(rp)


def ab_report(rp):
    """Before/after: every [tag] server against every other tag."""
    print()
    tags = sorted({s.split("]")[0][1:] for s, _ in rp.by if s.startswith("[")})
    pairs = sorted({(s.split("] ", 1)[1], w) for s, w in rp.by if s.startswith("[")})
    print("| Server, workload | " + " | ".join(f"{t}: result" for t in tags)
          + " | " + " | ".join(f"{t}: CPU µs/request" for t in tags) + " |")
    print("|---|" + "---|" * (2 * len(tags)))
    for s, w in pairs:
        key = "mbs" if w in ("seq", "copy", "rr128k", "rw128k") else "iops"
        unit = " MB/s" if key == "mbs" else " IOPS"
        res = [rp.cell(f"[{t}] {s}", w, key) + unit for t in tags]
        cpu = [fmt(rp.cpu(f"[{t}] {s}", w), 1) for t in tags]
        print(f"| {s}, {WORKLOADS[w][0]} | " + " | ".join(res + cpu) + " |")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("work")
    r.add_argument("out")
    r.add_argument("--reps", type=int, default=5)
    r.add_argument("--runtime", type=int, default=4)
    r.add_argument("--only")
    r.add_argument("--matrix", choices=["full", "ab"], default="full")
    r.add_argument("--bin", action="append")
    q = sub.add_parser("report")
    q.add_argument("out")
    q.add_argument("--matrix", choices=["full", "ab"], default="full")
    q.add_argument("--env")
    a = p.parse_args()
    (run if a.cmd == "run" else report)(a)


if __name__ == "__main__":
    main()
