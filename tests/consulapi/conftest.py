"""Mizzen's Consul API served in-process (aiohttp on a loopback port, in its own thread and event loop), over
the SQLite or etcd backends, and py-consul — a real Consul client from PyPI, unmodified — pointed at it."""
from __future__ import annotations

import asyncio
import socket
import threading
from typing import Iterator

import pytest
from aiohttp import web

from tests.etcd.fixtures import etcd_cluster, etcd_prefix  # noqa: F401  (fixtures)


class Served:
    def __init__(self, api, registry, kv, port: int):
        self.api, self.registry, self.kv, self.port = api, registry, kv, port
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(10), "the Consul API did not start"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.runner = web.AppRunner(self.api.app())
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

        self.loop.run_until_complete(start())
        started.set()
        self.loop.run_forever()

    def stop(self) -> None:
        async def stop() -> None:
            assert self.runner is not None
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["sqlite", "etcd"])
def served(request, tmp_path) -> Iterator[Served]:
    from mizzen.consulapi.server import ConsulAPI

    if request.param == "sqlite":
        from mizzen.consulapi.kv import SqliteKV
        from mizzen.registry import EmbeddedRegistry
        registry, kv = EmbeddedRegistry(tmp_path / "registry.db"), SqliteKV(tmp_path / "consul-kv.db")
        closers = [registry.close, kv.close]
    else:
        from mizzen.consulapi.kv import EtcdKV
        from mizzen.etcd.client import EtcdClient
        from mizzen.registry.etcd import EtcdRegistry
        cluster = request.getfixturevalue("etcd_cluster")
        prefix = request.getfixturevalue("etcd_prefix")
        client = EtcdClient(cluster.endpoints)
        registry, kv = EtcdRegistry(client, prefix=prefix, ttl=10), EtcdKV(client, prefix=prefix)
        closers = [registry.close, kv.close, client.close]
    port = free_port()
    s = Served(ConsulAPI(registry, kv, advertise=f"127.0.0.1:{port}", refresh=1.0), registry, kv, port)
    s.backend = request.param  # type: ignore[attr-defined]
    yield s
    s.stop()
    for c in closers:
        c()


@pytest.fixture
def consul_client(served):
    import consul

    return consul.Consul(host="127.0.0.1", port=served.port)
