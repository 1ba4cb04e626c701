"""The Kubernetes Gateway API on the same translation core: Gateway API resources converted into the Istio
`Gateway` and `VirtualService` shapes that `model/gateway.py` and `translate/` already serve. Pure.

    convert(by_kind, revision) -> {"Gateway": [...], "VirtualService": [...]}   # generated resources

As Istio does (pilot/pkg/config/kube/gateway), documented Gateway API semantics for the core features:
- a `Gateway` (kind KubeGateway here) is served by the gateway pods labelled
  `gateway.networking.k8s.io/gateway-name: <name>`; each listener becomes one Istio Gateway
  `<gateway>-k8s-<listener>` (port, protocol, hostname; TLS Terminate → SIMPLE with the certificateRef's Secret
  as credentialName; Passthrough → PASSTHROUGH). A certificateRef to a Secret of another namespace needs a
  `ReferenceGrant` there (from Gateway in the Gateway's namespace to Secret, by name or all): it becomes the
  credentialName `kubernetes-gateway://<ns>/<name>` (Istio's form), which the gateway's agent may read
  (server/core.py asks `secret_granted` too); without a grant the listener is not served.
- an `HTTPRoute` attaches to the listeners its parentRefs name (sectionName, port) that allow it
  (`allowedRoutes.namespaces` Same / All / Selector over Namespace labels, `kinds`), for the intersection of
  its hostnames with the listener's. Per (listener, hostname) one VirtualService holds the matching rules of
  every attached route, sorted by the Gateway API's precedence: Exact path, then the longest PathPrefix, then
  regex; a method match; more header matches; more query matches; the oldest route; rule and match order.
- a `PathPrefix` matches whole path segments (`/foo` matches `/foo` and `/foo/x`, not `/foobar`).
- filters: RequestHeaderModifier / ResponseHeaderModifier → headers; RequestRedirect → redirect (default
  302); URLRewrite → rewrite (ReplacePrefixMatch replaces the matched prefix, ReplaceFullPath the path);
  RequestMirror → a mirror. `timeouts.request` → timeout. Weighted backendRefs → weighted destinations.
- a backendRef to another namespace needs a `ReferenceGrant` there (from HTTPRoute in the route's namespace to
  Service, by name or all); a rule whose backends are all invalid (or all weigh 0, or none) answers 500.
- a `GRPCRoute` attaches as an HTTPRoute does; a method match is a path `/<service>/<method>` (service and method
  exact, then a service alone as a prefix, then a method alone or regular expressions), with header matches,
  header modifier and mirror filters and weighted backends (Services on an HTTP/2 port, e.g. named `grpc`).
- GAMMA: an HTTPRoute whose parentRef is a Service (group "", kind Service) in its own namespace routes the
  mesh's traffic to that Service: a VirtualService for the Service's host bound to `mesh` (port: the
  parentRef's port, if given). Consumer routes (a Service of another namespace) are not supported.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from ..api.base import Metadata, Resource
from ..api.gateway import GatewaySpec
from ..api.gateway_api import GROUP, KUBE_GATEWAY
from ..api.virtual_service import VirtualServiceSpec
from .gateway import host_match
from .labels import labels_match

GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
INPUT_KINDS = (KUBE_GATEWAY, "HTTPRoute", "GRPCRoute", "ReferenceGrant")
KUBE_GATEWAY_KIND = "Gateway"  # the kind a ReferenceGrant's `from` names (KubeGateway is Mizzen's internal name)
CROSS_NAMESPACE_CREDENTIAL = "kubernetes-gateway://"
ISTIO = "networking.istio.io/v1"


def gateway_name(gw: str, listener: str) -> str:
    return f"{gw}-k8s-{listener}"


def _resource(kind: str, ns: str, name: str, spec: Any, revision: int) -> Resource:
    return Resource(ISTIO, kind, Metadata(name=name, namespace=ns, annotations={"mizzen.dev/generated-by":
                                                                                 "gateway-api"}), spec, revision)


def _slug(h: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", h.replace("*", "wildcard").lower()).strip("-")[:40] or "any"


def convert(by_kind: Mapping[str, Iterable[Resource]], revision: int,
            problems: list[tuple[Resource, str, str]] | None = None) -> dict[str, list[Resource]]:
    """The Istio Gateways and VirtualServices the Gateway API resources in `by_kind` stand for. `revision`:
    the generated resources' revision (the newest input's, so a change to any input changes them all).
    `problems` (when given) hears what is not served, as (resource, field path, why): the `status` conditions
    Kubernetes would show (Mizzen has no status; `mizzen analyze` reports them, MZ0112)."""
    def problem(r: Resource, path: str, why: str) -> None:
        if problems is not None:
            problems.append((r, path, why))

    gateways = list(by_kind.get(KUBE_GATEWAY, ()))
    routes = sorted([*by_kind.get("HTTPRoute", ()), *by_kind.get("GRPCRoute", ())],
                    key=lambda r: (r.revision, r.namespace, r.name, r.kind))
    grants = list(by_kind.get("ReferenceGrant", ()))
    ns_labels = {r.name: r.metadata.labels for r in by_kind.get("Namespace", ())}
    out: dict[str, list[Resource]] = {"Gateway": [], "VirtualService": []}
    served: dict[tuple[str, str], tuple[Resource, Any]] = {}  # (ns, istio gateway name) -> (gateway, listener)
    for gw in gateways:
        for li, lst in enumerate(gw.spec.listeners):
            server: dict[str, Any] = {"port": {"number": lst.port, "name": lst.name, "protocol": lst.protocol},
                                      "hosts": [f"*/{lst.hostname or '*'}"]}
            if lst.tls is not None:
                if lst.tls.mode == "Passthrough":
                    server["tls"] = {"mode": "PASSTHROUGH"}
                else:
                    ref = lst.tls.certificate_refs[0]
                    ref_ns = ref.namespace or gw.namespace
                    if ref_ns == gw.namespace:
                        credential = ref.name
                    elif secret_granted(grants, gw.namespace, ref_ns, ref.name):
                        credential = cross_namespace_credential(ref_ns, ref.name)
                    else:
                        problem(gw, f"spec.listeners[{li}].tls.certificateRefs[0]", f"the Secret {ref_ns}/{ref.name} "
                                f"is in another namespace and no ReferenceGrant there allows Gateways of namespace "
                                f"{gw.namespace} to use it: the listener is not served")
                        continue
                    server["tls"] = {"mode": "SIMPLE", "credentialName": credential}
            name = gateway_name(gw.name, lst.name)
            spec = _valid(GatewaySpec, {"selector": {GATEWAY_NAME_LABEL: gw.name}, "servers": [server]})
            if spec is None:
                problem(gw, f"spec.listeners[{li}]", "the listener has no Istio Gateway form; not served")
                continue
            out["Gateway"].append(_resource("Gateway", gw.namespace, name, spec, revision))
            served[(gw.namespace, name)] = (gw, lst)
    by_gw = {(g.namespace, g.name): g for g in gateways}
    per_host: dict[tuple[str, str, str], list[tuple[tuple, dict]]] = {}  # (ns, istio gw, host) -> entries
    per_service: dict[tuple[str, str], list[tuple[tuple, dict]]] = {}  # (ns, service) -> entries
    for rank, route in enumerate(routes):
        entries = _entries(route, rank, grants, problem)
        for pi, ref in enumerate(route.spec.parent_refs):
            where = f"spec.parentRefs[{pi}]"
            if ref.is_service:
                ns = ref.namespace or route.namespace
                if ns != route.namespace:
                    problem(route, where, "a Service of another namespace as parent (a consumer route) is not "
                                          "supported")
                    continue
                port_only = [(k, dict(e, match=[dict(m, port=ref.port) for m in e["match"]]) if ref.port else e)
                             for k, e in entries]
                per_service.setdefault((ns, ref.name), []).extend(port_only)
                continue
            gw = by_gw.get((ref.namespace or route.namespace, ref.name))
            if gw is None:
                problem(route, where, f"no Gateway {ref.namespace or route.namespace}/{ref.name}")
                continue
            attached = False
            for lst in gw.spec.listeners:
                if (ref.section_name and ref.section_name != lst.name) or (ref.port and ref.port != lst.port):
                    continue
                if lst.protocol not in ("HTTP", "HTTPS") or not _allowed(lst, gw, route, ns_labels):
                    continue
                name = gateway_name(gw.name, lst.name)
                if (gw.namespace, name) not in served:
                    continue
                for h in _hosts(lst.hostname, route.spec.hostnames):
                    per_host.setdefault((gw.namespace, name, h), []).extend(entries)
                    attached = True
            if not attached:
                problem(route, where, f"not attached to Gateway {gw.namespace}/{gw.name}: no listener matches its "
                                      "sectionName/port, allows its namespace and kind, and shares a hostname")
    for (ns, gw_name, host), entries in sorted(per_host.items()):
        spec = _valid(VirtualServiceSpec, {
            "hosts": [host], "gateways": [f"{ns}/{gw_name}"], "http": [e for _k, e in sorted(entries, key=_key)]})
        if spec is None:
            if problems is not None:
                problems += [(r, "spec", f"its rules for {host} on {ns}/{gw_name} have no Istio form; not served")
                             for r in routes]
            continue
        out["VirtualService"].append(_resource("VirtualService", ns, f"{gw_name}-{_slug(host)}", spec, revision))
    for (ns, svc), entries in sorted(per_service.items()):
        spec = _valid(VirtualServiceSpec, {
            "hosts": [f"{svc}.{ns}.svc.cluster.local"], "http": [e for _k, e in sorted(entries, key=_key)]})
        if spec is None:
            for r in routes:
                if any(p.is_service and p.name == svc and r.namespace == ns for p in r.spec.parent_refs):
                    problem(r, "spec", f"the mesh routes of Service {ns}/{svc} have no Istio form; not served")
            continue
        out["VirtualService"].append(_resource("VirtualService", ns, f"{svc}-gamma", spec, revision))
    return out


def _valid(model: Any, data: dict) -> Any:
    """The Istio spec `data` stands for, or None when Istio's rules refuse it (a combination of Gateway API
    fields that has no Istio form): that generated resource is left out — one route must never take the config
    index down. The rules every Gateway API kind is checked against at apply keep this rare."""
    try:
        return model.model_validate(data)
    except ValueError:
        return None


def _key(item: tuple[tuple, dict]) -> tuple:
    return item[0]


def _allowed(lst: Any, gw: Resource, route: Resource, ns_labels: Mapping[str, Mapping[str, str]]) -> bool:
    kinds = lst.allowed_routes.kinds
    if kinds and not any(k.kind == route.kind and (k.group or GROUP) == GROUP for k in kinds):
        return False
    sel = lst.allowed_routes.namespaces
    if sel.from_ == "All":
        return True
    if sel.from_ == "Same":
        return route.namespace == gw.namespace
    return labels_match(sel.selector.match_labels, {**ns_labels.get(route.namespace, {}),
                                                    "kubernetes.io/metadata.name": route.namespace})


def _hosts(listener: str | None, route_hosts: list[str]) -> list[str]:
    if not route_hosts:
        return [listener or "*"]
    out = []
    for h in route_hosts:
        if listener is None or host_match(h, listener):
            out.append(h)
        elif host_match(listener, h):
            out.append(listener)
    return list(dict.fromkeys(out))


def _granted(grants: Iterable[Resource], kind: str, from_ns: str, to_ns: str, name: str,
             to_kind: str = "Service") -> bool:
    """Does a ReferenceGrant in `to_ns` let a `kind` (of the Gateway API group) of `from_ns` refer to the core
    `to_kind` object `name` there (a `to` entry naming it, or all of that kind)?"""
    for g in grants:
        if g.namespace != to_ns:
            continue
        if not any(f.group == GROUP and f.kind == kind and f.namespace == from_ns for f in g.spec.from_):
            continue
        if any(t.group == "" and t.kind == to_kind and t.name in (None, name) for t in g.spec.to):
            return True
    return False


def secret_granted(grants: Iterable[Resource], gateway_ns: str, secret_ns: str, name: str) -> bool:
    """May Gateways of `gateway_ns` use the Secret `secret_ns/name` (its own namespace, or a ReferenceGrant)?"""
    return secret_ns == gateway_ns or _granted(grants, KUBE_GATEWAY_KIND, gateway_ns, secret_ns, name, "Secret")


def cross_namespace_credential(namespace: str, name: str) -> str:
    """The credentialName of a Secret of another namespace, granted to a Gateway: Istio's form."""
    return f"{CROSS_NAMESPACE_CREDENTIAL}{namespace}/{name}"


