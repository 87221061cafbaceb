#!/usr/bin/env python3
"""The one QEMU boot runner of the tests and the benchmarks (tests/qemu/lib.sh's
`boot` calls it).

    boot.py --log FILE --until REGEX --timeout SECS [options] -- QEMU ARGS...

Runs QEMU with its serial console on a pipe. Every byte goes to the log as it
arrives; every complete line also goes to LOG.times as "SECONDS TEXT", with the
seconds since QEMU started (the benchmarks read their timings from there).
The guest stops when a line (or the unfinished last line, such as a shell
prompt) matches the extended regex UNTIL: QEMU is given one more second, then
stopped. It also stops when QEMU exits (the guest powered off) or after
SECS, which appends "qemu-test: TIMEOUT after SECS s" to the log.

  --mark REGEX         the line whose time is the boot time (default ROOT-UP)
  --kick-at REGEX      once a line matches, send --kick-cmd to the monitor
  --kick-cmd CMD       a human-monitor command (hot-plug a stick, eject a CD)
  --monitor SOCKET     the monitor's unix socket (added to QEMU's arguments)
  --type-at REGEX      once a line (or the unfinished last line, a prompt)
                       matches, write the next --type TEXT to the serial
                       console's input; repeatable, the pairs in order,
                       each once (answering a shell in the guest)
  --type TEXT          what to type (backslash escapes: \\n is a newline)
  --silent-limit SECS  a guest that prints nothing at all for this long (QEMU's
                       TCG hung before the kernel's first word, seen once in
                       many hundred boots) is restarted once; the restart is
                       noted in --restarts FILE. So is one whose kernel
                       oopses on its own int3 ("Oops: int3: 0000 [#1]", in
                       enqueue_timer about 1.25 s into Debian 13's 6.12 at
                       -smp 2, 2 in 40 boots): multi-threaded TCG running
                       code the kernel is patching. No userspace program
                       can make the kernel trap on a breakpoint in its own
                       text, so it says nothing about the code under test;
                       the second run is watched for neither, and the
                       first run's log is kept as LOG.first
Prints one line on stdout: the mark's seconds (- if none), the total
seconds, QEMU's CPU seconds (user+system) at the mark (- if none), the
1-minute load average at the start, and how it ended (until, exit, timeout).
"""
import argparse
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time


def monitor(path, cmd):
    """One command to QEMU's human monitor; its answer goes to stderr."""
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.settimeout(2)
        time.sleep(0.3)
        s.recv(65536)
        s.sendall((cmd + "\n").encode())
        time.sleep(0.5)
        # The monitor echoes the command with terminal escapes: keep its answer.
        answer = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", s.recv(65536).decode(errors="replace"))
        answer = " ".join(line.strip() for line in answer.splitlines()[1:] if line.strip() not in ("", "(qemu)"))
        print(f"boot.py: monitor: {cmd}" + (f": {answer}" if answer else ""), file=sys.stderr)
        s.close()
    except OSError as e:
        print(f"boot.py: monitor {path}: {e}", file=sys.stderr)


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
    p.wait()


# The kernel trapping on the breakpoint of its own text patching (see the
# docstring): "Oops: int3: 0000 [#1] ..." (6.12), "int3: 0000 [#1] ..." (6.1).
TCG_INT3_OOPS = re.compile(r"\bint3: [0-9a-f]{4} \[#[0-9]+\]")


