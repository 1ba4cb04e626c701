"""Benchmarks of the distributed backends (part of `make bench`, never pass/fail): registration throughput and
apply latency on SQLite vs a local 3-member etcd cluster in the same run, the Consul API's blocking-query
wake-up latency (registration → the blocked health query returns) on both, and the latency from a
registration (the agents' REST path, or the Consul API) to its EDS update at every one of 100 proxies (real
control-plane process, real Delta ADS streams: bench/xds_load.py) on both."""
from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from ..api import Resource, from_dict
from ..local.procs import free_ports
from ..model.types import Instance


def _vs(name: str, subset: str = "v1") -> Resource:
    return from_dict({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                      "metadata": {"name": name, "namespace": "default"},
                      "spec": {"hosts": [name], "http": [{"route": [{"destination": {"host": name, "subset": subset}}]}]}})


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def _backends(tmp: Path, endpoints: list[str]) -> dict[str, Callable[[str], tuple[Any, Any]]]:
    from ..registry.embedded import EmbeddedRegistry
    from ..registry.etcd import EtcdRegistry
    from ..store.etcd import EtcdStore
    from ..store.sqlite import SqliteStore

    def sqlite(tag: str) -> tuple[Any, Any]:
        return SqliteStore(tmp / f"{tag}-store.db"), EmbeddedRegistry(tmp / f"{tag}-registry.db")

    def etcd(tag: str) -> tuple[Any, Any]:
        return (EtcdStore.open(endpoints, prefix=f"/bench-{tag}/"),
                EtcdRegistry.open(endpoints, prefix=f"/bench-{tag}/", ttl=60))

    return {"sqlite": sqlite, "etcd (3 members)": etcd}


def _store_registry(open_: Callable[[str], tuple[Any, Any]], registrations: int, applies: int) -> dict[str, float]:
    store, reg = open_("sr")
    try:
        t0 = time.perf_counter()
        for i in range(registrations):
            reg.upsert(Instance(id=f"default.p-{i}", namespace="default", workload="p",
                                address=f"10.1.{i // 250}.{i % 250}", ports=(8080,)))
        reg_rate = registrations / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(registrations):  # heartbeats: unchanged re-registrations
            reg.upsert(Instance(id=f"default.p-{i}", namespace="default", workload="p",
                                address=f"10.1.{i // 250}.{i % 250}", ports=(8080,)))
        beat_rate = registrations / (time.perf_counter() - t0)
        lat = []
        for i in range(applies):
            t = time.perf_counter()
            store.apply([_vs(f"one-{i % 10}", subset=f"v{i}")])
            lat.append((time.perf_counter() - t) * 1000)
        big = [_vs(f"big-{i}") for i in range(500)]
        t = time.perf_counter()
        store.apply(big)
        big_ms = (time.perf_counter() - t) * 1000
        return {"reg/s": reg_rate, "beat/s": beat_rate, "p50": statistics.median(lat), "p99": _pct(lat, 99),
                "big": big_ms}
    finally:
        store.close()
        reg.close()


def _wakeups(open_: Callable[[str], tuple[Any, Any]], kv: Any, rounds: int) -> list[float]:
    """Time from a Consul registration's request to the return of a health query blocked on the old index."""
    from aiohttp import web

    from ..consulapi.server import ConsulAPI

    store, reg = open_("bq")
    store.close()
    port = free_ports(1)[0]
    api = ConsulAPI(reg, kv, advertise=f"127.0.0.1:{port}")
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(api.app())
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    started.wait(10)
    base = f"http://127.0.0.1:{port}"
    out: list[float] = []
    try:
        for i in range(rounds):
            with urllib.request.urlopen(f"{base}/v1/health/service/bench", timeout=10) as r:
                index = r.headers["X-Consul-Index"]
            done: dict[str, float] = {}

            def block() -> None:
                with urllib.request.urlopen(f"{base}/v1/health/service/bench?index={index}&wait=30s", timeout=40) as r:
                    r.read()
                done["t"] = time.perf_counter()

            t = threading.Thread(target=block)
            t.start()
            time.sleep(0.2)  # the query is blocked
            req = urllib.request.Request(f"{base}/v1/agent/service/register", method="PUT",
                                         data=json.dumps({"Name": "bench", "ID": f"bench-{i}", "Port": 80}).encode())
            t0 = time.perf_counter()
            urllib.request.urlopen(req, timeout=10).read()
            t.join(40)
            out.append((done["t"] - t0) * 1000)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        th.join(10)
        reg.close()
    return out


