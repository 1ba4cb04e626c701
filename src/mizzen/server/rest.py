"""The REST API (docs/internals.md): thin aiohttp handlers over ControlPlaneCore.

Handlers run on the control plane's event loop, which also serves xDS, so nothing slow runs in them: apply
awaits `ControlPlaneCore.apply_async` (parsing and validation — rendering, `envoy --mode validate` — in a
worker thread); store and registry writes run in worker threads too (on etcd each is a network round trip),
reads come from the backends' in-memory copies. Subscribers may therefore run in any thread (the control
plane hops onto its loop). A store that cannot be reached answers 503 with "store unavailable: ...".
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from ..api import InvalidConfig, Issue
from ..store.base import NotFound, RevisionConflict, StoreUnavailable
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
    except StoreUnavailable as e:  # nothing written (or, with outcome_unknown, say so): 503 with the reason
        log.warning("%s %s: %s", request.method, request.path, e)
        text = str(e) + (" — the write may have been applied: re-read before retrying"
                         if e.outcome_unknown and "re-read" not in str(e) else "")
        return _json({"message": text, "storeUnavailable": True, "outcomeUnknown": e.outcome_unknown}, 503)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _json({"message": e.reason}, e.status)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _json({"message": "internal error (see the control plane log)"}, 500)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise InvalidConfig([Issue("request body is not valid JSON", "<request>")]) from None
    if not isinstance(data, dict):
        raise InvalidConfig([Issue("request body must be a JSON object", "<request>")])
    return data


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
             health: Callable[[], dict[str, Any]] | None = None) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024 * 1024)
    app[CORE_KEY] = core

    async def healthz(request: web.Request) -> web.Response:
        ok = bool(ready())
        body: dict[str, Any] = {"ready": ok}
        if health is not None:
            body["store"] = health()  # backend, reachable now, revision
        return _json(body, 200 if ok else 503)

    async def apply(request: web.Request) -> web.Response:
        files, ns = _files(await _body(request))
        return _json(await core.apply_async(files, ns))

    # store and registry writes run in a worker thread: on etcd each is a network round trip (seconds
    # when the cluster is unreachable), and the loop also serves xDS
    async def delete_files(request: web.Request) -> web.Response:
        files, ns = _files(await _body(request))
        return _json(await asyncio.to_thread(core.delete_files, files, ns))

    async def list_resources(request: web.Request) -> web.Response:
        q = request.query
        return _json({"items": core.list(q.get("kind") or None, q.get("namespace") or None)})

    async def get_resource(request: web.Request) -> web.Response:
        m = request.match_info
        return _json(core.get(m["kind"], m["ns"], m["name"]))

    async def delete_resource(request: web.Request) -> web.Response:
        m = request.match_info
        return _json(await asyncio.to_thread(core.delete, m["kind"], m["ns"], m["name"]))

    async def list_services(request: web.Request) -> web.Response:
        return _json({"items": services()})

    async def put_instance(request: web.Request) -> web.Response:
        changed = await asyncio.to_thread(core.upsert_instance, await _body(request), request.match_info["id"])
        return _json({"ok": True, "changed": changed})

    async def delete_instance(request: web.Request) -> web.Response:
        return _json({"ok": True, "removed": await asyncio.to_thread(core.remove_instance, request.match_info["id"])})

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

    app.router.add_get("/healthz", healthz)
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
