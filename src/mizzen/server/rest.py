"""The REST API (docs/internals.md): thin aiohttp handlers over ControlPlaneCore.

Handlers run on the control plane's event loop, which also serves xDS, so nothing slow runs in them: apply
awaits `ControlPlaneCore.apply_async` (parsing and validation — rendering, `envoy --mode validate` — in a
worker thread); the other handlers are quick store/registry reads and writes, called directly. Store and
registry writes happen on the loop thread, so their subscribers run on the loop and may use asyncio freely
(e.g. schedule a push).

Authentication (`server.auth`): every call but `GET /healthz` needs `Authorization: Bearer <token>` — an API
token (admin or tenant) or a pod's credential; none, unknown, expired or revoked → 401. A route not listed in
`SCOPED_ROUTES` is for admins only (so an endpoint added later is closed to tenants until its handler scopes
what it returns); the handlers of the listed ones pass the caller to the core, which refuses (403, with the
reason) or filters by the caller's namespaces. Token management: `auth_rest.py`.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from ..api import InvalidConfig, Issue
from ..store.base import NotFound, RevisionConflict
from .auth import (Authenticator, Forbidden, Principal, Unauthenticated, bearer, check_namespace_read, require_admin,
                   require_reader, visible)
from .auth_rest import add_credential_routes, add_token_routes
from .core import ControlPlaneCore
from ..unixpath import serve_app

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CORE_KEY: web.AppKey[ControlPlaneCore] = web.AppKey("core", ControlPlaneCore)
AUTH_KEY: web.AppKey[Authenticator] = web.AppKey("auth", Authenticator)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)

PUBLIC_ROUTES = {("GET", "/healthz")}
# routes whose handlers scope what they do to the caller (a tenant's namespaces, a pod's own instance); every
# other route is for admins only
SCOPED_ROUTES = {
    ("POST", "/api/v1/apply"), ("POST", "/api/v1/delete"), ("GET", "/api/v1/resources"),
    ("GET", "/api/v1/resources/{kind}/{ns}/{name}"), ("DELETE", "/api/v1/resources/{kind}/{ns}/{name}"),
    ("GET", "/api/v1/services"), ("GET", "/api/v1/instances"), ("PUT", "/api/v1/instances/{id}"),
    ("DELETE", "/api/v1/instances/{id}"), ("GET", "/api/v1/proxies"), ("GET", "/api/v1/proxies/{id}/resources"),
    ("GET", "/api/v1/whoami"),
}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, separators=(",", ":")))


def _not_found_body(e: NotFound) -> dict[str, Any]:
    return {"message": str(e),
            "missing": [{"kind": k.kind, "namespace": k.namespace, "name": k.name} for k in e.keys]}


def principal(request: web.Request) -> Principal:
    """The authenticated caller of a request (set by the auth middleware)."""
    return request[PRINCIPAL]


def _route(request: web.Request) -> tuple[str, str]:
    resource = request.match_info.route.resource
    return request.method, resource.canonical if resource is not None else request.path


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = _route(request)
    if route in PUBLIC_ROUTES:
        return await handler(request)
    p = request.app[AUTH_KEY].authenticate(bearer(request.headers.get("Authorization")))
    request[PRINCIPAL] = p
    if route not in SCOPED_ROUTES and request.match_info.route.resource is not None:  # (no such route: 404)
        require_admin(p, f"{route[0]} {route[1]}")
    return await handler(request)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Unauthenticated as e:
        log.info("refused %s %s: %s", request.method, request.path, e)
        resp = _json({"message": f"unauthorized: {e}"}, 401)
        resp.headers["WWW-Authenticate"] = 'Bearer realm="mizzen"'
        return resp
    except Forbidden as e:
        log.info("forbidden %s %s: %s", request.method, request.path, e)
        return _json({"message": f"forbidden: {e}", "denied": e.denied}, 403)
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


def make_app(core: ControlPlaneCore, *, auth: Authenticator, ready: Callable[[], bool],
             services: Callable[[], list[dict[str, Any]]],
             proxies: Callable[[], list[dict[str, Any]]],
             proxy_resources: Callable[[str, str], dict[str, Any] | None]) -> web.Application:
    app = web.Application(middlewares=[_errors, _authenticate], client_max_size=64 * 1024 * 1024)
    app[CORE_KEY] = core
    app[AUTH_KEY] = auth

    async def healthz(request: web.Request) -> web.Response:
        ok = bool(ready())
        return _json({"ready": ok}, 200 if ok else 503)

    async def apply(request: web.Request) -> web.Response:
        files, ns = _files(await _body(request))
        return _json(await core.apply_async(files, ns, principal=principal(request)))

    async def delete_files(request: web.Request) -> web.Response:
        files, ns = _files(await _body(request))
        return _json(core.delete_files(files, ns, principal=principal(request)))

    async def list_resources(request: web.Request) -> web.Response:
        q = request.query
        return _json({"items": core.list(q.get("kind") or None, q.get("namespace") or None,
                                         principal=principal(request))})

    async def get_resource(request: web.Request) -> web.Response:
        m = request.match_info
        return _json(core.get(m["kind"], m["ns"], m["name"], principal=principal(request)))

    async def delete_resource(request: web.Request) -> web.Response:
        m = request.match_info
        return _json(core.delete(m["kind"], m["ns"], m["name"], principal=principal(request)))

    def _one_namespace(request: web.Request, items: list[dict[str, Any]]) -> list[Any]:
        """`?namespace=NS`: only that namespace's items — 403 when the caller may not see it."""
        p, ns = principal(request), request.query.get("namespace") or None
        if ns is not None:
            check_namespace_read(p, ns)
            items = [it for it in items if it.get("namespace") == ns]
        return visible(p, items)

    async def list_services(request: web.Request) -> web.Response:
        return _json({"items": _one_namespace(request, services())})

    async def put_instance(request: web.Request) -> web.Response:
        changed = core.upsert_instance(await _body(request), request.match_info["id"], principal=principal(request))
        return _json({"ok": True, "changed": changed})

    async def delete_instance(request: web.Request) -> web.Response:
        return _json({"ok": True, "removed": core.remove_instance(request.match_info["id"],
                                                                  principal=principal(request))})

    async def list_instances(request: web.Request) -> web.Response:
        return _json({"items": _one_namespace(request, core.instances(principal=principal(request)))})

    async def list_proxies(request: web.Request) -> web.Response:
        p = principal(request)
        require_reader(p, "listing proxies")
        return _json({"items": visible(p, proxies())})

    async def get_proxy_resources(request: web.Request) -> web.Response:
        pid = request.match_info["id"]
        type_ = request.query.get("type", "").upper()
        if not type_:
            raise InvalidConfig([Issue("query parameter 'type' is required (CDS, EDS, LDS, RDS)", "<request>",
                                       path="type")])
        p = principal(request)
        require_reader(p, "reading a proxy's config")
        if not p.admin:
            known = {str(it.get("id")): it for it in proxies()}
            if pid in known and not p.sees(str(known[pid].get("namespace") or "")):
                raise Forbidden(f"proxy {pid} is in namespace {known[pid].get('namespace')}, not one of the "
                                f"namespaces of {p.describe()}")
            if pid not in known:
                raise NotFound(message=f"no connected proxy {pid!r}")
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
    add_token_routes(app, auth, principal)
    if hasattr(auth.pods, "issue"):
        add_credential_routes(app, auth.pods)
    return app


async def serve(app: web.Application, unix_path: str | None = None, tcp: tuple[str, int] | None = None, *,
                group: int | None = None, ssl_context: Any = None) -> web.AppRunner:
    """Start `app` on a unix socket and/or TCP, as every Mizzen HTTP server is started (`unixpath.serve_app`);
    `await runner.cleanup()` stops it and removes the socket file if it is still ours.

    The socket is mode 0660, group `group` (default: this process's): who may connect at all is the file
    system's decision (root, and the members of the API group), what a caller may do is its token's. Apps
    run as a uid outside that group (`Workload.securityContext`), so they cannot even connect. A TCP listener
    should get `ssl_context` (the control plane gives it one from the mesh CA: a bearer token never crosses
    the network in plaintext)."""
    return await serve_app(app, unix_path, tcp, mode=0o660, group=group, ssl_context=ssl_context)
