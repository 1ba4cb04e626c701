"""The REST API (docs/internals.md): thin aiohttp handlers over ControlPlaneCore.

Handlers run on the control plane's event loop, which also serves xDS, so nothing slow runs in them: apply
awaits `ControlPlaneCore.apply_async` (parsing and validation — rendering, `envoy --mode validate` — in a
worker thread); the other handlers are quick store/registry reads and writes, called directly. Store and
registry writes happen on the loop thread, so their subscribers run on the loop and may use asyncio freely
(e.g. schedule a push).
"""
from __future__ import annotations

import asyncio
import json
import logging
import zlib
from typing import Any, Awaitable, Callable

from aiohttp import web

from ..api import InvalidConfig, Issue
from ..store.base import NotFound, RevisionConflict
from .core import ControlPlaneCore
from ..unixpath import serve_app

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CORE_KEY: web.AppKey[ControlPlaneCore] = web.AppKey("core", ControlPlaneCore)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, separators=(",", ":")))


def _not_found_body(e: NotFound) -> dict[str, Any]:
    return {"message": str(e),
            "missing": [{"kind": k.kind, "namespace": k.namespace, "name": k.name} for k in e.keys]}


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except InvalidConfig as e:
        n = len(e.issues)
        return _json({"message": f"invalid input: {n} problem{'s' if n != 1 else ''}",
                      "errors": [i.to_dict() for i in e.issues]}, 400)
    except NotFound as e:
        return _json(_not_found_body(e), 404)
    except RevisionConflict as e:
        return _json({"message": f"conflict: {e}"}, 409)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _json({"message": e.reason}, e.status)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _json({"message": "internal error (see the control plane log)"}, 500)


MAX_BODY = 16 * 1024 * 1024  # a request body, after Content-Encoding is undone (a gzip bomb stops here: 413)
_SYNC_PARSE = 64 * 1024  # bigger bodies are parsed in a thread, not on the event loop


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except RecursionError:
        raise InvalidConfig([Issue("request body is nested too deeply", "<request>")]) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidConfig([Issue(f"request body is not valid UTF-8 JSON: {str(e)[:200]}", "<request>")]) from None


async def _body(request: web.Request) -> dict[str, Any]:
    charset = (request.charset or "utf-8").lower().replace("_", "-")
    if charset not in ("utf-8", "utf8", "us-ascii", "ascii"):
        raise web.HTTPUnsupportedMediaType(reason=f"charset {charset[:40]!r} is not supported: send UTF-8 JSON")
    raw = _decoded(request.headers.get("Content-Encoding", ""), await request.read())
    data = _parse_json(raw) if len(raw) <= _SYNC_PARSE else await asyncio.to_thread(_parse_json, raw)
    if not isinstance(data, dict):
        raise InvalidConfig([Issue("request body must be a JSON object", "<request>")])
    return data


