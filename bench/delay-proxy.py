#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that delays every chunk by a fixed time in each
direction, for bench/netboot.sh: the host kernel has no sch_netem, so
`tc qdisc ... netem delay` is not available; this adds the latency in
user space instead.

    delay-proxy.py PORTFILE UPSTREAM_PORT DELAY_MS

Listens on a free port of 127.0.0.1 (written to PORTFILE once listening)
and forwards each connection to 127.0.0.1:UPSTREAM_PORT. Every chunk read
from one side is written to the other DELAY_MS later, in order; the
chunks of one direction are not held up behind each other (a chunk read
at t leaves at t + DELAY_MS however many are in flight), so the proxy adds
latency, not a bandwidth limit: one request and its response cost
2 x DELAY_MS more. End of stream is passed on after the same delay.
"""
import asyncio
import os
import sys
import time

port_file, upstream, delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) / 1000.0


async def pump(reader, writer):
    queue = asyncio.Queue()

    async def read_side():
        while True:
            data = await reader.read(65536)
            queue.put_nowait((time.monotonic() + delay, data))
            if not data:
                return

    async def write_side():
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    try:
        await asyncio.gather(read_side(), write_side())
    except (ConnectionError, OSError):
        pass


async def handle(client_r, client_w):
    try:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pump(client_r, up_w), pump(up_r, client_w))
    for w in (client_w, up_w):
        try:
            w.close()
        except OSError:
            pass


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    async with server:
        await server.serve_forever()


asyncio.run(main())
