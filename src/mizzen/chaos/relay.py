"""A delaying TCP relay: added latency (with jitter) where the kernel has no `netem`.

Runs *inside one pod's network namespace* (`ip netns exec <pod ns> python -m mizzen.chaos.relay ...`), started
and stopped by a network fault's keeper (netfault.py), which points iptables at it:

    nat PREROUTING -i eth0 -p tcp → REDIRECT :IN    connections arriving at the pod
    nat OUTPUT     -o eth0 -p tcp → REDIRECT :OUT   connections the pod opens (with a sidecar: Envoy's, uid 1337)

For each accepted connection it reads the original destination (SO_ORIGINAL_DST) and connects there itself,
its socket marked (SO_MARK) so that the fault's own rules send it where the connection was going anyway (to the
sidecar's inbound port for IN, through the service-VIP chain for OUT) and never back into the relay. It then
copies bytes both ways and holds back every chunk *the pod sends* — responses on IN connections, requests on
OUT connections, and the connect itself on OUT — for `latency ± jitter` (uniform, drawn with the fault's seed),
which is what `tc netem delay` on the pod's eth0 does to the packets it sends. A chunk is never sent before
the one read before it (no reordering within a connection, as netem with rate or with pfifo).

SIGTERM drains: the listeners close (the keeper removed the iptables rules first), the delay drops to 0 and the
relay exits once its connections are closed, or after `--drain-seconds` (closing what is left).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import socket
import struct
import time
from collections import deque

log = logging.getLogger("mizzen.chaos.relay")

SO_ORIGINAL_DST = 80
SO_MARK = 36
CHUNK = 65536
MAX_HELD_BYTES = 4 << 20  # per direction: reading pauses above this much held back
IDLE_CLOSE_SECONDS = 0.5  # when draining: a connection this quiet is closed


def original_dst(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, = struct.unpack("!H", raw[2:4])
    return socket.inet_ntoa(raw[4:8]), port


class Delay:
    """latency ± jitter, never decreasing within one direction of one connection."""

    def __init__(self, latency: float, jitter: float, rng: random.Random):
        self.latency, self.jitter, self.rng = latency, jitter, rng
        self.draining = False

    def sample(self) -> float:
        if self.draining or self.latency <= 0:
            return 0.0
        return max(0.0, self.latency + (self.rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0))


class Conn:
    """One relayed connection: when bytes last moved, and how many are held back."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.held = 0
        self.task: asyncio.Task | None = None

    def touch(self) -> None:
        self.last = time.monotonic()