def parse_credential(name: str) -> tuple[str | None, str]:
    """(namespace, Secret name) of a credentialName: `kubernetes-gateway://<ns>/<name>` names its namespace;
    a plain name (None) is a Secret of the gateway workload's own namespace."""
    if name.startswith(CROSS_NAMESPACE_CREDENTIAL):
        ns, _, secret = name[len(CROSS_NAMESPACE_CREDENTIAL):].partition("/")
        return ns, secret
    return None, name


def _backend(route: Resource, b: Any, grants: list[Resource]) -> dict | None:
    ns = b.namespace or route.namespace
    if ns != route.namespace and not _granted(grants, route.kind, route.namespace, ns, b.name):
        return None
    return {"host": f"{b.name}.{ns}.svc.cluster.local", "port": {"number": b.port}}


def _entries(route: Resource, rank: int, grants: list[Resource], problem: Any) -> list[tuple[tuple, dict]]:
    """(precedence key, Istio http route) per rule match of one HTTPRoute or GRPCRoute."""
    out: list[tuple[tuple, dict]] = []
    label = route.name if route.kind == "HTTPRoute" else f"{route.name}.grpc"
    for ri, rule in enumerate(route.spec.rules):
        base: dict[str, Any] = {}
        redirect = rewrite = None
        for f in rule.filters:
            if f.type == "RequestHeaderModifier":
                base.setdefault("headers", {})["request"] = _header_ops(f.request_header_modifier)
            elif f.type == "ResponseHeaderModifier":
                base.setdefault("headers", {})["response"] = _header_ops(f.response_header_modifier)
            elif f.type == "RequestRedirect":
                redirect = f.request_redirect
            elif f.type == "URLRewrite":
                rewrite = f.url_rewrite
            elif f.type == "RequestMirror":
                dest = _backend(route, f.request_mirror.backend_ref, grants)
                if dest is not None:
                    base.setdefault("mirrors", []).append({"destination": dest})
        if getattr(rule, "timeouts", None) is not None and rule.timeouts.request:
            base["timeout"] = rule.timeouts.request
        if redirect is None:
            dests = []
            for bi, b in enumerate(rule.backend_refs):
                d = _backend(route, b, grants)
                if d is None:
                    problem(route, f"spec.rules[{ri}].backendRefs[{bi}]", f"Service {b.namespace}/{b.name} is in "
                            f"another namespace and no ReferenceGrant there allows it (its share answers 500)")
                else:
                    dests.append((d, b.weight))
            dests = [(d, w) for d, w in dests if w > 0]
            if not dests:
                base.pop("mirrors", None)
                base["directResponse"] = {"status": 500}
            else:
                base["route"] = [{"destination": d, "weight": w} for d, w in dests] if len(dests) > 1 \
                    else [{"destination": dests[0][0]}]
        matches = rule.matches or [None]
        for mi, m in enumerate(matches):
            rank_path, parts = _grpc_path(m) if route.kind == "GRPCRoute" else _http_path(m)
            rest = _other_matches(m)
            key = rank_path + (0 if getattr(m, "method", None) and route.kind == "HTTPRoute" else 1,
                               -len(m.headers) if m else 0, -len(getattr(m, "query_params", ()) or ()) if m else 0,
                               rank, ri, mi)
            for pi, (uri, is_prefix) in enumerate(parts):
                entry = dict(base, name=f"{route.namespace}.{label}.{ri}.{mi}.{pi}", match=[dict(rest, uri=uri)])
                if redirect is not None:
                    entry["redirect"] = _redirect(redirect, is_prefix)
                if rewrite is not None and "route" in entry:
                    rw = _rewrite(rewrite, is_prefix)
                    if rw:
                        entry["rewrite"] = rw
                out.append((key + (pi,), entry))
    return out


