"""The token endpoints of the REST API (admin only, but `whoami`):

- `GET /api/v1/whoami` → the caller: `{"role","id","name",["namespaces","readOnly"],[pod fields]}`
- `POST /api/v1/tokens` `{"namespaces":[..],"readOnly":bool,"ttlSeconds":N,"name":S}` or `{"admin":true,...}` →
  the record and `"token"` (shown only here)
- `GET /api/v1/tokens` → `{"items":[record]}` (never a token or its hash)
- `DELETE /api/v1/tokens/{id}` → `{"revoked": id}`; 404 unknown; 403 for the state dir's admin credential or the
  caller's own token
- `POST /api/v1/credentials` `{"pod":"<ns>.<pod>","namespace","serviceAccount","workload"[,"app":true]}` → `{"token"}`
  (`app`: the pod's app's read-only credential, not its agent's): a pod
  credential (the runner, when it makes a pod; docs/security.md §7b); `GET /api/v1/credentials` →
  `{"items":[{"pod","namespace","serviceAccount","workload"}]}` (never a token); `DELETE
  /api/v1/credentials/{pod}` → `{"revoked": bool}` (the pod was deleted)
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

from aiohttp import web

from ..api import InvalidConfig, Issue
from ..model.labels import ROOT_NAMESPACE
from ..store.base import NotFound
from ..ca.identity import InvalidIdentity, PodIdentity
from .auth import Authenticator, Forbidden, Principal
from .auth_tokens import ADMIN, TENANT, TokenRecord, issue

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MAX_TTL_SECONDS = 10 * 365 * 86400


def _bad(message: str, path: str) -> InvalidConfig:
    return InvalidConfig([Issue(message, "<request>", path=path)])


def token_request(data: Any, now: float) -> TokenRecord:
    """A `POST /api/v1/tokens` body → the record to issue (id filled in later). Raises InvalidConfig."""
    if not isinstance(data, dict):
        raise _bad("request body must be a JSON object", "")
    unknown = set(data) - {"namespaces", "readOnly", "ttlSeconds", "name", "admin"}
    if unknown:
        raise _bad(f"unknown field(s): {', '.join(sorted(unknown))}", sorted(unknown)[0])
    admin = data.get("admin", False)
    if not isinstance(admin, bool):
        raise _bad("must be true or false", "admin")
    namespaces = data.get("namespaces") or []
    if not isinstance(namespaces, list) or not all(isinstance(n, str) for n in namespaces):
        raise _bad("must be a list of namespace names", "namespaces")
    if admin and namespaces:
        raise _bad("an admin token has every namespace: give either admin or namespaces", "namespaces")
    if not admin and not namespaces:
        raise _bad("a tenant token needs at least one namespace (or ask for an admin token)", "namespaces")
    for i, n in enumerate(namespaces):
        if not _LABEL.match(n):
            raise _bad(f"{n!r} is not a namespace name (a DNS-1123 label)", f"namespaces[{i}]")
        if n == ROOT_NAMESPACE:
            raise _bad(f"{ROOT_NAMESPACE} is the root namespace: its config applies mesh-wide, so only admin "
                       f"tokens change it", f"namespaces[{i}]")
    read_only = data.get("readOnly", False)
    if not isinstance(read_only, bool):
        raise _bad("must be true or false", "readOnly")
    ttl = data.get("ttlSeconds")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or
                            not 0 < ttl <= MAX_TTL_SECONDS):
        raise _bad(f"must be a number of seconds between 1 and {MAX_TTL_SECONDS}", "ttlSeconds")
    name = data.get("name") or ""
    if not isinstance(name, str) or len(name) > 200:
        raise _bad("must be a string of at most 200 characters", "name")
    return TokenRecord("", ADMIN if admin else TENANT, tuple(sorted(set(namespaces))), read_only, name, now,
                       now + float(ttl) if ttl else None)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, separators=(",", ":")))


def add_token_routes(app: web.Application, auth: Authenticator,
                     principal: Callable[[web.Request], Principal]) -> None:
    tokens = auth.tokens

    async def whoami(request: web.Request) -> web.Response:
        return _json(principal(request).to_dict())

    async def create(request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise _bad("request body is not valid JSON", "") from None
        record = token_request(data, auth.clock())
        token, made = issue(tokens, record)
        return _json({**made.to_dict(), "token": token}, 201)

    async def list_tokens(request: web.Request) -> web.Response:
        now = auth.clock()
        return _json({"items": [{**r.to_dict(), "expired": r.expired(now)} for r in tokens.list()]})

    async def revoke(request: web.Request) -> web.Response:
        tid = request.match_info["id"]
        rec = next((r for r in tokens.list() if r.id == tid), None)
        if rec is None:
            raise NotFound(message=f"no token {tid!r}")
        if rec.bootstrap:
            raise Forbidden(f"{tid} is the admin credential of a state dir ({rec.name}); to replace it, delete "
                            f"that STATE/admin.token and restart the control plane")
        if rec.id == principal(request).id:
            raise Forbidden(f"{tid} is the token making this call; revoke it with another admin token")
        tokens.remove(tid)
        return _json({"revoked": tid})

    app.router.add_get("/api/v1/whoami", whoami)
    app.router.add_post("/api/v1/tokens", create)
    app.router.add_get("/api/v1/tokens", list_tokens)
    app.router.add_delete("/api/v1/tokens/{id}", revoke)


def add_credential_routes(app: web.Application, pods: Any) -> None:
    """The pod-credential endpoints (docs/security.md §7b; admin only, as every route not scoped in rest.py):
    the runner gets a credential for each pod it makes and revokes it when the pod goes. `pods` is the
    control plane's `ca.credentials.CredentialStore`. (The mesh-CA wiring serves the same endpoints; a control
    plane mounts one of the two.)"""

    async def create_credential(request: web.Request) -> web.Response:
        try:
            data = await request.json()
            ident = PodIdentity(pod=str(data["pod"]), namespace=str(data["namespace"]),
                                service_account=str(data.get("serviceAccount") or "default"),
                                workload=str(data.get("workload") or ""))
        except (ValueError, UnicodeDecodeError, TypeError, AttributeError):
            raise _bad("expected a JSON object {pod, namespace, serviceAccount, workload}", "") from None
        except KeyError as e:
            raise _bad("required field is missing", str(e.args[0])) from None
        except InvalidIdentity as e:
            raise _bad(str(e), "") from None
        if not ident.pod.startswith(ident.namespace + "."):
            raise _bad(f"pod must be '<namespace>.<pod>' (an instance id) for namespace {ident.namespace}", "pod")
        app = data.get("app", False)
        if not isinstance(app, bool):
            raise _bad("app must be true (the pod's app's read-only credential) or false (its agent's)", "app")
        return _json({"token": pods.issue_app(ident) if app else pods.issue(ident)}, 201)

    async def list_credentials(request: web.Request) -> web.Response:
        return _json({"items": [{"pod": i.pod, "namespace": i.namespace, "serviceAccount": i.service_account,
                                 "workload": i.workload} for i in pods.pods()]})

    async def revoke_credential(request: web.Request) -> web.Response:
        return _json({"revoked": bool(pods.revoke(request.match_info["pod"]))})

    app.router.add_post("/api/v1/credentials", create_credential)
    app.router.add_get("/api/v1/credentials", list_credentials)
    app.router.add_delete("/api/v1/credentials/{pod}", revoke_credential)


__all__ = ["add_credential_routes", "add_token_routes", "token_request"]
