#!/usr/bin/env python3
"""A disk with a volatile write cache, for the powercut scenario.

    volatile-nbd.py --socket PATH --status FILE DISK

Serves the raw file DISK over NBD (fixed newstyle, simple replies) on the
unix socket PATH to one client (QEMU's `-drive file=nbd+unix:///?socket=PATH`),
then exits when that client disconnects.

Writes are held in memory, as a disk's write cache holds them, and reach
DISK only when the client sends NBD_CMD_FLUSH (all of them, then fsync) or
writes with the FUA flag (that write alone). Reads see the cached data. A
power cut is SIGUSR1: everything written since the last flush is dropped,
and the server exits at once without touching DISK again. If nothing is
cached at that moment, the cut waits for the next write that leaves data
in the cache, so that a cut always loses something. A disconnect
without a flush drops it the same way. QEMU's `cache=unsafe` is no
substitute: it ignores the guest's flushes but keeps every write in the
host's page cache, so nothing is ever lost.

FILE gets one line after every request and at the end:
    pending=BYTES flushes=N committed=BYTES writes=N state=serving|cut|closed
The last line written at a cut says how much was lost:
    cut: dropped BYTES in N writes not yet flushed (M flushes committed)
"""
import argparse
import os
import signal
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REP_ERR_UNSUP, REP_ERR_INVALID = 2**31 + 1, 2**31 + 3
INFO_EXPORT = 0
# HAS_FLAGS | SEND_FLUSH | SEND_FUA: the guest sees a volatile write cache.
TRANSMISSION_FLAGS = 1 | 4 | 8
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
CMD_FLAG_FUA = 1
EINVAL, ENOSPC = 22, 28
SECTOR = 512
# VOLATILE_TRACE=1: one line per request on stderr (the scenario keeps it in
# $LOGS/NAME.server.log), to see where a cut fell.
TRACE = bool(os.environ.get("VOLATILE_TRACE"))