def _http_path(m: Any) -> tuple[tuple, list[tuple[dict, bool]]]:
    """(precedence of the path, [(uri match, is the prefix part)]) of an HTTPRoute match."""
    path = m.path if m is not None and m.path is not None else None
    ptype, pval = (path.type, path.value) if path is not None else ("PathPrefix", "/")
    rank = ({"Exact": 0, "PathPrefix": 1, "RegularExpression": 2}[ptype], -len(pval))
    if ptype == "Exact":
        return rank, [({"exact": pval}, False)]
    if ptype == "RegularExpression":
        return rank, [({"regex": pval}, False)]
    if pval.rstrip("/") == "":
        return rank, [({"prefix": "/"}, True)]
    trimmed = pval.rstrip("/")
    return rank, [({"exact": trimmed}, False), ({"prefix": trimmed + "/"}, True)]


def _grpc_path(m: Any) -> tuple[tuple, list[tuple[dict, bool]]]:
    """A GRPCRoute method match as a path (`/<service>/<method>`): service and method exact first, then a
    service alone (a prefix), then a method alone or regular expressions."""
    mm = m.method if m is not None else None
    if mm is None:  # matches every method: after every method match
        return (3, 0), [({"prefix": "/"}, True)]
    if mm.type == "Exact" and mm.service and mm.method:
        p = f"/{mm.service}/{mm.method}"
        return (0, -len(p)), [({"exact": p}, False)]
    if mm.type == "Exact" and mm.service:
        p = f"/{mm.service}/"
        return (1, -len(p)), [({"prefix": p}, True)]
    svc = (mm.service if mm.type != "Exact" else re.escape(mm.service)) if mm.service else "[^/]+"
    meth = (mm.method if mm.type != "Exact" else re.escape(mm.method)) if mm.method else "[^/]+"
    return (2, 0), [({"regex": f"/{svc}/{meth}"}, False)]