def run_once(a, qemu, log, times, first):
    """One QEMU run; only the first ends early on silence or the int3
    oops, for a restart. Returns (mark_s, total_s, cpu_s, end)."""
    silent_limit = a.silent_limit if first else 0
    until = re.compile(a.until)
    mark = re.compile(a.mark)
    kick = re.compile(a.kick_at) if a.kick_at else None
    kicked, mark_s, cpu_s, end = False, None, None, "exit"
    t0 = time.monotonic()
    typing = list(zip(a.type_at, a.type))
    # The serial console's input is QEMU's stdin: a pipe only when
    # something is to be typed (else QEMU reads end of file at once).
    stdin = subprocess.PIPE if typing else subprocess.DEVNULL
    p = subprocess.Popen(qemu, stdin=stdin, stdout=subprocess.PIPE)
    fd = p.stdout.fileno()
    buf, seen_output, until_at = b"", False, None
    while True:
        now = time.monotonic() - t0
        if until_at is not None and now >= until_at:
            break
        if now >= a.timeout:
            end = "timeout"
            log.write(f"\nqemu-test: TIMEOUT after {a.timeout:g}s\n".encode())
            break
        if silent_limit and not seen_output and now >= silent_limit:
            end = "silent"
            break
        r, _, _ = select.select([fd], [], [], 0.2)
        if not r:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        seen_output = True
        now = time.monotonic() - t0
        log.write(chunk)
        log.flush()
        buf += chunk
        *done, buf = buf.split(b"\n")
        texts = [d.decode(errors="replace").rstrip("\r") for d in done]
        for text in texts:
            # One line per line: a carriage return inside (progress output)
            # would split it for readers with universal newlines.
            times.write(f"{now:.3f} {text.replace(chr(13), '')}\n")
        times.flush()
        # The unfinished line counts too: a shell prompt has no newline.
        for text in texts + [buf.decode(errors="replace")]:
            if mark_s is None and mark.search(text):
                mark_s, cpu_s = now, cpu_seconds(p.pid)
            if typing and re.search(typing[0][0], text):
                try:
                    p.stdin.write(typing.pop(0)[1].encode().decode("unicode_escape").encode())
                    p.stdin.flush()
                except OSError as e:  # QEMU is gone: its exit ends the loop
                    print(f"boot.py: typing: {e}", file=sys.stderr)
            if kick and not kicked and kick.search(text):
                monitor(a.monitor, a.kick_cmd)
                kicked = True
            if until_at is None and until.search(text):
                until_at, end = now + 1.0, "until"
        if first and any(TCG_INT3_OOPS.search(t) for t in texts):
            end = "int3"
            break
    stop(p)
    if buf:
        times.write(f"{time.monotonic() - t0:.3f} {buf.decode(errors='replace').rstrip().replace(chr(13), '')}\n")
    return mark_s, time.monotonic() - t0, cpu_s, end


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", required=True)
    ap.add_argument("--until", required=True)
    ap.add_argument("--timeout", type=float, required=True)
    ap.add_argument("--mark", default="ROOT-UP")
    ap.add_argument("--kick-at")
    ap.add_argument("--kick-cmd")
    ap.add_argument("--monitor")
    ap.add_argument("--type-at", action="append", default=[])
    ap.add_argument("--type", action="append", default=[])
    ap.add_argument("--silent-limit", type=float, default=0)
    ap.add_argument("--restarts")
    ap.add_argument("qemu", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    qemu = a.qemu[1:] if a.qemu[:1] == ["--"] else a.qemu
    if not qemu:
        ap.error("no QEMU command after --")
    if len(a.type_at) != len(a.type):
        ap.error("each --type-at needs its --type")
    if a.kick_at and not (a.kick_cmd and a.monitor):
        ap.error("--kick-at needs --kick-cmd and --monitor")
    qemu = qemu + ["-display", "none", "-serial", "stdio"]
    if a.monitor:
        if os.path.exists(a.monitor):
            os.unlink(a.monitor)
        qemu += ["-monitor", f"unix:{a.monitor},server,nowait"]
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    for attempt in (1, 2):
        with open(a.log, "wb") as log, open(a.log + ".times", "w") as times:
            mark_s, total, cpu_s, end = run_once(a, qemu, log, times, first=attempt == 1)
        if end == "silent":
            note = f"{os.path.basename(a.log)}: restarted after {a.silent_limit:g} s without console output"
        elif end == "int3":
            note = f"{os.path.basename(a.log)}: restarted after the kernel's TCG int3 oops at {total:.1f} s"
        else:
            break
        # The first run's console stays next to the second's.
        os.replace(a.log, a.log + ".first")
        print(f"boot.py: {note}", file=sys.stderr)
        if a.restarts:
            with open(a.restarts, "a") as f:
                f.write(note + "\n")
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    print(f"{fmt(mark_s)} {total:.1f} {'-' if cpu_s is None else f'{cpu_s:.2f}'} {load} {end}")


if __name__ == "__main__":
    main()