class Disk:
    """DISK plus a write cache of whole sectors (sector number -> bytes)."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.cache = {}
        self.flushes = self.committed = self.writes = self.pending_writes = 0

    def pending_bytes(self):
        return len(self.cache) * SECTOR

    def dropped(self, verb):
        """The status line of a cut or a disconnect: what the cache lost."""
        return (f"{verb}: dropped {self.pending_bytes()} bytes in {self.pending_writes} writes "
                f"not yet flushed ({self.flushes} flushes committed)")

    def read_sector(self, n):
        data = self.cache.get(n)
        if data is None:
            data = os.pread(self.fd, SECTOR, n * SECTOR).ljust(SECTOR, b"\0")
        return data

    def read(self, off, length):
        first, last = off // SECTOR, (off + length - 1) // SECTOR
        if not any(n in self.cache for n in range(first, last + 1)):
            return os.pread(self.fd, length, off)
        data = b"".join(self.read_sector(n) for n in range(first, last + 1))
        start = off - first * SECTOR
        return data[start:start + length]

    def write(self, off, data, fua):
        """Into the cache, or with FUA through to the disk (that write only)."""
        self.writes += 1
        first, last = off // SECTOR, (off + len(data) - 1) // SECTOR
        head = off - first * SECTOR
        # Partial sectors at the ends: merged with what a read returns now.
        buf = bytearray(self.read(first * SECTOR, (last - first + 1) * SECTOR))
        buf[head:head + len(data)] = data
        if fua:
            os.pwrite(self.fd, bytes(buf), first * SECTOR)
            os.fdatasync(self.fd)
            self.committed += len(buf)
            for n in range(first, last + 1):
                self.cache.pop(n, None)
            return
        self.pending_writes += 1
        for i, n in enumerate(range(first, last + 1)):
            self.cache[n] = bytes(buf[i * SECTOR:(i + 1) * SECTOR])

    def flush(self):
        """Every cached sector to the disk, in runs, then fsync."""
        run_start, run = None, []
        for n in sorted(self.cache) + [None]:
            if run and (n is None or n != run_start + len(run)):
                os.pwrite(self.fd, b"".join(run), run_start * SECTOR)
                self.committed += len(run) * SECTOR
                run = []
            if n is not None:
                if not run:
                    run_start = n
                run.append(self.cache[n])
        os.fsync(self.fd)
        self.cache.clear()
        self.pending_writes = 0
        self.flushes += 1


def recv_exact(conn, n):
    data = bytearray()
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def option_reply(conn, opt, rtype, data=b""):
    conn.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, rtype, len(data)) + data)


def handshake(conn, disk):
    """Fixed newstyle negotiation; True once transmission starts."""
    conn.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
    (client_flags,) = struct.unpack(">I", recv_exact(conn, 4))
    no_zeroes = bool(client_flags & FLAG_NO_ZEROES)
    while True:
        magic, opt, length = struct.unpack(">QII", recv_exact(conn, 16))
        if magic != IHAVEOPT or length > 65536:
            return False
        data = recv_exact(conn, length)
        if opt == OPT_EXPORT_NAME:
            conn.sendall(struct.pack(">QH", disk.size, TRANSMISSION_FLAGS) + (b"" if no_zeroes else bytes(124)))
            return True
        if opt == OPT_ABORT:
            option_reply(conn, opt, REP_ACK)
            return False
        if opt == OPT_LIST:
            option_reply(conn, opt, REP_SERVER, struct.pack(">I", 0))
            option_reply(conn, opt, REP_ACK)
        elif opt in (OPT_INFO, OPT_GO):
            if length < 6:
                option_reply(conn, opt, REP_ERR_INVALID)
                continue
            option_reply(conn, opt, REP_INFO, struct.pack(">HQH", INFO_EXPORT, disk.size, TRANSMISSION_FLAGS))
            option_reply(conn, opt, REP_ACK)
            if opt == OPT_GO:
                return True
        else:
            # Structured replies, meta contexts, extended headers, TLS: not here.
            option_reply(conn, opt, REP_ERR_UNSUP)


def transmission(conn, disk, status):
    while True:
        magic, flags, cmd, handle, off, length = struct.unpack(">IHHQQI", recv_exact(conn, 28))
        if magic != REQUEST_MAGIC:
            raise EOFError
        err, payload = 0, b""
        if TRACE:
            print(f"{time.monotonic():.3f} cmd={cmd} flags={flags} off={off} len={length} "
                  f"pending={disk.pending_bytes()}", file=sys.stderr, flush=True)
        if cmd == CMD_WRITE:
            data = recv_exact(conn, length)
            if off + length > disk.size:
                err = ENOSPC
            elif length:
                disk.write(off, data, flags & CMD_FLAG_FUA)
        elif cmd == CMD_READ:
            if off + length > disk.size or length > 64 << 20:
                err = EINVAL
            elif length:
                payload = disk.read(off, length)
        elif cmd == CMD_FLUSH:
            disk.flush()
        elif cmd == CMD_DISC:
            return
        else:
            err = EINVAL
        conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, err, handle) + (payload if not err else b""))
        status("serving")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--status", required=True)
    ap.add_argument("disk")
    a = ap.parse_args()
    disk = Disk(a.disk)

    def status(state, extra=None):
        pending = disk.pending_bytes()
        with open(a.status + ".new", "w") as f:
            f.write(f"pending={pending} flushes={disk.flushes} committed={disk.committed} "
                    f"writes={disk.writes} state={state}\n")
            if extra:
                f.write(extra + "\n")
        os.replace(a.status + ".new", a.status)

    cut_requested = []

    def cut():
        # The power fails: the cache is gone, DISK is not touched again.
        status("cut", disk.dropped("cut"))
        os._exit(0)

    def on_usr1(_sig, _frame):
        cut_requested.append(True)
        if disk.cache:
            cut()

    def after_request(state):
        if cut_requested and disk.cache:
            cut()
        status(state)

    signal.signal(signal.SIGUSR1, on_usr1)
    if os.path.exists(a.socket):
        os.unlink(a.socket)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(a.socket)
    srv.listen(1)
    status("listening")
    conn, _ = srv.accept()
    srv.close()
    try:
        if handshake(conn, disk):
            status("serving")
            transmission(conn, disk, after_request)
    except (EOFError, ConnectionError) as e:
        print(f"volatile-nbd: {a.disk}: client gone ({e or 'end of stream'})", file=sys.stderr)
    # A disconnect without a flush loses the cache, as a cut does.
    status("closed", disk.dropped("closed"))


if __name__ == "__main__":
    main()
