"""The tenant check on hosts: a tenant must not publish config for hosts it does not own to other tenants.

In Istio a VirtualService, DestinationRule or ServiceEntry applies to every namespace it is exported to
(`exportTo`; none given = every namespace). One in namespace A for `reviews.B.svc.cluster.local`, or for an
external name such as `api.example.com`, would then change how proxies of namespace B reach that host —
one tenant rerouting another's traffic. So for a tenant token, each host such a resource names must be
owned by the tenant (a service name in one of its namespaces), or the resource must be visible only to the
tenant's own namespaces — and that only counts for kinds whose `exportTo` the model honours when it picks
routing config (`EXPORT_TO_HONOURED`). Anything else is refused at apply, with the fix in the message.

A tenant's own service's routing, exported mesh-wide (the default), is the service owner's right in Istio and
stays allowed: it changes other namespaces' proxies only in how they reach that service.

The model honours `exportTo` of VirtualService and DestinationRule when it picks a proxy's routing config
(`model/visibility.py`), so a tenant may scope such a resource on a foreign host to its own namespaces
(`exportTo: ["."]`): only its own proxies use it. A ServiceEntry stays refused on a foreign host whatever its
exportTo: its host name is one entry of the mesh's service table, which it would replace for everyone. PURE.
"""
from __future__ import annotations

from typing import Any, Collection

from ..api import Resource
from ..api.base import CLUSTER_DOMAIN

# kinds whose exportTo decides which proxies use them (model/visibility.py; see the module docstring)
EXPORT_TO_HONOURED: frozenset[str] = frozenset({"VirtualService", "DestinationRule"})
_EVERYWHERE = ("*", "*.svc", "*." + CLUSTER_DOMAIN, "*.cluster.local", "*.local")


def host_namespace(host: str, own: str) -> str | None:
    """The namespace whose service name `host` is, as written in a resource of namespace `own` (Istio's
    short-name rules), or None when it names no namespace's service (an external name) or every one ("*")."""
    if host in _EVERYWHERE:
        return None
    wildcard = host.startswith("*.")
    parts = (host[2:] if wildcard else host).split(".")
    if parts[-3:] == CLUSTER_DOMAIN.split(".") and len(parts) == (4 if wildcard else 5):
        return parts[-4]
    if wildcard:
        return None
    if len(parts) == 1:
        return own
    if len(parts) == 2:  # `name.namespace`
        return parts[1]
    if len(parts) == 3 and parts[2] == "svc":
        return parts[1]
    return None


def hosts_of(r: Resource) -> list[str]:
    spec: Any = r.spec
    out: list[str] = []
    for attr in ("hosts", "host"):
        v = getattr(spec, attr, None)
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(str(h) for h in v)
    if r.kind == "Router" and not out:
        out.append(r.name)
    return out


def exported_beyond(r: Resource, namespaces: Collection[str]) -> bool:
    """Would `r` reach proxies outside `namespaces`? (Always, unless the model honours its exportTo and that
    names only `namespaces`.)"""
    if r.kind not in EXPORT_TO_HONOURED:
        return True
    export_to = list(getattr(r.spec, "export_to", None) or ["*"])
    for e in export_to:
        if e == "~":
            continue
        if e == "*" or (e != "." and e not in namespaces):
            return True
    return False


def foreign_host_problems(r: Resource, namespaces: Collection[str]) -> list[str]:
    """Why a tenant owning `namespaces` may not apply `r` (empty: it may)."""
    foreign = [h for h in hosts_of(r) if host_namespace(h, r.namespace) not in namespaces]
    if not foreign or not exported_beyond(r, namespaces):
        return []
    field = "spec.host" if hasattr(r.spec, "host") and not hasattr(r.spec, "hosts") else "spec.hosts"
    honoured = r.kind in EXPORT_TO_HONOURED
    fix = ("set spec.exportTo to namespaces of this token (e.g. [\".\"])" if honoured else
           "only hosts of this token's namespaces may be used here (ask an admin for a rule on another "
           "namespace's or an external host)")
    return [f"{field}: {', '.join(foreign)} {'is' if len(foreign) == 1 else 'are'} not a service of this token's "
            f"namespaces, and this {r.kind} would apply to other tenants' proxies too: {fix}"]


__all__ = ["EXPORT_TO_HONOURED", "exported_beyond", "foreign_host_problems", "host_namespace", "hosts_of"]
