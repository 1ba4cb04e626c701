"""The REST API (docs/internals.md): thin aiohttp handlers over ControlPlaneCore.

Handlers run on the control plane's event loop, which also serves xDS, so nothing slow runs in them: apply
awaits `ControlPlaneCore.apply_async` (parsing and validation — rendering, `envoy --mode validate` — in a
worker thread); store and registry writes run in worker threads too (on etcd each is a network round trip),
reads come from the backends' in-memory copies. Subscribers may therefore run in any thread (the control
plane hops onto its loop). A store that cannot be reached answers 503 with "store unavailable: ...".

Authentication (`server.auth`): every call but `GET /healthz` needs `Authorization: Bearer <token>` — an API
token (admin or tenant) or a pod's credential; none, unknown, expired or revoked → 401. A route not listed in
`SCOPED_ROUTES` is for admins only (so an endpoint added later is closed to tenants until its handler scopes
what it returns); the handlers of the listed ones pass the caller to the core, which refuses (403, with the
reason) or filters by the caller's namespaces. Token management: `auth_rest.py`.

Pods' apps (`mizzen.sdk`) reach the API on a socket of their own (`make_app(apps_only=True)`, served by
`serve_apps` on `pod-api.sock`, mode 0666: an app runs as a uid outside the API group): it accepts a pod's app
credential only (`server.auth` APP: read-only, scoped to what routes the pod's calls), so an admin or tenant
token that leaked into a pod is worth nothing there, and `api.sock` stays closed to apps.
"""
from __future__ import annotations

import asyncio
import json
import logging
import zlib
from typing import Any, Awaitable, Callable

from aiohttp import web

from ..api import InvalidConfig, Issue
from ..store.base import NotFound, RevisionConflict, StoreUnavailable
from .auth import (APP, Authenticator, Forbidden, Principal, Unauthenticated, bearer, check_namespace_read,
                   require_admin, require_reader, visible)
from .auth_rest import add_credential_routes, add_token_routes
from .core import ControlPlaneCore
from .watch import MAX_WATCHERS, Watches
from ..unixpath import serve_app

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CORE_KEY: web.AppKey[ControlPlaneCore] = web.AppKey("core", ControlPlaneCore)
AUTH_KEY: web.AppKey[Authenticator] = web.AppKey("auth", Authenticator)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
APPS_ONLY: web.AppKey[bool] = web.AppKey("apps_only", bool)

PUBLIC_ROUTES = {("GET", "/healthz")}
# routes whose handlers scope what they do to the caller (a tenant's namespaces, a pod's own instance); every
# other route is for admins only
SCOPED_ROUTES = {
    ("POST", "/api/v1/apply"), ("POST", "/api/v1/delete"), ("GET", "/api/v1/resources"),
    ("GET", "/api/v1/resources/{kind}/{ns}/{name}"), ("DELETE", "/api/v1/resources/{kind}/{ns}/{name}"),
    ("GET", "/api/v1/services"), ("GET", "/api/v1/instances"), ("PUT", "/api/v1/instances/{id}"),
    ("DELETE", "/api/v1/instances/{id}"), ("GET", "/api/v1/proxies"), ("GET", "/api/v1/proxies/{id}/resources"),
    ("GET", "/api/v1/whoami"), ("GET", "/api/v1/watch"),
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
    if request.app[APPS_ONLY] and p.role != APP:
        raise Forbidden(f"this socket serves pods' apps (their app credential, STATE/pods/<pod>/app-secrets/token) "
                        f"only; {p.describe()} is not one: use the API socket (api.sock)")
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


def make_app(core: ControlPlaneCore, *, auth: Authenticator, ready: Callable[[], bool],
             services: Callable[[], list[dict[str, Any]]],
             proxies: Callable[[], list[dict[str, Any]]],
             proxy_resources: Callable[[str, str], dict[str, Any] | None],
             egress: Callable[[str, dict[str, str]], dict[str, Any]] | None = None,
             credential_routes: bool = True, health: Callable[[], dict[str, Any]] | None = None,
             apps_only: bool = False, max_watchers: int = MAX_WATCHERS) -> web.Application:
    """`credential_routes`: serve /api/v1/credentials from `auth.pods` (False when the mesh CA serves them);
    `health`: the store's health for /healthz; `apps_only`: the pods' socket (accepts app credentials only);
    `max_watchers`: how many `GET /api/v1/watch` may wait at a time (watch.py)."""
    app = web.Application(middlewares=[_errors, _authenticate], client_max_size=MAX_BODY,
                          handler_args={"auto_decompress": False})  # see _decoded
    app[CORE_KEY] = core
    app[AUTH_KEY] = auth
    app[APPS_ONLY] = apps_only

    async def healthz(request: web.Request) -> web.Response:
        ok = bool(ready())
        body: dict[str, Any] = {"ready": ok}
        if health is not None:
            body["store"] = health()  # backend, reachable now, revision
        return _json(body, 200 if ok else 503)

    async def apply(request: web.Request) -> web.Response:
        files, ns = _files(await _body(request))
        # ?dryRun=true: every check, nothing stored (kubectl's --dry-run=server); ?skipUnknown=true: unknown kinds warn
        return _json(await core.apply_async(files, ns, dry_run=_flag(request, "dryRun"),
                                            skip_unknown=_flag(request, "skipUnknown"),
                                            principal=principal(request)))

    # store and registry writes run in a worker thread: on etcd each is a network round trip (seconds
    # when the cluster is unreachable), and the loop also serves xDS
    async def delete_files(request: web.Request) -> web.Response:
        files, ns = _files(await _body(request))
        return _json(await asyncio.to_thread(core.delete_files, files, ns, principal=principal(request)))

    async def list_resources(request: web.Request) -> web.Response:
        q = request.query
        return _json({"items": core.list(q.get("kind") or None, q.get("namespace") or None,
                                         principal=principal(request))})

    async def get_resource(request: web.Request) -> web.Response:
        m = request.match_info
        return _json(core.get(m["kind"], m["ns"], m["name"], principal=principal(request)))

    async def delete_resource(request: web.Request) -> web.Response:
        m = request.match_info
        return _json(await asyncio.to_thread(core.delete, m["kind"], m["ns"], m["name"], principal=principal(request)))

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
        changed = await asyncio.to_thread(core.upsert_instance, await _body(request), request.match_info["id"],
                                          principal=principal(request))
        return _json({"ok": True, "changed": changed})

    async def delete_instance(request: web.Request) -> web.Response:
        return _json({"ok": True, "removed": await asyncio.to_thread(core.remove_instance, request.match_info["id"],
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
    Watches(core, principal, max_watchers=max_watchers).add_to(app)  # the SDK's long-poll (watch.py)
    add_token_routes(app, auth, principal)  # (on the apps' socket: whoami; the rest is admin-only)
    if credential_routes and not apps_only and hasattr(auth.pods, "issue"):
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


async def serve_apps(app: web.Application, unix_path: str) -> web.AppRunner:
    """Start the pods' socket (`make_app(apps_only=True)`): mode 0666 — any uid connects (apps run as their
    own), and only a pod's app credential is accepted."""
    return await serve_app(app, unix_path, None, mode=0o666)
