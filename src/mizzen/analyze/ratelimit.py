"""Analyzers for `mizzen.dev/v1 RateLimit`. PURE.

- MZ0301 (Warning): a limit that can never match — its `host` is no known service, its port is not a port of
  the target (or a TCP one: sidecars limit HTTP requests), its workloadSelector selects no Workload, its
  match port differs from every target port, or its uri lies outside every route of the host's
  VirtualService; also local limits with a match beyond the 4 a target combines (left out by the sidecars).
- MZ0302 (Warning): a local limit meant to be service-wide — `mode: local` at workloads that run several
  replicas: each replica admits the whole rate (N× in all); `scope: service` divides it among them.

`findings(by_kind)` yields (code, level, resource, message, hint, path) tuples; `rate_limits` registers them on
analyze/base.py's Context.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..api.base import Resource
from ..model.labels import scoped_to
from ..model.services import is_http
from ..model.snapshot import ConfigIndex
from .base import Context, Message, analyzer

WARNING = "Warning"
MAX_CONDITIONAL_LOCAL = 4  # translate/filters/ratelimit_descriptors.split_routes
Finding = tuple[str, str, str, str, str, str]


@analyzer
def rate_limits(ctx: Context) -> Iterable[Message]:
    return [Message(*f) for f in findings(ctx.by_kind)]


def _ref(r: Resource) -> str:
    return f"{r.kind} {r.namespace}/{r.name}"


def findings(by_kind: Mapping[str, Iterable[Resource]]) -> list[Finding]:
    rls = list(by_kind.get("RateLimit", ()))
    if not rls:
        return []
    idx = ConfigIndex([r for kind in by_kind for r in by_kind[kind]])
    out: list[Finding] = []
    for r in rls:
        out += _host_target(idx, r) if r.spec.host is not None else _selector_target(idx, r)
        local_conditional = [i for i, lim in enumerate(r.spec.limits) if r.spec.mode == "local" and lim.match
                             and (lim.match.uri or lim.match.method or lim.match.headers or lim.match.query_params
                                  or lim.match.authority or lim.match.scheme or lim.match.without_headers)]
        for i in local_conditional[MAX_CONDITIONAL_LOCAL:]:
            out.append(("MZ0301", WARNING, _ref(r), f"more than {MAX_CONDITIONAL_LOCAL} local limits with a match "
                        "on one target: the sidecars leave this one out", "merge limits, or use mode: global",
                        f"spec.limits[{i}].match"))
    return out


def _never(r: Resource, message: str, hint: str, path: str) -> Finding:
    return ("MZ0301", WARNING, _ref(r), f"the limit can never match: {message}", hint, path)


def _host_target(idx: ConfigIndex, r: Resource) -> list[Finding]:
    spec = r.spec
    host = idx.resolve(spec.host, r.namespace)
    svc = idx.services.get(host)
    if svc is None:
        return [_never(r, f"host {spec.host!r} ({host}) is no known Service or ServiceEntry",
                       "create the Service, or fix the host name", "spec.host")]
    ports = [p for p in svc.ports if spec.port is None or p.port == spec.port]
    if not ports:
        return [_never(r, f"port {spec.port} is not a port of {host} ({', '.join(str(p.port) for p in svc.ports)})",
                       "use one of the service's ports", "spec.port")]
    http = [p.port for p in ports if is_http(p.protocol)]
    if not http:
        return [_never(r, f"{host} has no HTTP port{'' if spec.port is None else f' {spec.port}'} (sidecars limit "
                          "HTTP requests; a TCP port carries none)", "name the port http-* (or http2-/grpc-)",
                       "spec.port" if spec.port is not None else "spec.host")]
    out = []
    vs_uris = _route_uris(idx, host)
    for i, lim in enumerate(spec.limits):
        m = lim.match
        if m is None:
            continue
        if m.port is not None and m.port not in http:
            out.append(_never(r, f"match port {m.port} is not an HTTP port of {host}", "use one of the service's "
                              "ports", f"spec.limits[{i}].match.port"))
        elif m.uri is not None and vs_uris is not None and not any(_compatible(m.uri, u) for u in vs_uris):
            out.append(_never(r, f"no route of the VirtualService for {host} reaches uri {_uri_text(m.uri)}",
                              "match a path the routes serve", f"spec.limits[{i}].match.uri"))
    return out


def _selector_target(idx: ConfigIndex, r: Resource) -> list[Finding]:
    workloads = idx.by_kind.get("Workload", ())
    if not workloads:
        return []  # analyzing files without the workloads: nothing to say about selection
    sel = r.spec.workload_selector.labels
    selected = [w for w in workloads if scoped_to(r.namespace, sel, w.namespace, w.metadata.labels)]
    if not selected:
        return [_never(r, f"workloadSelector {sel} selects no Workload in {r.namespace}", "fix the labels",
                       "spec.workloadSelector")]
    out = []
    if r.spec.port is not None:
        ports = {sp.port for s in idx.services.values() for w in selected if s.namespace == w.namespace
                 and s.selector and all(w.metadata.labels.get(k) == v for k, v in s.selector)
                 for sp in s.ports} | {p.container_port for w in selected for p in w.spec.ports}
        if ports and r.spec.port not in ports:
            out.append(_never(r, f"port {r.spec.port} is no port of the selected workloads' services "
                                 f"({', '.join(str(p) for p in sorted(ports))})", "use one of their ports", "spec.port"))
    replicas = sum(w.spec.replicas for w in selected)
    if r.spec.mode == "local" and r.spec.scope == "instance" and replicas > 1:
        names = ", ".join(f"{w.name}×{w.spec.replicas}" for w in selected)
        for i, lim in enumerate(r.spec.limits):
            out.append(("MZ0302", WARNING, _ref(r),
                        f"local limit {lim.name!r} is enforced by each of {replicas} replicas ({names}): the service "
                        f"as a whole admits {replicas}× the rate", "set scope: service to divide the limit among "
                        "the replicas (re-divided when they scale), or mode: global", f"spec.limits[{i}]"))
    return out


def _route_uris(idx: ConfigIndex, host: str) -> list[Any] | None:
    """The uri matches of the host's VirtualService routes (None: some route takes every path, or no VS)."""
    routes = idx.resolved.http_routes(host)
    if not routes:
        return None
    out = []
    for rr in routes:
        if not rr.route.match:
            return None
        for m in rr.route.match:
            if m.uri is None:
                return None
            out.append(m.uri)
    return out


def _compatible(limit_uri: Any, route_uri: Any) -> bool:
    """Can a request match both? Regexes are assumed to (unknowable here)."""
    if limit_uri.regex is not None or route_uri.regex is not None:
        return True
    a = limit_uri.exact if limit_uri.exact is not None else limit_uri.prefix
    b = route_uri.exact if route_uri.exact is not None else route_uri.prefix
    if limit_uri.exact is not None and route_uri.exact is not None:
        return a == b
    if limit_uri.exact is not None:
        return a.startswith(b)
    if route_uri.exact is not None:
        return b.startswith(a)
    return a.startswith(b) or b.startswith(a)


def _uri_text(u: Any) -> str:
    for k in ("exact", "prefix", "regex"):
        if getattr(u, k) is not None:
            return f"{k} {getattr(u, k)!r}"
    return "?"
