"""The fault records on disk, and the relay's delay (real sockets on loopback, no namespace needed)."""
from __future__ import annotations

import asyncio
import random
import time

from mizzen.chaos.records import FaultStore
from mizzen.chaos.relay import Delay, Relay
from mizzen.chaos.spec import Fault


def test_records_are_atomic_files_and_updates_are_serialized(tmp_path):
    store = FaultStore(str(tmp_path))
    fid = store.new_id("network")
    assert fid.startswith("net-")
    store.save(Fault(id=fid, kind="network", params={}, selection={}, seed=1, created=time.time(), duration=5.0))
    assert store.load(fid).state == "applying" and [f.id for f in store.active()] == [fid]
    store.update(fid, state="expired", ended_by="expiry")
    assert store.load(fid).final and store.active() == []
    assert (tmp_path / "chaos" / f"{fid}.json").exists()
    assert store.update("net-none") is None


def test_delay_samples_stay_within_latency_plus_minus_jitter_and_drop_to_zero_when_draining():
    d = Delay(0.1, 0.02, random.Random(3))
    samples = [d.sample() for _ in range(500)]
    assert min(samples) >= 0.08 and max(samples) <= 0.12 and max(samples) - min(samples) > 0.02
    d.draining = True
    assert d.sample() == 0.0


def test_a_delayed_pump_holds_each_chunk_and_keeps_order():
    """Relay._pump with a delay, between two real loopback connections: bytes arrive in order, each no sooner
    than the latency after it was sent."""
    async def main() -> list[tuple[float, bytes]]:
        relay = Relay(Delay(0.15, 0.0, random.Random(1)), 0, 0)
        got: list[tuple[float, bytes]] = []
        done = asyncio.Event()

        async def sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while True:
                data = await r.read(100)
                if not data:
                    break
                got.append((time.monotonic(), data))
            done.set()

        srv_sink = await asyncio.start_server(sink, "127.0.0.1", 0)
        sink_port = srv_sink.sockets[0].getsockname()[1]

        async def middle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            ur, uw = await asyncio.open_connection("127.0.0.1", sink_port)
            from mizzen.chaos.relay import Conn
            await relay._pump(r, uw, True, Conn())
            uw.close()

        srv_mid = await asyncio.start_server(middle, "127.0.0.1", 0)
        r, w = await asyncio.open_connection("127.0.0.1", srv_mid.sockets[0].getsockname()[1])
        sent = []
        for chunk in (b"one", b"two", b"three"):
            sent.append(time.monotonic())
            w.write(chunk)
            await w.drain()
            await asyncio.sleep(0.05)
        w.write_eof()
        await asyncio.wait_for(done.wait(), 5)
        srv_sink.close()
        srv_mid.close()
        return [(t - sent[0], data) for t, data in got]

    got = asyncio.run(main())
    assert b"".join(d for _, d in got) == b"onetwothree"
    assert got[0][0] >= 0.14  # nothing arrives before the latency