def _decoded(encoding: str, body: bytes) -> bytes:
    """Undo a Content-Encoding ourselves (aiohttp's automatic decoding is off): bounded, so that a gzip bomb
    stops at MAX_BODY, and a body that does not decode is a 400, not a dropped connection."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    if enc not in ("gzip", "x-gzip", "deflate"):
        raise web.HTTPUnsupportedMediaType(reason=f"Content-Encoding {enc[:40]!r} is not supported (gzip, deflate)")
    d = zlib.decompressobj(wbits=31 if "gzip" in enc else 15)
    try:
        out = d.decompress(body, MAX_BODY + 1)
    except zlib.error as e:
        raise InvalidConfig([Issue(f"request body cannot be read as {enc}: {e}", "<request>")]) from None
    if len(out) > MAX_BODY or d.unconsumed_tail:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=len(out))
    return out


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "all", "yes")


def _files(data: dict[str, Any]) -> tuple[list[tuple[str, str]], str | None]:
    files = data.get("files")
    if not isinstance(files, list):
        raise InvalidConfig([Issue("'files' must be a list of {name, text}", "<request>", path="files")])
    out: list[tuple[str, str]] = []
    for i, f in enumerate(files):
        if not isinstance(f, dict) or not isinstance(f.get("text"), str):
            raise InvalidConfig([Issue("each file needs a string 'text'", "<request>", path=f"files[{i}]")])
        out.append((str(f.get("name") or f"<file {i}>"), f["text"]))
    ns = data.get("namespace")
    if ns is not None and not isinstance(ns, str):
        raise InvalidConfig([Issue("'namespace' must be a string", "<request>", path="namespace")])
    return out, ns or None


def make_app(core: ControlPlaneCore, *, ready: Callable[[], bool],
             services: Callable[[], list[dict[str, Any]]],
             proxies: Callable[[], list[dict[str, Any]]],
             proxy_resources: Callable[[str, str], dict[str, Any] | None],
             egress: Callable[[str, dict[str, str]], dict[str, Any]] | None = None) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY,
                          handler_args={"auto_decompress": False})  # see _decoded
    app[CORE_KEY] = core

    async def healthz(request: web.Request) -> web.Response:
        ok = bool(ready())
        return _json({"ready": ok}, 200 if ok else 503)

    async def apply(request: web.Request) -> web.Response:
        files, ns = _files(await _body(request))
        # ?dryRun=true: every check, nothing stored (kubectl's --dry-run=server); ?skipUnknown=true: unknown kinds warn
        return _json(await core.apply_async(files, ns, dry_run=_flag(request, "dryRun"),
                                            skip_unknown=_flag(request, "skipUnknown")))

    async def delete_files(request: web.Request) -> web.Response:
        files, ns = _files(await _body(request))
        return _json(core.delete_files(files, ns))

    async def list_resources(request: web.Request) -> web.Response:
        q = request.query
        return _json({"items": core.list(q.get("kind") or None, q.get("namespace") or None)})

    async def get_resource(request: web.Request) -> web.Response:
        m = request.match_info
        return _json(core.get(m["kind"], m["ns"], m["name"]))

    async def delete_resource(request: web.Request) -> web.Response:
        m = request.match_info
        return _json(core.delete(m["kind"], m["ns"], m["name"]))

    async def list_services(request: web.Request) -> web.Response:
        return _json({"items": services()})

    async def put_instance(request: web.Request) -> web.Response:
        changed = core.upsert_instance(await _body(request), request.match_info["id"])
        return _json({"ok": True, "changed": changed})

    async def delete_instance(request: web.Request) -> web.Response:
        return _json({"ok": True, "removed": core.remove_instance(request.match_info["id"])})

    async def list_instances(request: web.Request) -> web.Response:
        return _json({"items": core.instances()})

    async def list_proxies(request: web.Request) -> web.Response:
        return _json({"items": proxies()})

    async def get_proxy_resources(request: web.Request) -> web.Response:
        pid = request.match_info["id"]
        type_ = request.query.get("type", "").upper()
        if not type_:
            raise InvalidConfig([Issue("query parameter 'type' is required (CDS, EDS, LDS, RDS)", "<request>",
                                       path="type")])
        out = proxy_resources(pid, type_)
        if out is None:
            raise NotFound(message=f"no connected proxy {pid!r}")
        return _json(out)

    async def post_egress(request: web.Request) -> web.Response:
        """What workloads may reach: `{"workloads": [{"namespace", "labels"}]}` -> `{"items": [{"namespace",
        "labels", "mode": ALLOW_ANY|REGISTRY_ONLY, "hosts": [visible service hostnames]}]}` (a query; POST
        because it takes a list)."""
        body = await _body(request)
        groups = body.get("workloads") if isinstance(body, dict) else None
        if not isinstance(groups, list) or egress is None:
            raise InvalidConfig([Issue('expected {"workloads": [{"namespace": ..., "labels": {...}}]}', "<request>",
                                       path="workloads")])
        items = []
        for i, g in enumerate(groups):
            ns, labels = (g.get("namespace"), g.get("labels") or {}) if isinstance(g, dict) else (None, None)
            if not isinstance(ns, str) or not isinstance(labels, dict):
                raise InvalidConfig([Issue("each workload needs a namespace and labels", "<request>",
                                           path=f"workloads[{i}]")])
            items.append({"namespace": ns, "labels": labels, **egress(ns, {str(k): str(v) for k, v in labels.items()})})
        return _json({"items": items})

    app.router.add_get("/healthz", healthz)
    app.router.add_post("/api/v1/egress", post_egress)
    app.router.add_post("/api/v1/apply", apply)
    app.router.add_post("/api/v1/delete", delete_files)
    app.router.add_get("/api/v1/resources", list_resources)
    app.router.add_get("/api/v1/resources/{kind}/{ns}/{name}", get_resource)
    app.router.add_delete("/api/v1/resources/{kind}/{ns}/{name}", delete_resource)
    app.router.add_get("/api/v1/services", list_services)
    app.router.add_get("/api/v1/instances", list_instances)
    app.router.add_put("/api/v1/instances/{id}", put_instance)
    app.router.add_delete("/api/v1/instances/{id}", delete_instance)
    app.router.add_get("/api/v1/proxies", list_proxies)
    app.router.add_get("/api/v1/proxies/{id}/resources", get_proxy_resources)
    return app


async def serve(app: web.Application, unix_path: str | None = None,
                tcp: tuple[str, int] | None = None) -> web.AppRunner:
    """Start `app` on a unix socket (mode 0666: Envoys and agents of every uid reach it) and/or TCP, as every
    Mizzen HTTP server is started (`unixpath.serve_app`); `await runner.cleanup()` stops it and removes the
    socket file if it is still ours."""
    return await serve_app(app, unix_path, tcp, mode=0o666)