class Relay:
    def __init__(self, delay: Delay, mark_in: int, mark_out: int):
        self.delay = delay
        self.marks = {"in": mark_in, "out": mark_out}
        self.conns: dict[asyncio.Task, Conn] = {}
        self.servers: list[asyncio.base_events.Server] = []
        self.accepted = 0
        self.failed = 0

    async def start(self, port_in: int, port_out: int) -> None:
        for side, port in (("in", port_in), ("out", port_out)):
            srv = await asyncio.start_server(lambda r, w, s=side: self._accept(r, w, s), "0.0.0.0", port,
                                             reuse_address=True, backlog=1024)
            self.servers.append(srv)
        log.info("relay listening on :%d (in) and :%d (out): latency %.0f ms ± %.0f ms", port_in, port_out,
                 self.delay.latency * 1000, self.delay.jitter * 1000)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, side: str) -> None:
        c = Conn()
        t = asyncio.get_running_loop().create_task(self._conn(reader, writer, side, c))
        c.task = t
        self.conns[t] = c
        t.add_done_callback(lambda t: self.conns.pop(t, None))

    async def _conn(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter, side: str,
                    c: Conn) -> None:
        self.accepted += 1
        sock = cwriter.get_extra_info("socket")
        try:
            host, port = original_dst(sock)
        except OSError as e:
            log.warning("no original destination (%s): closing", e)
            cwriter.close()
            return
        up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        up.setsockopt(socket.SOL_SOCKET, SO_MARK, self.marks[side])
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up.setblocking(False)
        try:
            if side == "out":  # the pod's SYN leaves late too
                d = self.delay.sample()
                if d:
                    await asyncio.sleep(d)
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(up, (host, port)), 10)
            ureader, uwriter = await asyncio.open_connection(sock=up)
        except (OSError, asyncio.TimeoutError) as e:
            self.failed += 1
            log.info("connect %s:%d (%s) failed: %s", host, port, side, e)
            up.close()
            _abort(cwriter)
            return
        # the pod sends: responses (in) or requests (out)
        delayed_c2u = side == "out"
        try:
            await asyncio.gather(
                self._pump(creader, uwriter, delayed_c2u, c),
                self._pump(ureader, cwriter, not delayed_c2u, c),
                return_exceptions=True)
        finally:
            for w in (cwriter, uwriter):
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delayed: bool,
                    c: Conn) -> None:
        if not delayed:
            try:
                while True:
                    data = await reader.read(CHUNK)
                    c.touch()
                    if not data:
                        break
                    writer.write(data)
                    await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()
            except (OSError, asyncio.IncompleteReadError):
                _abort(writer)
            return
        held: deque[tuple[float, bytes]] = deque()
        size = [0]
        more = asyncio.Event()
        room = asyncio.Event()
        room.set()
        done = [False]

        async def read() -> None:
            last_due = 0.0
            try:
                while True:
                    await room.wait()
                    data = await reader.read(CHUNK)
                    c.touch()
                    due = max(last_due, time.monotonic() + self.delay.sample())
                    last_due = due
                    held.append((due, data))
                    more.set()
                    if not data:
                        return
                    size[0] += len(data)
                    c.held += len(data)
                    if size[0] > MAX_HELD_BYTES:
                        room.clear()
            except (OSError, asyncio.IncompleteReadError):
                held.append((time.monotonic(), b""))
                more.set()
                done[0] = True

        async def write() -> None:
            while True:
                while not held:
                    more.clear()
                    await more.wait()
                due, data = held[0]
                wait = due - time.monotonic()
                if wait > 0 and not self.delay.draining:
                    await asyncio.sleep(wait)
                held.popleft()
                if not data:
                    if done[0]:
                        _abort(writer)
                    elif writer.can_write_eof():
                        writer.write_eof()
                    return
                size[0] -= len(data)
                if size[0] <= MAX_HELD_BYTES:
                    room.set()
                writer.write(data)
                await writer.drain()
                c.held -= len(data)
                c.touch()

        r = asyncio.ensure_future(read())
        try:
            await write()
        except OSError:
            _abort(writer)
        finally:
            r.cancel()

    async def drain(self, seconds: float, idle: float = IDLE_CLOSE_SECONDS) -> None:
        """No new connections (the keeper removed the rules first; the listeners close), no more delay; the
        connections left are closed once quiet for `idle` (a pooled keep-alive connection between requests:
        its owner reconnects, directly now), and whatever is left after `seconds` is cut."""
        self.delay.draining = True
        for s in self.servers:
            s.close()
        deadline = time.monotonic() + seconds
        quiet = 0
        while self.conns and time.monotonic() < deadline:
            now = time.monotonic()
            for t, c in list(self.conns.items()):
                if c.held <= 0 and now - c.last >= idle:
                    t.cancel()
                    quiet += 1
            await asyncio.sleep(0.05)
        cut = len(self.conns)
        for t in list(self.conns):
            t.cancel()
        log.info("relay drained: %d connections relayed, %d onward connects failed; at the end %d closed while "
                 "quiet, %d cut", self.accepted, self.failed, quiet, cut)


def _abort(writer: asyncio.StreamWriter) -> None:
    t = writer.transport
    if t is not None and not t.is_closing():
        t.abort()


async def amain(a: argparse.Namespace) -> None:
    relay = Relay(Delay(a.latency_ms / 1000.0, a.jitter_ms / 1000.0, random.Random(a.seed)),
                  a.mark_in, a.mark_out)
    await relay.start(a.port_in, a.port_out)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready = a.ready_file
    if ready:
        with open(ready, "w") as f:
            f.write("ready\n")
    await stop.wait()
    await relay.drain(a.drain_seconds)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="delaying TCP relay of `mizzen chaos network --latency`")
    ap.add_argument("--port-in", type=int, required=True)
    ap.add_argument("--port-out", type=int, required=True)
    ap.add_argument("--latency-ms", type=float, required=True)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mark-in", type=lambda s: int(s, 0), required=True)
    ap.add_argument("--mark-out", type=lambda s: int(s, 0), required=True)
    ap.add_argument("--drain-seconds", type=float, default=20.0, help="at most this long to close relayed connections once they are quiet")
    ap.add_argument("--ready-file", default="")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s relay %(levelname)s %(message)s")
    asyncio.run(amain(a))


if __name__ == "__main__":
    main()