def _other_matches(m: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if m is None:
        return out
    if m.headers:
        out["headers"] = {h.name.lower(): {"exact" if h.type == "Exact" else "regex": h.value} for h in m.headers}
    if getattr(m, "query_params", None):
        out["queryParams"] = {q.name: {"exact" if q.type == "Exact" else "regex": q.value} for q in m.query_params}
    if isinstance(getattr(m, "method", None), str):
        out["method"] = {"exact": m.method}
    return out


def _header_ops(f: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if f.set:
        out["set"] = {h.name: h.value for h in f.set}
    if f.add:
        out["add"] = {h.name: h.value for h in f.add}
    if f.remove:
        out["remove"] = list(f.remove)
    return out


def _replace(p: Any, is_prefix: bool) -> tuple[str, str] | None:
    """('uri', path) for a full replacement, ('prefix', new prefix) for a prefix replacement."""
    if p is None:
        return None
    if p.type == "ReplaceFullPath":
        return "uri", p.replace_full_path
    new = p.replace_prefix_match or "/"
    if is_prefix:  # the matched prefix is `<trimmed>/`: keep the separator
        return "prefix", new.rstrip("/") + "/"
    return "uri", new  # the exact part of a PathPrefix match: the whole path is the prefix


def _redirect(r: Any, is_prefix: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"redirectCode": r.status_code}
    if r.scheme:
        out["scheme"] = r.scheme
    if r.hostname:
        out["authority"] = r.hostname
    if r.port:
        out["port"] = r.port
    rep = _replace(r.path, is_prefix)
    if rep is not None:
        out["uri" if rep[0] == "uri" else "prefixRewrite"] = rep[1]
    return out


def _rewrite(r: Any, is_prefix: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.hostname:
        out["authority"] = r.hostname
    rep = _replace(r.path, is_prefix)
    if rep is not None:
        if rep[0] == "prefix":
            out["uri"] = rep[1]
        else:  # the whole path (Envoy's regex rewrite of the path; the query string is kept)
            out["uriRegexRewrite"] = {"match": "^/.*$", "rewrite": rep[1]}
    return out
