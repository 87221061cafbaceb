#!/usr/bin/env python3
"""A DNS responder for the network-boot scenarios: DNS over TCP (RFC 7766)
on 127.0.0.1, answering A queries for the names given, NXDOMAIN for the
rest. Guests reach it through a QEMU guestfwd rule; every query is logged,
so a scenario can check that the guest resolved the name here.

Usage: dns-tcp.py PORTFILE LOGFILE NAME=IPV4...   (binds a free port, writes it to PORTFILE)
"""
import socket
import struct
import sys
import threading


def answer(query, names):
    qid, _flags, qd = struct.unpack(">HHH", query[:6])
    at, labels = 12, []
    while query[at] != 0:
        n = query[at]
        labels.append(query[at + 1:at + 1 + n].decode("ascii", "replace"))
        at += 1 + n
    qtype, _qclass = struct.unpack(">HH", query[at + 1:at + 5])
    question = query[12:at + 5]
    name = ".".join(labels).lower()
    addr = names.get(name)
    if addr is None:
        return name, struct.pack(">HHHHHH", qid, 0x8183, qd, 0, 0, 0) + question
    if qtype != 1:
        return name, struct.pack(">HHHHHH", qid, 0x8180, qd, 0, 0, 0) + question
    rr = struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(addr)
    return name, struct.pack(">HHHHHH", qid, 0x8180, qd, 1, 0, 0) + question + rr


def serve(conn, names, log):
    with conn:
        while True:
            head = conn.recv(2, socket.MSG_WAITALL)
            if len(head) < 2:
                return
            (n,) = struct.unpack(">H", head)
            query = conn.recv(n, socket.MSG_WAITALL)
            try:
                name, reply = answer(query, names)
            except (IndexError, struct.error):
                return
            with open(log, "a") as f:
                f.write("query %s -> %s\n" % (name, names.get(name, "NXDOMAIN")))
            conn.sendall(struct.pack(">H", len(reply)) + reply)


def main():
    portfile, log = sys.argv[1], sys.argv[2]
    names = dict(a.lower().split("=", 1) for a in sys.argv[3:])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(srv.getsockname()[1]))
    import os
    os.rename(portfile + ".tmp", portfile)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn, names, log), daemon=True).start()


if __name__ == "__main__":
    main()