def eds_latency(endpoints: list[str], proxies: int = 100, services: int = 50, changes: int = 20,
                log: Callable[[str], None] = lambda s: None) -> str:
    """Registration → EDS update received (and ACKed) by each of `proxies` Delta streams, per backend and
    registration path. The proxies ACK at once, so the time to the update is the time to the ACK."""
    import uuid

    from .xds_load import BenchOptions, run_bench

    rows = []
    for backend, url in (("sqlite", None), ("etcd (3 members)", "etcd://" + ",".join(endpoints) +
                                                                 f"/bench-eds-{uuid.uuid4().hex[:6]}/")):
        for via, label in (("rest", "agent (REST PUT)"), ("consul", "Consul API register")):
            o = BenchOptions(proxies=proxies, services=services, changes=changes, workers=1, store_url=url,
                             via=via, timeout=600)
            r = asyncio.run(run_bench(o, log))
            rows.append(f"| {backend} | {label} | {r.pct(50):.1f} | {r.pct(99):.1f} | "
                        f"{(sum(r.all_ms) / len(r.all_ms)) if r.all_ms else float('nan'):.1f} | {r.missing} | "
                        f"{r.cp_cpu_changes_s:.2f} |")
    return (f"Registration → EDS update at every proxy ({proxies} Delta ADS streams, {services} services, "
            f"{changes} changes of one instance; one control-plane process; push debounce 100 ms):\n\n"
            "| backend | registered through | p50 ms | p99 ms | until the last proxy, mean ms | missed | "
            "CP CPU s (changes) |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def run(registrations: int = 500, applies: int = 100, rounds: int = 20) -> str:
    from ..consulapi.kv import EtcdKV, SqliteKV
    from ..etcd.client import EtcdClient
    from ..etcd.cluster import LocalCluster

    if shutil.which("etcd") is None:
        return "skipped: etcd is not installed (make sysdeps installs etcd-server)\n"
    tmp = Path(tempfile.mkdtemp(prefix="mizzen-bench-dist-"))
    cluster = LocalCluster(tmp / "etcd")
    try:
        endpoints = cluster.up(3)
        rows, wake = [], []
        for name, open_ in _backends(tmp, endpoints).items():
            r = _store_registry(open_, registrations, applies)
            rows.append(f"| {name} | {r['reg/s']:.0f} | {r['beat/s']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | "
                        f"{r['big']:.0f} |")
            client = EtcdClient(endpoints) if name.startswith("etcd") else None
            kv = EtcdKV(client, prefix="/bench-kv/") if client else SqliteKV(tmp / "kv.db")
            try:
                w = _wakeups(open_, kv, rounds)
            finally:
                kv.close()
                if client:
                    client.close()
            wake.append(f"| {name} | {statistics.median(w):.1f} | {_pct(w, 99):.1f} | {max(w):.1f} |")
        eds = eds_latency(endpoints)
        return ("Registrations and applies (one thread; etcd: fsync on every commit, 3 members on this machine):\n\n"
                f"| backend | registrations/s ({registrations} new) | heartbeats/s (unchanged) | apply p50 ms | "
                f"apply p99 ms ({applies} × 1 resource) | apply of 500 resources ms |\n|---|---|---|---|---|---|\n"
                + "\n".join(rows) +
                f"\n\nConsul API blocking query: registration request → blocked `GET /v1/health/service` returns "
                f"({rounds} rounds):\n\n| backend | p50 ms | p99 ms | max ms |\n|---|---|---|---|\n" + "\n".join(wake) + "\n\n"
                + eds)
    finally:
        cluster.down(purge=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    print(run())
