"""Consul's ACL tokens, mapped to Mizzen's API tokens (when the Consul API is given an authenticator).

Consul clients send their token as `X-Consul-Token: <token>`, `Authorization: Bearer <token>` or `?token=`;
here that token is a Mizzen API token (`mizzen token create ...`) and means what it means on Mizzen's own API:

- an **admin** token may do everything;
- a **tenant** token works on its namespaces only, a Consul service's namespace being its registration's
  `Namespace` (default `default`): it registers, deregisters and updates checks of services there (unless
  read-only), and every read — agent services and checks, health, catalog, blocking queries — shows only
  instances of its namespaces (the `filter` expression then narrows that further). Node-level writes
  (node maintenance, checks without a service) need an admin token. KV keys are namespaced by their first
  segment: a tenant reads and writes `<namespace>/...` of its namespaces only;
- no token, an unknown or expired one, or a pod credential: 403, as Consul answers with ACLs on and the
  default policy "deny" ("ACL not found" for a token Consul does not know, "Permission denied" otherwise).

Without an authenticator (`ConsulAPI(..., acl=None)`) ACLs are off, as in a Consul agent without ACLs.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol

from aiohttp import web


class Caller(Protocol):
    role: str
    namespaces: frozenset[str]
    read_only: bool

    @property
    def admin(self) -> bool: ...

    def sees(self, namespace: str | None) -> bool: ...


class PermissionDenied(Exception):
    """HTTP 403, Consul's wording."""


def request_token(request: web.Request) -> str | None:
    """Consul's three places for a token, in Consul's order of precedence."""
    tok = request.headers.get("X-Consul-Token")
    if tok:
        return tok.strip()
    auth = request.headers.get("Authorization", "")
    scheme, _, rest = auth.strip().partition(" ")
    if scheme.lower() == "bearer" and rest.strip():
        return rest.strip()
    return request.query.get("token") or None


class ConsulAcl:
    """`authenticate(token) -> caller` (Mizzen's `server.auth.Authenticator.authenticate`); it raises on a
    missing, unknown or expired token."""

    def __init__(self, authenticate: Callable[[str | None], Any]) -> None:
        self.authenticate = authenticate

    def caller(self, request: web.Request) -> Caller:
        token = request_token(request)
        if not token:
            raise PermissionDenied("Permission denied: anonymous token lacks permission (ACLs are on: send "
                                   "X-Consul-Token with a Mizzen API token)")
        try:
            caller = self.authenticate(token)
        except Exception as e:  # Unauthenticated: Consul's answer for a token it does not know
            raise PermissionDenied(f"ACL not found ({e})") from None
        if caller.role in ("pod", "app"):  # server.auth's POD and APP: scoped to the REST API's reads
            raise PermissionDenied(f"Permission denied: a pod{'s app' if caller.role == 'app' else ''} credential "
                                   f"is not a Consul ACL token")
        return caller


def may_write(caller: Caller | None, namespace: str, what: str) -> None:
    if caller is None or caller.admin:
        return
    if caller.read_only:
        raise PermissionDenied(f"Permission denied: token lacks '{what}' permission (read-only token)")
    if namespace not in caller.namespaces:
        raise PermissionDenied(f"Permission denied: token lacks '{what}' permission on namespace {namespace!r} "
                               f"(its namespaces: {', '.join(sorted(caller.namespaces))})")


def need_admin(caller: Caller | None, what: str) -> None:
    if caller is not None and not caller.admin:
        raise PermissionDenied(f"Permission denied: token lacks '{what}' permission (needs an admin token)")


def sees(caller: Caller | None, namespace: str) -> bool:
    return caller is None or caller.sees(namespace)


def kv_namespace(key: str) -> str:
    return key.split("/", 1)[0]


def kv_visible(caller: Caller | None, keys: Iterable[Any], key_of: Callable[[Any], str]) -> list[Any]:
    return [k for k in keys if caller is None or caller.admin or caller.sees(kv_namespace(key_of(k)))]


def kv_may_write(caller: Caller | None, key: str) -> None:
    """A write (or a recursive delete of the prefix `key`): only under `<namespace>/` of the tenant's
    namespaces (a bare `shop` prefix would also take `shop-other/...`)."""
    if caller is None or caller.admin:
        return
    ns = kv_namespace(key)
    if caller.read_only or ns not in caller.namespaces or not key.startswith(ns + "/"):
        raise PermissionDenied(f"Permission denied: token lacks 'key:write' permission on {key!r} (a tenant "
                               f"writes keys under <namespace>/ of its namespaces: "
                               f"{', '.join(sorted(caller.namespaces))})")


__all__ = ["ConsulAcl", "PermissionDenied", "kv_may_write", "kv_namespace", "kv_visible", "may_write",
           "need_admin", "request_token", "sees"]
