"""Who calls the control plane's API, and what each caller may do there.

Callers (`Principal`), authenticated from `Authorization: Bearer <token>` by `Authenticator`:
- **admin** — an admin API token (the state dir's `admin.token`, or one made with `mizzen token create
  --admin`): everything.
- **tenant** — a tenant API token (`mizzen token create --namespaces a,b [--read-only]`): reads and changes
  resources in its namespaces only; sees only its services, instances and proxies; never registers instances;
  read-only tokens change nothing. The root namespace (`istio-system`: mesh-wide Sidecar, Telemetry,
  EnvoyPatch, security policy), Namespace objects and every other cluster-scoped kind need the admin credential.
- **pod** — a pod's own credential (`mzp_…`, provisioned by the runner in the pod dir, readable by that pod's
  agent only; `ca.credentials`): registers and withdraws that pod's instance, and nothing it is not bound to
  (id, namespace, workload, service account must all match); reads services and instances (what its Envoy
  gets over xDS anyway); a gateway pod (its Workload stored with `gateway: true`) also reads the Secrets of its
  namespace, its Gateways' credentials (`ControlPlaneCore.get`, docs/gateway.md).
- **app** — a pod's *app* credential (`mza_…`, provisioned by the runner in `pods/<pod>/app-secrets/`, readable
  by that app's uid only; what `mizzen.sdk` in the pod authenticates with): read-only. It reads services and
  instances (as a pod does), and of the stored config what its calls are routed by (`readable`): the routing
  kinds (`APP_KINDS`) of its own namespace and of the root namespace, and those of other namespaces exported to
  it (exportTo; none means every namespace, Istio's default) — never Secrets, Workloads or another namespace's
  policy. It is accepted on the pods' socket (`pod-api.sock`), which accepts nothing else (rest.py).

Refusals: no/unknown/expired/revoked token → `Unauthenticated` (HTTP 401); authenticated but not allowed →
`Forbidden` (HTTP 403) with the reason and, for an apply or delete, every resource refused — nothing is
changed then (all-or-nothing). The checks themselves (`check_writes`, `check_instance`, `visible`) are pure.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from ..api import KINDS, Resource, ResourceKey
from ..ca.credentials import TOKEN_PREFIX as POD_TOKEN_PREFIX
from ..ca.identity import PodIdentity
from ..model.labels import ROOT_NAMESPACE
from .auth_exports import foreign_host_problems
from ..ca.credentials import APP_TOKEN_PREFIX
from ..model.visibility import export_to_of, exported_to
from .auth_tokens import ADMIN, TENANT, TokenRecord, TokenStore, plausible, token_sha256

POD = "pod"
APP = "app"
# the kinds an app credential reads (what `mizzen.sdk` builds its view from); a Sidecar only of its own or the
# root namespace (it applies to no other namespace's workloads)
APP_KINDS = frozenset({"Service", "ServiceEntry", "VirtualService", "DestinationRule", "Router", "HTTPRoute",
                       "GRPCRoute", "RateLimit", "Sidecar"})
HINT = "pass --token TOKEN or set $MIZZEN_TOKEN (the admin credential is STATE/admin.token)"


class Unauthenticated(Exception):
    """No valid credential (HTTP 401)."""


class Forbidden(Exception):
    """A valid credential that may not do this (HTTP 403). `denied`: one entry per refused resource."""

    def __init__(self, message: str, denied: Sequence[Mapping[str, str]] = ()):
        super().__init__(message)
        self.denied = list(denied)


@dataclass(frozen=True)
class Principal:
    role: str  # ADMIN | TENANT | POD
    id: str  # the token's id, or the pod's instance id
    namespaces: frozenset[str] = frozenset()
    read_only: bool = False
    pod: PodIdentity | None = None
    name: str = ""

    @property
    def admin(self) -> bool:
        return self.role == ADMIN

    def describe(self) -> str:
        if self.role == ADMIN:
            return f"admin token {self.id}"
        if self.role == POD:
            return f"the credential of pod {self.id}"
        if self.role == APP:
            return f"the app credential of pod {self.id} (read-only)"
        ro = ", read-only" if self.read_only else ""
        return f"token {self.id} (namespaces {', '.join(sorted(self.namespaces))}{ro})"

    def sees(self, namespace: str | None) -> bool:
        """May read what lives in `namespace` (services, instances, proxies, resources)."""
        return self.role == ADMIN or (self.role in (TENANT, APP) and namespace in self.namespaces)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role, "id": self.id, "name": self.name}
        if self.role == TENANT:
            d.update(namespaces=sorted(self.namespaces), readOnly=self.read_only)
        if self.role == APP:
            d.update(readOnly=True)
        if self.pod is not None:
            d.update(pod=self.pod.pod, namespace=self.pod.namespace, workload=self.pod.workload,
                     serviceAccount=self.pod.service_account)
        return d

    @classmethod
    def of_record(cls, r: TokenRecord) -> "Principal":
        return cls(r.role, r.id, frozenset(r.namespaces), r.read_only, name=r.name)


ADMIN_PRINCIPAL = Principal(ADMIN, "embedded")  # in-process callers of ControlPlaneCore (tests, tools)


class PodVerifier(Protocol):
    def verify(self, token: str) -> PodIdentity | None: ...

    def verify_app(self, token: str) -> PodIdentity | None: ...


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (None if absent or another scheme)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class Authenticator:
    """Token → Principal, over the API token store and the pod credential store."""

    def __init__(self, tokens: TokenStore, pods: PodVerifier | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.tokens = tokens
        self.pods = pods
        self.clock = clock

    def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthenticated(f"authentication required: no bearer token; {HINT}")
        if token.startswith(POD_TOKEN_PREFIX) and self.pods is not None:
            ident = self.pods.verify(token)
            if ident is None:
                raise Unauthenticated("unknown or revoked pod credential")
            return Principal(POD, ident.pod, frozenset({ident.namespace}), pod=ident, name=ident.workload)
        if token.startswith(APP_TOKEN_PREFIX) and self.pods is not None:
            ident = self.pods.verify_app(token)
            if ident is None:
                raise Unauthenticated("unknown or revoked app credential")
            return Principal(APP, ident.pod, frozenset({ident.namespace}), read_only=True, pod=ident,
                             name=ident.workload)
        rec = self.tokens.lookup(token_sha256(token)) if plausible(token) else None
        if rec is None:
            raise Unauthenticated("invalid or revoked token")
        if rec.expired(self.clock()):
            raise Unauthenticated(f"token {rec.id} expired at "
                                  f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(rec.expires or 0))}")
        return Principal.of_record(rec)


# ------------------------------------------------------------------------------------------------ checks
def require_admin(p: Principal, what: str) -> None:
    if not p.admin:
        raise Forbidden(f"{what} needs the admin credential; {p.describe()} is not an admin token")


def require_writer(p: Principal) -> None:
    """May change config at all (an admin, or a tenant token that is not read-only)."""
    if p.role == POD:
        raise Forbidden(f"{p.describe()} may only register and withdraw that pod's instance")
    if p.read_only:
        raise Forbidden(f"{p.describe()} is read-only")


def require_reader(p: Principal, what: str = "reading config") -> None:
    if p.role == POD:
        raise Forbidden(f"{what}: {p.describe()} may only register and withdraw that pod's instance")


def check_namespace_read(p: Principal, namespace: str | None) -> None:
    """A read of one namespace (None: all, which the caller filters; an app's reads are filtered by
    `readable`, in any namespace)."""
    require_reader(p)
    if namespace is not None and p.role != APP and not p.sees(namespace):
        raise Forbidden(f"namespace {namespace} is not one of the namespaces of {p.describe()}")


def readable(p: Principal, r: Resource) -> bool:
    """May `p` read the stored resource `r`: an admin anything, a tenant its namespaces', an app what its calls
    are routed by (see the module docstring)."""
    if p.role != APP:
        return p.sees(r.namespace)
    if r.kind not in APP_KINDS:
        return False
    if r.namespace in p.namespaces or r.namespace == ROOT_NAMESPACE:
        return True
    return r.kind != "Sidecar" and exported_to(export_to_of(r), r.namespace, next(iter(p.namespaces), ""))


def why_unreadable(p: Principal, r: Resource) -> str:
    if p.role == APP:
        return (f"{r.kind} {r.namespace}/{r.name} is not config that routes the calls of {p.describe()} (it "
                f"reads {', '.join(sorted(APP_KINDS))} of its namespace, of {ROOT_NAMESPACE}, and those exported "
                f"to its namespace)")
    return f"namespace {r.namespace} is not one of the namespaces of {p.describe()}"


def key_problem(p: Principal, key: ResourceKey) -> str | None:
    """Why a tenant may not change (or read) the resource at `key`, or None."""
    if p.admin:
        return None
    info = KINDS.get(key.kind)
    if info is not None and info.cluster_scoped:
        return f"{key.kind} is cluster-scoped: changing it needs the admin credential"
    if key.namespace == ROOT_NAMESPACE:
        return (f"{ROOT_NAMESPACE} is the root namespace (its config applies mesh-wide): changing it needs the "
                f"admin credential")
    if key.namespace not in p.namespaces:
        return f"namespace {key.namespace} is not one of this token's namespaces ({', '.join(sorted(p.namespaces))})"
    return None


def _workload_uid_problem(r: Resource, stored: Resource | None) -> str | None:
    """A tenant may not pick the uid an app runs as (a host-level privilege), except keep what is stored."""
    sc = getattr(r.spec, "security_context", None)
    if sc is None or (sc.run_as_user is None and sc.run_as_group is None):
        return None
    old = getattr(stored.spec, "security_context", None) if stored is not None else None
    if old is not None and (old.run_as_user, old.run_as_group) == (sc.run_as_user, sc.run_as_group):
        return None
    return ("spec.securityContext: choosing the uid/gid an app runs as needs the admin credential (tenant "
            "workloads run as the mesh's app user)")


def _denied(key: ResourceKey, reason: str) -> dict[str, str]:
    return {"kind": key.kind, "namespace": key.namespace, "name": key.name, "reason": reason}


def check_writes(p: Principal, resources: Iterable[Resource | ResourceKey],
                 stored: Callable[[ResourceKey], Resource | None] = lambda k: None) -> None:
    """All-or-nothing: raise Forbidden naming every resource `p` may not create, change or delete.
    Full resources (an apply) are also checked for hosts outside the tenant's namespaces that they would
    publish to other tenants (`auth_exports`) and for a chosen app uid."""
    require_writer(p)
    if p.admin:
        return
    denied: list[dict[str, str]] = []
    for item in resources:
        key = item.key if isinstance(item, Resource) else item
        why = key_problem(p, key)
        if why is None and isinstance(item, Resource):
            problems = foreign_host_problems(item, p.namespaces)
            if item.kind == "Workload":
                uid = _workload_uid_problem(item, stored(key))
                problems += [uid] if uid else []
            why = "; ".join(problems) or None
        if why is not None:
            denied.append(_denied(key, why))
    if denied:
        n = len(denied)
        raise Forbidden(f"{p.describe()} may not change {n} of the resource{'s' if n != 1 else ''} given; "
                        f"nothing was changed", denied)


def check_instance(p: Principal, instance_id: str, body: Mapping[str, Any] | None = None) -> None:
    """Registering (`body`: the instance) or withdrawing an instance: an admin, or the pod's own agent."""
    if p.admin:
        return
    if p.role != POD or p.pod is None:
        raise Forbidden(f"registering or withdrawing instances needs a pod's own credential (its agent) or the "
                        f"admin credential; {p.describe()} may not")
    ident = p.pod
    if instance_id != ident.pod:
        raise Forbidden(f"{p.describe()} may not register or withdraw instance {instance_id}")
    if body is None:
        return
    for field, want in (("id", ident.pod), ("namespace", ident.namespace), ("workload", ident.workload),
                        ("serviceAccount", ident.service_account)):
        got = body.get(field)
        if field == "serviceAccount" and got in (None, "") and want == "default":
            continue
        if want and got != want:
            raise Forbidden(f"{p.describe()} is bound to {field} {want!r}; the instance says {got!r}")


def visible(p: Principal, items: Iterable[Mapping[str, Any]], key: str = "namespace") -> list[Mapping[str, Any]]:
    """The items of `items` (dicts with a namespace) that `p` may see."""
    if p.admin or p.role in (POD, APP):  # services and instances: what a pod's Envoy gets over xDS anyway
        return list(items)
    return [it for it in items if p.sees(str(it.get(key) or ""))]


__all__ = ["ADMIN", "ADMIN_PRINCIPAL", "APP", "APP_KINDS", "Authenticator", "Forbidden", "POD", "Principal", "TENANT",
           "Unauthenticated", "bearer", "check_instance", "check_namespace_read", "check_writes", "key_problem",
           "readable", "require_admin", "require_reader", "require_writer", "visible", "why_unreadable"]
