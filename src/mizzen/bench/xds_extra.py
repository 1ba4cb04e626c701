"""The xDS load test's extra scenarios (issue 15): Sidecar-scoped proxies, a change of one service's routes,
and a control-plane restart with every proxy reconnecting. Driven from `xds_load._run` after its EDS changes.

- scoped (`BenchOptions.scoped`): half the load streams (odd indexes) carry `app=bench-scoped`, which `SIDECAR`
  selects: their view is `ALLOWED` services (svc-0 among them, so they still see the watched EDS changes);
- route changes (`route_changes`): K applies of a VirtualService on svc-0 setting a request header whose value
  is a marker (`mzbench-<k>`); each stream reports when an RDS response carrying the marker arrived;
- churn (`churn_rate` for `churn_seconds`): registration changes of random instances at that rate, paced;
  once a second one of them is an instance of the watched svc-0 (in turn), timed until every stream has it;
  failed writes counted;
- restart (`restart`): SIGTERM the control plane, start it again on the same state dir and xDS port; the
  instance svc-0-0 gets a new address as soon as it is ready; the time until every stream has it.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time

import aiohttp

from .xds_common import NAMESPACE, _profile, percentile, proc_cpu_seconds

ALLOWED = 5
SIDECAR = ("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: bench-scoped\n"
           f"  namespace: {NAMESPACE}\nspec:\n  workloadSelector:\n    labels:\n      app: bench-scoped\n"
           "  egress:\n  - hosts:\n" + "".join(f"    - ./svc-{i}.{NAMESPACE}.svc.cluster.local\n"
                                               for i in range(ALLOWED)))


def route_yaml(marker: str) -> str:
    """A VirtualService on svc-0 whose only visible effect on the wire is the marker (a header value)."""
    host = f"svc-0.{NAMESPACE}.svc.cluster.local"
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: svc-0-bench\n"
            f"  namespace: {NAMESPACE}\nspec:\n  hosts: [{host}]\n  http:\n"
            f"  - headers: {{request: {{set: {{x-mizzen-bench: {marker}}}}}}}\n"
            f"    route: [{{destination: {{host: {host}}}}}]\n")


async def _await_seen(workers, token: str, t0: float, timeout: float,
                      opened: list[tuple[float, float]] | None = None) -> tuple[list[float], int]:
    """Ask every load worker for the times its streams first saw `token`: (latencies ms from t0, missing); with
    `opened`, also (when the stream that saw it was opened, when it saw it) per stream."""
    for w in workers:
        await w.send({"cmd": "expect", "address": token, "timeout": timeout})
    lat: list[float] = []
    missing = 0
    for w in workers:
        ev = await w.next_event(timeout + 30)
        assert ev["event"] == "seen", ev
        lat += [(t - t0) * 1000 for t in ev["times"]]
        missing += ev["missing"]
        if opened is not None:
            opened += zip(ev.get("attempts", ()), ev["times"])
    return lat, missing


async def apply(http: aiohttp.ClientSession, api: str, text: str) -> None:
    async with http.post(f"{api}/api/v1/apply", json={"files": [{"name": "bench-extra.yaml", "text": text}],
                                                       "namespace": NAMESPACE}) as r:
        if r.status != 200:
            raise RuntimeError(f"apply failed: {r.status} {await r.text()}")


async def route_changes(o, res, ctx, http: aiohttp.ClientSession, api: str, log) -> None:
    sampler = _profile(o, ctx.cp.pid, "routes", log)  # with --profile DIR: DIR/routes.txt
    cpu0 = proc_cpu_seconds(ctx.cp.pid)
    for k in range(o.route_changes):
        marker = f"mzbench-{k}"
        t0 = time.monotonic()
        await apply(http, api, route_yaml(marker))
        applied = (time.monotonic() - t0) * 1000  # the REST apply (validation, store commit) is in the figure
        lat, missing = await _await_seen(ctx.workers, marker, t0, 30)
        res.route_latencies_ms += lat
        res.route_missing += missing
        log(f"route change {k + 1}/{o.route_changes}: apply returned after {applied:.0f} ms; first "
            f"{min(lat) if lat else float('nan'):.0f} ms, all {max(lat) if lat else float('nan'):.0f} ms, "
            f"{missing} missing")
    res.cp_cpu_routes_s = proc_cpu_seconds(ctx.cp.pid) - cpu0
    if sampler is not None:
        res.profiles["routes"] = sampler.stop()


async def floor_route_changes(o, res, ctx, floor, log) -> None:
    """The same K route changes against the bare gRPC floor (`xds_floor.Floor.route`): the same RouteConfiguration
    bytes written to every stream at once — what the wire costs, without debounce or any control-plane logic."""
    for k in range(o.route_changes):
        marker = f"mzbench-{100 + k}"  # not one the floor's initial routes (proxy 0's, saved) already carry
        t0 = time.monotonic()
        cpu0 = proc_cpu_seconds(floor.proc.pid)
        await floor.send({"cmd": "route", "marker": marker})
        await floor.next_event(30)
        lat, missing = await _await_seen(ctx.workers, marker, t0, 30)
        res.route_latencies_ms += lat
        res.route_missing += missing
        res.cp_cpu_routes_s += proc_cpu_seconds(floor.proc.pid) - cpu0
        log(f"floor route change {k + 1}/{o.route_changes}: all {max(lat) if lat else float('nan'):.0f} ms, "
            f"{missing} missing")


async def wait_ready(cp: subprocess.Popen, http: aiohttp.ClientSession, api: str, state: str,
                     timeout: float) -> None:
    """The control plane answers /healthz ready; then the session carries its (new) admin token."""
    deadline = time.monotonic() + timeout
    while True:
        if cp.poll() is not None:
            raise RuntimeError(f"control plane exited with {cp.returncode}; see its log in {state}")
        try:
            async with http.get(f"{api}/healthz") as r:
                if r.status == 200 and (await r.json()).get("ready"):
                    break
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"control plane not ready after {timeout:.0f} s")
        await asyncio.sleep(0.05)
    with open(os.path.join(state, "admin.token")) as f:
        http.headers["Authorization"] = f"Bearer {f.read().strip()}"


async def restart(o, res, ctx, http: aiohttp.ClientSession, api: str, cmd: list[str], put, log) -> None:
    client_cpu0 = sum(proc_cpu_seconds(w.proc.pid) for w in ctx.workers)
    t_kill = time.monotonic()
    ctx.cp.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(ctx.cp.wait, 30)
    except subprocess.TimeoutExpired:
        ctx.cp.kill()
        await asyncio.to_thread(ctx.cp.wait)
    res.restart_stop_s = time.monotonic() - t_kill
    with open(os.path.join(ctx.state, "controlplane.log"), "ab") as logf:
        cp = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    ctx.cp = cp
    res.pids.append(cp.pid)
    await wait_ready(cp, http, api, ctx.state, 120)
    t_ready = time.monotonic()
    sampler = _profile(o, cp.pid, "restart", log)  # with --profile DIR: DIR/restart.txt, ready -> all have it
    res.restart_ready_s = t_ready - t_kill
    address = "127.3.0.1"
    await put(0, 0, address)
    opened: list[tuple[float, float]] = []
    lat, res.restart_missing = await _await_seen(ctx.workers, address, t_ready, 120, opened)
    res.restart_push_s = max(lat) / 1000 if lat else float("nan")
    # split: the clients' retry back-off (when the last stream came back) and the server's part (a stream opened
    # -> it has the change; streams already back before ready count from ready)
    res.restart_last_open_s = max((a - t_ready for a, _ in opened), default=float("nan"))
    res.restart_serve_max_s = max((t - max(a, t_ready) for a, t in opened), default=float("nan"))
    res.restart_cp_cpu_s = proc_cpu_seconds(cp.pid)  # the new process: its whole life (start, storm, push)
    res.restart_client_cpu_s = sum(proc_cpu_seconds(w.proc.pid) for w in ctx.workers) - client_cpu0
    if sampler is not None:
        res.profiles["restart"] = sampler.stop()
    log(f"restart: SIGTERM -> exited {res.restart_stop_s:.2f} s, -> ready {res.restart_ready_s:.2f} s; every proxy "
        f"had the next change {res.restart_push_s:.2f} s later ({res.restart_missing} missing; p50 "
        f"{percentile(lat, 50) / 1000:.2f} s); the last stream reopened {res.restart_last_open_s:.2f} s after ready, "
        f"longest reopened -> has it {res.restart_serve_max_s:.2f} s; CPU s from SIGTERM: new control plane "
        f"{res.restart_cp_cpu_s:.1f}, load clients {res.restart_client_cpu_s:.1f}")


async def churn(o, res, ctx, put, log) -> None:
    """`o.churn_rate` instance changes per second for `o.churn_seconds`; once a second a timed one (of svc-0)."""
    rng = random.Random(15)
    queue: asyncio.Queue = asyncio.Queue()

    async def measure() -> None:  # one at a time: a worker answers its expects in order on one pipe
        while (item := await queue.get()) is not None:
            lat, missing = await _await_seen(ctx.workers, item[0], item[1], 30)
            res.churn_latencies_ms += lat
            res.churn_missing += missing
            if missing:
                log(f"churn: {missing} streams never got {item[0]} (changed at +{item[1] - t_start:.2f} s)")

    async def one(i: int, j: int, address: str) -> None:
        try:
            await put(i, j, address)
        except Exception as e:  # noqa: BLE001 - counted: a registration the control plane did not take
            res.churn_failed += 1
            if res.churn_failed <= 3:
                log(f"churn: PUT failed: {e}")

    meter = asyncio.create_task(measure())
    tasks: list[asyncio.Task] = []
    t_start = time.monotonic()
    k = 0
    while time.monotonic() < t_start + o.churn_seconds:
        if k % o.churn_rate == 0:
            # rotate over svc-0's instances: each timed address then stays o.instances seconds, longer than the
            # debounce's max wait (1 s), so a later timed change never supersedes it before it is pushed
            n = k // o.churn_rate
            address = f"127.4.{n // 250 % 250}.{n % 250 + 1}"
            t0 = time.monotonic()
            await one(0, n % o.instances, address)
            queue.put_nowait((address, t0))
        else:
            i, j = 1 + rng.randrange(max(1, o.services - 1)), rng.randrange(o.instances)
            tasks.append(asyncio.create_task(one(i, j, f"127.5.{k // 250 % 250}.{k % 250 + 1}")))
        k += 1
        await asyncio.sleep(max(0.0, t_start + k / o.churn_rate - time.monotonic()))
    await asyncio.gather(*tasks)
    res.churn_sent = k
    res.churn_elapsed_s = time.monotonic() - t_start
    queue.put_nowait(None)
    await meter
    log(f"churn: {k} changes in {res.churn_elapsed_s:.1f} s, {res.churn_failed} failed; timed changes p99 "
        f"{percentile(res.churn_latencies_ms, 99):.0f} ms, {res.churn_missing} missing")
