"""The control plane's telemetry endpoints on the REST API, answered from the sidecars themselves (their agents'
control sockets, found through the state-dir layout: `pods/<pod>/agent.sock`), so the CLI (`mizzen stat`, `top`,
`tap`) and the console need no per-pod access and no Prometheus:

    GET  /api/v1/telemetry/windows                     {"items": [window per sidecar], "errors": [...]}
    GET  /api/v1/telemetry/top?workload=W&namespace=N&n=20   {"paths": merged over W's replicas, "replicas", ...}
    POST /api/v1/telemetry/tap {workload, namespace, path, method, max, seconds, bytes}
                                                       JSON lines: tapped requests of every replica of the
                                                       workload, then {"event": "end", ...}; 404 for a workload
                                                       with no running sidecar
    GET  /metrics                                      the control plane's own metrics (prometheus-client)

and the REST middleware that records request latencies (by route pattern) and apply results.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, AsyncIterator, Callable

from aiohttp import web

from ..client.aio import AsyncAgentControl
from ..client.errors import ClientError
from ..client.layout import PodDir, StateLayout
from ..model.types import Instance
from ..telemetry.cpmetrics import ControlPlaneMetrics
from ..telemetry.tap import MAX_EVENTS, MAX_SECONDS, TapError, tap_request
from ..telemetry.top import merge_snapshots

log = logging.getLogger("mizzen.telemetry")

AGENT_TIMEOUT = 2.0
MAX_TAP_BYTES = 16 * 1024 * 1024


class Agents:
    """The sidecars' agents of the mesh in `layout`, as the registry lists them (`instances()`)."""

    def __init__(self, layout: StateLayout, instances: Callable[[], list[Instance]]) -> None:
        self.layout = layout
        self.instances = instances

    def pods(self, workload: str | None = None, namespace: str | None = None) -> list[tuple[Instance, PodDir]]:
        out = []
        for inst in self.instances():
            if not inst.sidecar or inst.source not in ("agent", ""):
                continue
            if (workload and inst.workload != workload) or (namespace and inst.namespace != namespace):
                continue
            pod = inst.id.split(".", 1)[1] if inst.id.startswith(inst.namespace + ".") else inst.id
            out.append((inst, self.layout.pod(pod)))
        return sorted(out, key=lambda x: x[0].id)

    async def windows(self) -> tuple[list[dict[str, Any]], list[str]]:
        items: list[dict[str, Any]] = []
        errors: list[str] = []

        async def one(inst: Instance, pod: PodDir) -> None:
            try:
                w = await AsyncAgentControl(pod.agent_socket, timeout=AGENT_TIMEOUT).window()
                w["pod"] = pod.name
                items.append(w)
            except (ClientError, ValueError) as e:
                errors.append(f"{pod.name}: {e}")
        await asyncio.gather(*(one(i, p) for i, p in self.pods()))
        return sorted(items, key=lambda w: w.get("pod", "")), sorted(errors)

    async def top(self, workload: str, namespace: str, n: int) -> dict[str, Any]:
        pods = self.pods(workload, namespace)
        snaps: list[dict[str, Any]] = []
        errors: list[str] = []

        async def one(pod: PodDir) -> None:
            try:
                snaps.append(await AsyncAgentControl(pod.agent_socket, timeout=AGENT_TIMEOUT).top(200))
            except (ClientError, ValueError) as e:
                errors.append(f"{pod.name}: {e}")
        await asyncio.gather(*(one(p) for _, p in pods))
        return {"workload": workload, "namespace": namespace, "replicas": len(pods), "at": time.time(),
                "total": sum(int(s.get("total", 0)) for s in snaps), "paths": merge_snapshots(snaps, n),
                # replicas counting metrics in Envoy: their paths are sampled from the first top read on
                "sampled": sum(1 for s in snaps if s.get("sampling")),
                "errors": sorted(errors)}

    async def tap(self, workload: str, namespace: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Every replica's tap merged into one stream, ending with one {"event": "end"} line."""
        pods = self.pods(workload, namespace)
        queue: asyncio.Queue = asyncio.Queue(1000)
        seconds = float(body.get("seconds", 60))
        ends: list[dict[str, Any]] = []

        async def one(pod: PodDir) -> None:
            try:
                async for row in AsyncAgentControl(pod.agent_socket).tap(body, seconds):
                    if row.get("event") == "end":
                        ends.append(dict(row, pod=pod.name))
                    else:
                        await queue.put(dict(row, pod=pod.name))
            except (ClientError, ValueError) as e:
                ends.append({"event": "end", "reason": f"error: {e}", "rows": 0, "dropped": 0, "pod": pod.name})
            finally:
                await queue.put(None)
        tasks = [asyncio.create_task(one(p)) for _, p in pods]
        limit = int(body.get("max", 100))
        rows = 0
        try:
            done = 0
            while done < len(tasks) and rows < limit:
                row = await queue.get()
                if row is None:
                    done += 1
                    continue
                yield row
                rows += 1
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        reasons = sorted({e.get("reason", "") for e in ends})
        yield {"event": "end", "rows": rows, "reason": "count" if rows >= limit else ", ".join(reasons) or "time",
               "dropped": sum(int(e.get("dropped", 0)) for e in ends), "replicas": len(pods),
               "errors": [f"{e['pod']}: {e['reason']}" for e in ends if str(e.get("reason", "")).startswith("error")]}


def routes(agents: Agents, metrics: ControlPlaneMetrics) -> list[web.RouteDef]:
    async def windows(request: web.Request) -> web.Response:
        items, errors = await agents.windows()
        return web.json_response({"items": items, "errors": errors})

    async def top(request: web.Request) -> web.Response:
        q = request.query
        workload, ns = q.get("workload", ""), q.get("namespace") or "default"
        try:
            n = max(1, min(int(q.get("n", "20")), 200))
        except ValueError:
            return web.json_response({"message": "n must be an integer"}, status=400)
        if not workload:
            return web.json_response({"message": "query parameter 'workload' is required"}, status=400)
        if not agents.pods(workload, ns):
            return web.json_response({"message": _unknown(agents, workload, ns)}, status=404)
        return web.json_response(await agents.top(workload, ns, n))

    async def tap(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            workload, ns = str(body.get("workload") or ""), str(body.get("namespace") or "default")
            if not workload:
                raise ValueError("'workload' is required")
            tap_request(str(body.get("path") or ""), str(body.get("method") or ""))
            body["max"] = max(1, min(int(body.get("max", 100)), MAX_EVENTS))
            body["seconds"] = max(0.1, min(float(body.get("seconds", 60)), MAX_SECONDS))
            body["bytes"] = max(1024, min(int(body.get("bytes", 1024 * 1024)), MAX_TAP_BYTES))
        except (ValueError, TypeError, TapError) as e:
            return web.json_response({"message": f"bad tap request: {e}"}, status=400)
        if not agents.pods(workload, ns):
            return web.json_response({"message": _unknown(agents, workload, ns)}, status=404)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(b"")
        agent_body = {k: body[k] for k in ("path", "method", "max", "seconds", "bytes") if k in body}
        rows = agents.tap(workload, ns, agent_body)
        try:
            async for row in rows:
                await resp.write((json.dumps(row) + "\n").encode())
        finally:
            await rows.aclose()
        return resp

    async def prometheus(request: web.Request) -> web.Response:
        body, ctype = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": ctype})

    return [web.get("/api/v1/telemetry/windows", windows), web.get("/api/v1/telemetry/top", top),
            web.post("/api/v1/telemetry/tap", tap), web.get("/metrics", prometheus)]


def _unknown(agents: Agents, workload: str, namespace: str) -> str:
    known = sorted({f"{i.namespace}/{i.workload}" for i, _ in agents.pods()})
    return (f"no running sidecar of workload {namespace}/{workload} (workloads with sidecars: "
            f"{', '.join(known) or 'none'})")


def metrics_middleware(metrics: ControlPlaneMetrics):
    """REST latency by method, route pattern (never the raw path) and status class; apply results."""
    @web.middleware
    async def mw(request: web.Request, handler) -> web.StreamResponse:
        t0 = time.perf_counter()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            dt = time.perf_counter() - t0
            info = request.match_info.route.resource if request.match_info.route else None
            route = info.canonical if info is not None else "unmatched"
            metrics.api_request(request.method, route, status, dt)
            if route == "/api/v1/apply" and request.method == "POST":
                result = {200: "applied", 400: "rejected", 409: "conflict"}.get(status, "error")
                kinds: tuple[str, ...] = ()
                if status == 400:
                    kinds = _rejected_kinds(locals().get("resp"))
                metrics.applied(result, dt, kinds)
    return mw


def _rejected_kinds(resp: Any) -> tuple[str, ...]:
    try:
        body = json.loads(resp.body)
        return tuple(sorted({str(e.get("kind") or "unknown") for e in body.get("errors", ())}))
    except Exception:  # noqa: BLE001 - a metric label, best effort
        return ()
