"""The console: an aiohttp app of server-rendered pages over the control plane's REST API, the sidecars'
telemetry windows, the trace store and tap. `make_app(...)` builds it; the control plane mounts it (phase 2),
`python -m mizzen.console` runs it alone.

Pages: /topology /services /services/{host} /proxies /proxies/{id} /config /config/{kind}/{ns}/{name}
/config/new /traces /traces/{id} /tap. JSON for the pages' scripts: /console/api/graph, /console/api/tap (SSE).
Config edits take the CLI's path: parsed and validated here (field errors, nothing sent), analyzed together
with the mesh's config, then applied with `POST /api/v1/apply` (all-or-nothing; the control plane validates
again and its errors are shown the same way).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

import yaml
from aiohttp import web

from ..analyze.analyzers import ERROR, analyze
from ..analyze.inputs import registered_workloads
from ..api import InvalidConfig, from_dict, load_text
from . import model, ratelimits, views
from .auth import token_middleware
from .sources import LocalTraces, RestClient, SourceError, TapSource, Traces, Windows, no_windows

log = logging.getLogger("mizzen.console")
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
ROOT_NAMESPACE = "istio-system"
ACCESS_LOG_NAME = "mizzen-access-log"
REST_KEY = web.AppKey("rest", RestClient)
CONF_KEY = web.AppKey("conf", dict)


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    """A resource as a user edits it: no status, no store bookkeeping."""
    meta = {k: v for k, v in (doc.get("metadata") or {}).items()
            if k in ("name", "namespace", "labels", "annotations")}
    return {"apiVersion": doc.get("apiVersion"), "kind": doc.get("kind"), "metadata": meta,
            "spec": doc.get("spec") or {}}


class Console:
    def __init__(self, rest: RestClient, windows: Windows = no_windows, traces: Traces | None = None,
                 tap: TapSource | None = None) -> None:
        self.rest, self.windows, self.traces, self.tap = rest, windows, traces, tap

    # ------------------------------------------------------------------ data
    async def _gather(self, *paths: str) -> tuple[list[Any], str]:
        """GET several REST paths; on failure, empty answers and the reason for the page's banner."""
        try:
            return list(await asyncio.gather(*(self.rest.get(p) for p in paths))), ""
        except SourceError as e:
            return [{"items": []} for _ in paths], str(e)

    async def _windows(self) -> list[dict[str, Any]]:
        try:
            return await self.windows()
        except Exception as e:  # metrics are optional on every page
            log.warning("telemetry windows unavailable: %s", e)
            return []

    # ------------------------------------------------------------------ pages
    async def topology(self, request: web.Request) -> web.Response:
        graph, banner = await self._graph()
        return _html(views.topology_page(graph, banner))

    async def _graph(self) -> tuple[dict[str, Any], str]:
        (inst, svcs, res), banner = await self._gather("/api/v1/instances", "/api/v1/services",
                                                       "/api/v1/resources?kind=Service")
        return model.topology(inst["items"], svcs["items"], res["items"], await self._windows()), banner

    async def graph_json(self, request: web.Request) -> web.Response:
        graph, banner = await self._graph()
        return web.json_response({**graph, "error": banner, "at": time.time()})

    async def services(self, request: web.Request) -> web.Response:
        (svcs,), banner = await self._gather("/api/v1/services")
        from ..telemetry.golden import stat
        return _html(views.services_page(svcs["items"], stat(await self._windows(), kind="service"), banner))

    async def service(self, request: web.Request) -> web.Response:
        host = request.match_info["host"]
        (svcs, res, inst, allres), banner = await self._gather(
            "/api/v1/services", "/api/v1/resources?kind=Service", "/api/v1/instances", "/api/v1/resources")
        d = model.service_detail(host, svcs["items"], res["items"], inst["items"], allres["items"],
                                 await self._windows())
        if d is None:
            raise web.HTTPNotFound(text=f"no service {host}" + (f" ({banner})" if banner else ""))
        return _html(views.service_page(d))

    async def proxies(self, request: web.Request) -> web.Response:
        (px,), banner = await self._gather("/api/v1/proxies")
        return _html(views.proxies_page(model.proxy_rows(px["items"]), banner))

    async def proxy(self, request: web.Request) -> web.Response:
        pid = request.match_info["id"]
        (px,), banner = await self._gather("/api/v1/proxies")
        row = next((r for r in model.proxy_rows(px["items"]) if r["id"] == pid), None)
        if row is None:
            raise web.HTTPNotFound(text=f"no connected proxy {pid}" + (f" ({banner})" if banner else ""))
        configs = {}
        from urllib.parse import quote
        for t in model.XDS_TYPES:
            status, data = await self.rest.call("GET", f"/api/v1/proxies/{quote(pid, safe='')}/resources?type={t}")
            if status == 200:
                configs[t] = data
        return _html(views.proxy_page(pid, row, configs))

    async def ratelimits(self, request: web.Request) -> web.Response:
        (items,), banner = await self._gather("/api/v1/resources")
        return _html(ratelimits.ratelimits_page(items["items"], banner))

    async def config(self, request: web.Request) -> web.Response:
        (items,), banner = await self._gather("/api/v1/resources")
        return _html(views.config_list_page(items["items"], self._access_log_state(items["items"]), banner))

    @staticmethod
    def _access_log_state(items: list[dict[str, Any]]) -> dict[str, bool]:
        """Namespace-wide access-log switch per namespace (istio-system: the mesh-wide default)."""
        namespaces = {ROOT_NAMESPACE} | {i["metadata"].get("namespace", "default") for i in items
                                        if i.get("kind") != "Namespace"}
        state = {}
        for ns in namespaces:
            tel = [i for i in items if i.get("kind") == "Telemetry" and i["metadata"].get("namespace") == ns
                   and not ((i.get("spec") or {}).get("selector") or {}).get("matchLabels")]
            al = [a for t in tel for a in (t.get("spec") or {}).get("accessLogging") or ()]
            state[ns] = bool(al) and any(not a.get("disabled") for a in al)
        return state

    async def access_log_switch(self, request: web.Request) -> web.Response:
        form = await request.post()
        ns = str(form.get("namespace") or "")
        enabled = form.get("enabled") == "true"
        if not ns:
            raise web.HTTPBadRequest(text="namespace is required")
        doc = {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
               "metadata": {"name": ACCESS_LOG_NAME, "namespace": ns},
               "spec": {"accessLogging": [{"providers": [{"name": "envoy"}], "disabled": not enabled}]}}
        status, data = await self.rest.call("POST", "/api/v1/apply",
                                            {"files": [{"name": "console", "text": yaml.safe_dump(doc)}]})
        if status != 200:
            return _html(views.editor_page("Access-log switch", yaml.safe_dump(doc), issues=data.get("errors", ()),
                                           error=data.get("message", f"HTTP {status}")), status=400)
        raise web.HTTPSeeOther("/config")

    async def router_switch(self, request: web.Request) -> web.Response:
        """New version weights for a Router's branches (the form on /config); applied all-or-nothing."""
        form = await request.post()
        ns, name = str(form.get("namespace") or ""), str(form.get("name") or "")
        status, doc = await self.rest.call("GET", f"/api/v1/resources/Router/{ns}/{name}")
        if status != 200:
            raise web.HTTPNotFound(text=f"no Router {ns}/{name}")
        doc = _clean(doc)
        subsets = doc["spec"].get("subsets") or []
        try:
            for key, value in form.items():
                if not key.startswith("w:"):
                    continue
                _, idx, version = key.split(":", 2)
                versions = subsets[int(idx)].setdefault("versions", {})
                if version not in versions:
                    raise ValueError(f"unknown version {version!r}")
                versions[version] = int(str(value))
        except (ValueError, IndexError) as e:
            raise web.HTTPBadRequest(text=f"bad weight field: {e}")
        text = yaml.safe_dump(doc, sort_keys=False)
        status, data = await self.rest.call("POST", "/api/v1/apply", {"files": [{"name": "console", "text": text}]})
        if status != 200:
            return _html(views.editor_page(f"Router {ns}/{name}", text, key=("Router", ns, name),
                                           issues=data.get("errors", ()),
                                           error=f"Not applied: {data.get('message', f'HTTP {status}')}"), status=400)
        raise web.HTTPSeeOther("/config")

    async def edit(self, request: web.Request) -> web.Response:
        m = request.match_info
        status, data = await self.rest.call("GET", f"/api/v1/resources/{m['kind']}/{m['ns']}/{m['name']}")
        if status == 404:
            raise web.HTTPNotFound(text=f"no {m['kind']} {m['ns']}/{m['name']}")
        if status != 200:
            raise web.HTTPBadGateway(text=str(data))
        return _html(views.editor_page(f"{m['kind']} {m['ns']}/{m['name']}", views.to_yaml(_clean(data)),
                                       key=(m["kind"], m["ns"], m["name"])))

    async def new(self, request: web.Request) -> web.Response:
        return _html(views.editor_page("New resource", "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                                       "metadata:\n  name: \n  namespace: default\nspec:\n  hosts: []\n  http: []\n"))

    async def submit(self, request: web.Request) -> web.Response:
        form = await request.post()
        text = str(form.get("yaml") or "")
        action = str(form.get("action") or "check")
        key = tuple(str(form.get(k) or "") for k in ("kind", "namespace", "name"))
        key = key if all(key) else None
        title = f"{key[0]} {key[1]}/{key[2]}" if key else "New resource"

        def render(status: int = 200, **kw: Any) -> web.Response:
            return _html(views.editor_page(title, text, key=key, **kw), status=status)
        try:
            loaded = load_text(text, file="console")
        except InvalidConfig as e:
            return render(400, issues=[i.to_dict() for i in e.issues])
        if not loaded.resources:
            return render(400, error="nothing to apply: the editor holds no resource")
        # analyze together with the mesh's config (the edited documents win), as `mizzen analyze` does, and with
        # what runs: the registry's instances are pods too (a subset selecting only them selects pods)
        try:
            current = (await self.rest.get("/api/v1/resources"))["items"]
            running = registered_workloads((await self.rest.get("/api/v1/instances"))["items"])
        except SourceError as e:
            return render(502, error=str(e))
        merged = {}
        for d in current:
            try:
                r = from_dict(d)
                merged[r.key] = r
            except Exception:  # a kind this console does not analyze
                continue
        for r in loaded.resources:
            merged[r.key] = r
        messages = [m.to_dict() for m in analyze(merged.values(), running)]
        if action == "check":
            return render(analysis=messages, result="Valid." + ("" if messages else " No analysis findings."))
        if action == "apply" and any(m.get("level") == ERROR for m in messages):
            return render(409, analysis=messages,
                          error="Not applied: the analysis found errors. Fix them, or choose Apply anyway.")
        status, data = await self.rest.call("POST", "/api/v1/apply", {"files": [{"name": "console", "text": text}]})
        if status != 200:
            return render(status if status >= 400 else 502, issues=data.get("errors", ()), analysis=messages,
                          error=f"Not applied: {data.get('message', f'HTTP {status}')}")
        done = ", ".join(f"{a['kind']} {a['namespace']}/{a['name']} {a['action']}" for a in data.get("applied", ()))
        return render(analysis=messages, result=f"Applied at revision {data.get('revision')}: {done}")

    async def traces_list(self, request: web.Request) -> web.Response:
        service = request.query.get("service", "")
        if self.traces is None:
            return _html(views.traces_page([], service, "No trace store configured for this console."))
        try:
            return _html(views.traces_page(await self.traces.recent(100, service), service))
        except SourceError as e:
            return _html(views.traces_page([], service, str(e)))

    async def trace(self, request: web.Request) -> web.Response:
        tid = request.match_info["trace_id"]
        data = await self.traces.trace(tid) if self.traces is not None else None
        return _html(views.trace_page(tid, data), status=200 if data else 404)

    async def tap_page(self, request: web.Request) -> web.Response:
        (inst,), _ = await self._gather("/api/v1/instances")
        workloads = sorted({f'{i.get("namespace")}/{i.get("workload")}' for i in inst["items"] if i.get("sidecar", True)})
        return _html(views.tap_page(workloads, self.tap is not None))

    async def tap_stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: one `data: {event}` per tapped request; `event: end` when the bounds are met."""
        if self.tap is None:
            raise web.HTTPServiceUnavailable(text="no tap source")
        qy = request.query
        ns, _, workload = qy.get("workload", "").rpartition("/")
        try:
            max_events = max(1, min(int(qy.get("max", "100")), 10000))
        except ValueError:
            raise web.HTTPBadRequest(text="max must be an integer")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        try:
            async for ev in self.tap(workload, ns or "default", qy.get("path", ""), qy.get("method", ""),
                                     max_events, 60.0):
                await resp.write(f"data: {json.dumps(ev)}\n\n".encode())
            await resp.write(b"event: end\ndata: {}\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:
            await resp.write(f"event: error\ndata: {json.dumps({'message': str(e)})}\n\n".encode())
        return resp


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def make_app(rest: RestClient, *, windows: Windows = no_windows, traces: Traces | None = None,
             tap: TapSource | None = None, token: str | None = None) -> web.Application:
    """`token`: access token the console requires (console/auth.py); None: open (tests, a private console)."""
    c = Console(rest, windows, traces, tap)
    middlewares = [token_middleware(token)] if token else []
    app = web.Application(client_max_size=8 * 1024 * 1024, middlewares=middlewares)
    app[REST_KEY] = rest

    async def index(request: web.Request) -> web.Response:
        raise web.HTTPFound("/topology")

    app.router.add_get("/", index)
    app.router.add_get("/topology", c.topology)
    app.router.add_get("/console/api/graph", c.graph_json)
    app.router.add_get("/services", c.services)
    app.router.add_get("/services/{host}", c.service)
    app.router.add_get("/proxies", c.proxies)
    app.router.add_get("/proxies/{id}", c.proxy)
    app.router.add_get("/config", c.config)
    app.router.add_get("/ratelimits", c.ratelimits)
    app.router.add_get("/config/new", c.new)
    app.router.add_post("/config/edit", c.submit)
    app.router.add_post("/config/switches/access-log", c.access_log_switch)
    app.router.add_post("/config/switches/router", c.router_switch)
    app.router.add_get("/config/{kind}/{ns}/{name}", c.edit)
    app.router.add_get("/traces", c.traces_list)
    app.router.add_get("/traces/{trace_id}", c.trace)
    app.router.add_get("/tap", c.tap_page)
    app.router.add_get("/console/api/tap", c.tap_stream)
    app.router.add_static("/static", STATIC)

    async def close(app: web.Application) -> None:
        await rest.close()
    app.on_cleanup.append(close)
    return app


__all__ = ["make_app", "Console", "LocalTraces"]
