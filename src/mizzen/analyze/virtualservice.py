"""VirtualService analyzers, after istioctl's (pkg/config/analysis/analyzers/virtualservice and the
unreachable-rule analysis of Istio's validation). PURE."""
from __future__ import annotations

import json
from typing import Iterable, Iterator

from ..api.base import Resource
from ..api.fields import host_matches
from .base import ERROR, INFO, WARNING, Context, Message, analyzer, fqdn, ref


def _destinations(vs: Resource) -> Iterator[tuple[str, str, object]]:
    """(kind of reference, field path, Destination) of every route and mirror destination."""
    s = vs.spec
    for kind, routes in (("tcp", s.tcp), ("tls", s.tls), ("http", s.http)):
        for i, r in enumerate(routes):
            for j, d in enumerate(r.route):
                yield "host", f"spec.{kind}[{i}].route[{j}].destination", d.destination
    for i, r in enumerate(s.http):
        if r.mirror is not None:
            yield "mirror host", f"spec.http[{i}].mirror", r.mirror
        for j, m in enumerate(r.mirrors):
            yield "mirror host", f"spec.http[{i}].mirrors[{j}].destination", m.destination


@analyzer
def destination_hosts(ctx: Context) -> Iterable[Message]:
    """IST0101 (host, host:port), IST0112: destinations that name no Service or ServiceEntry visible from the
    VirtualService's namespace, a port the service lacks, or no port where the service has several."""
    for vs in ctx.kind("VirtualService"):
        for what, path, d in _destinations(vs):
            svc = ctx.find_service(d.host, vs.namespace, vs.spec.export_to)
            if svc is None:
                yield Message("IST0101", ERROR, ref(vs), f"Referenced {what} not found: {d.host!r}",
                              "create the Service or ServiceEntry, or fix the host name", f"{path}.host")
                continue
            numbers = [p[0] for p in svc.ports]
            if d.port is None:
                if len(numbers) > 1:
                    yield Message("IST0112", ERROR, ref(vs),
                                  f"This VirtualService routes to a service {d.host!r} that exposes multiple ports "
                                  f"{numbers}. Specifying a port in the destination is required to disambiguate.",
                                  "add destination.port.number", path)
            elif numbers and d.port.number not in numbers:
                yield Message("IST0101", ERROR, ref(vs), f"Referenced host:port not found: "
                              f"{d.host + ':' + str(d.port.number)!r}", "use one of the service's ports",
                              f"{path}.port.number")


@analyzer
def destination_subsets(ctx: Context) -> Iterable[Message]:
    """IST0101: a destination's subset that no DestinationRule for that host defines."""
    subsets: set[tuple[str, str]] = set()
    for dr in ctx.kind("DestinationRule"):
        for s in dr.spec.subsets:
            subsets.add((fqdn(dr.spec.host, dr.namespace), s.name))
    for vs in ctx.kind("VirtualService"):
        for what, path, d in _destinations(vs):
            if d.subset and (fqdn(d.host, vs.namespace), d.subset) not in subsets:
                kind = "mirror+subset in destinationrule" if what == "mirror host" else "host+subset in destinationrule"
                yield Message("IST0101", ERROR, ref(vs), f"Referenced {kind} not found: {d.host + '+' + d.subset!r}",
                              f"add subset {d.subset!r} to the DestinationRule for {d.host}", f"{path}.subset")


def _gateway_hosts(gw: Resource, vs_namespace: str) -> list[str]:
    """The hosts a Gateway's servers offer to VirtualServices of `vs_namespace` (Istio's namespace/host forms)."""
    out: list[str] = []
    for s in gw.spec.servers:
        for h in s.hosts:
            ns, slash, host = h.partition("/")
            if not slash:
                out.append(h)
            elif ns == "*" or (ns == "." and vs_namespace == gw.namespace) or ns == vs_namespace:
                out.append(host)
    return out


@analyzer
def gateways(ctx: Context) -> Iterable[Message]:
    """IST0101 (gateway), IST0132: a VirtualService names a Gateway that does not exist, or none of its hosts
    is offered by the Gateway."""
    gws = {(g.namespace, g.name): g for g in ctx.kind("Gateway")}
    for vs in ctx.kind("VirtualService"):
        for i, name in enumerate(vs.spec.gateways):
            if name == "mesh":
                continue
            ns, slash, gname = name.partition("/")
            if not slash:
                gname, _, rest = name.partition(".")
                ns = rest.split(".")[0] if rest else vs.namespace
            gw = gws.get((ns, gname))
            k8s = ctx.kubernetes_gateway_hosts(ns, gname) if gw is None else None
            if k8s is not None:
                if not any(h == "*" or host_matches(h, v) for h in k8s for v in vs.spec.hosts):
                    yield Message("IST0132", WARNING, ref(vs), f"one or more host {vs.spec.hosts} defined in "
                                  f"VirtualService {vs.namespace}/{vs.name} not found in Gateway {ns}/{gname}.",
                                  "add the host to one of the Gateway's listeners", f"spec.gateways[{i}]")
                continue
            if gw is None:
                yield Message("IST0101", ERROR, ref(vs), f"Referenced gateway not found: {name!r}",
                              "create the Gateway or fix the name (namespace/name)", f"spec.gateways[{i}]")
            offered = _gateway_hosts(gw, vs.namespace) if gw is not None else []
            if not any(host_matches(g, h) for g in offered for h in vs.spec.hosts):
                yield Message("IST0132", WARNING, ref(vs),
                              f"one or more host {vs.spec.hosts} defined in VirtualService {vs.namespace}/{vs.name} "
                              f"not found in Gateway {ns}/{gname}.",
                              "add the host to one of the Gateway's servers, or fix the VirtualService's hosts",
                              f"spec.gateways[{i}]")


@analyzer
def conflicting_mesh_hosts(ctx: Context) -> Iterable[Message]:
    """IST0109: several VirtualServices bound to the mesh define the same host for the same namespaces;
    reported on each of them, as istioctl does."""
    scoped: dict[tuple[str, str], list[Resource]] = {}
    for vs in ctx.kind("VirtualService"):
        if vs.spec.gateways and "mesh" not in vs.spec.gateways:
            continue
        scopes = {vs.namespace if e == "." else e for e in vs.spec.export_to} or {"*"}
        if "*" in scopes:
            scopes = {"*"}
        for scope in scopes:
            for h in vs.spec.hosts:
                scoped.setdefault((scope, fqdn(h, vs.namespace)), []).append(vs)
    reported: set = set()
    for (scope, host), lst in sorted(scoped.items()):
        if scope != "*":
            lst = lst + [v for (s2, h2), l2 in scoped.items() if s2 == "*" and host_matches(host, h2) for v in l2]
        lst = list({v.key: v for v in lst}.values())
        if len(lst) < 2:
            continue
        names = ",".join(sorted(f"{v.namespace}/{v.name}" for v in lst))
        for v in lst:
            if v.key in reported:
                continue
            reported.add(v.key)
            yield Message("IST0109", ERROR, ref(v),
                          f"The VirtualServices {names} associated with mesh gateway define the same host "
                          f"{scope}/{host} which can lead to undefined behavior. This can be fixed by merging the "
                          "conflicting VirtualServices into a single resource.",
                          "merge the routes into one VirtualService per host", "spec.hosts")


def _route_name(r, i: int) -> str:
    return getattr(r, "name", None) or f"#{i}"


def _match_name(m, j: int) -> str:
    return getattr(m, "name", None) or f"#{j}"


def _match_key(m) -> str:
    return json.dumps(m.model_dump(by_alias=True, exclude_defaults=True, exclude={"name"}, mode="json"),
                      sort_keys=True)


def _exact_or_prefix(sm) -> str:
    if sm is None:
        return ""
    if sm.exact:
        return "exact:" + sm.exact
    if sm.prefix:
        return "prefix:" + sm.prefix
    return ""


def _prefix_view(m):
    """Istio's OverlappingMatchValidationForHTTPRoute for a uri prefix match, else None."""
    if m.uri is None or not m.uri.prefix:
        return None
    method = _exact_or_prefix(m.method) or "exact:GET"
    return (m.uri.prefix, m.port or 0, method, _exact_or_prefix(m.authority),
            {k: _exact_or_prefix(v) for k, v in m.headers.items()},
            {k: _exact_or_prefix(v) for k, v in m.query_params.items()},
            {k: _exact_or_prefix(v) for k, v in m.without_headers.items()})


def _covered(a, b) -> bool:
    """Istio's coveredValidation: does match `a` (earlier) take every request of `b`?"""
    if not b[0].startswith(a[0]) or a[1] != b[1]:
        return False
    for x, y in ((a[2], b[2]), (a[3], b[3])):
        if x != y and not x.startswith(y):
            return False
    for ma, mb in ((a[4], b[4]), (a[5], b[5]), (a[6], b[6])):
        if len(ma) != len(mb):
            return False
        for k, v in ma.items():
            if k not in mb or (v != mb[k] and not v.startswith(mb[k])):
                return False
    return True


def _unreachable(routes, kind: str) -> Iterator[tuple[str, str, str, str]]:
    """(code, rule, text, path) for rules no request reaches and matches that never apply (Istio's rules)."""
    seen: dict[str, int] = {}
    empty_at = -1
    prefixes: list[tuple[str, str, int, tuple]] = []
    for i, r in enumerate(routes):
        if not r.match:
            if empty_at >= 0:
                yield "IST0130", _route_name(r, i), "only the last rule can have no matches", f"spec.{kind}[{i}]"
            empty_at = i
            continue
        dups = 0
        for j, m in enumerate(r.match):
            if empty_at >= 0:
                yield "IST0130", _route_name(r, i), "route without matches defined before", f"spec.{kind}[{i}]"
                continue
            key = _match_key(m)
            if key in seen:
                yield ("IST0131", _route_name(r, i), f"{_match_name(m, j)}|{_route_name(routes[seen[key]], seen[key])}",
                       f"spec.{kind}[{i}].match[{j}]")
                dups += 1
                continue
            seen[key] = i
            if kind == "http":
                pv = _prefix_view(m)
                if pv is not None:
                    prefixes.append((_route_name(r, i), _match_name(m, j), i, pv))
        if dups == len(r.match):
            yield "IST0130", _route_name(r, i), "all matches used by prior rules", f"spec.{kind}[{i}]"
    for a_i, (ra, ma, ia, a) in enumerate(prefixes):
        for rb, mb, ib, b in prefixes[a_i + 1:]:
            if b[0] != a[0] and _covered(a, b):
                yield ("IST0131", rb, f"{mb} of prefix {b[0]}|{ma} of prefix {a[0]} on {ra}",
                       f"spec.http[{ib}]")


@analyzer
def unreachable_rules(ctx: Context) -> Iterable[Message]:
    """IST0130 (a rule no request reaches), IST0131 (a match that never applies: repeated, whatever its name,
    or covered by an earlier prefix match)."""
    for vs in ctx.kind("VirtualService"):
        for kind, routes in (("http", vs.spec.http), ("tcp", vs.spec.tcp), ("tls", vs.spec.tls)):
            for code, rule, text, path in _unreachable(routes, kind):
                if code == "IST0130":
                    yield Message(code, WARNING, ref(vs), f"VirtualService rule {rule} not used ({text}).",
                                  "remove the rule or move the rule without matches last", path)
                else:
                    match, dup = text.split("|", 1)
                    yield Message(code, INFO, ref(vs), f"VirtualService rule {rule} match {match} is not used "
                                  f"(duplicate/overlapping match in rule {dup}).",
                                  "remove the match or make it more specific and put it first", path)


@analyzer
def catch_all_before(ctx: Context) -> Iterable[Message]:
    """MZ0101: a rule after one whose only match is the uri prefix "/" (Istio counts only rules without
    matches as catch-alls; `prefix: /` takes every request too)."""
    for vs in ctx.kind("VirtualService"):
        at = None
        for i, r in enumerate(vs.spec.http):
            if at is not None:
                yield Message("MZ0101", WARNING, ref(vs), f"http route {i} is unreachable: route {at} before it "
                              "matches every request (uri prefix /)", "move the catch-all route last",
                              f"spec.http[{i}]")
                break
            if r.match and all(m.uri is not None and m.uri.prefix == "/" and
                               _match_key(m) == json.dumps({"uri": {"prefix": "/"}}, sort_keys=True)
                               for m in r.match):
                at = i


@analyzer
def zero_weights(ctx: Context) -> Iterable[Message]:
    """MZ0103: a destination of weight 0 beside others gets no traffic."""
    for vs in ctx.kind("VirtualService"):
        for i, r in enumerate(vs.spec.http):
            if len(r.route) > 1:
                for j, d in enumerate(r.route):
                    if d.weight == 0:
                        yield Message("MZ0103", INFO, ref(vs), f"destination {j} has weight 0 and gets no traffic",
                                      "remove it or give it a weight", f"spec.http[{i}].route[{j}].weight")


@analyzer
def ingress_subsets(ctx: Context) -> Iterable[Message]:
    """IST0140: a gateway VirtualService routes to a host without subset while a mesh VirtualService splits
    that host by subset: the subset split does not apply to the gateway's requests."""
    split: dict[str, list[Resource]] = {}
    for vs in ctx.kind("VirtualService"):
        for r in vs.spec.http:
            for d in r.route:
                if d.destination.subset and d.destination.host in vs.spec.hosts:
                    split.setdefault(d.destination.host, []).append(vs)
    for vs in ctx.kind("VirtualService"):
        if not vs.spec.gateways:
            continue
        for i, r in enumerate(vs.spec.http):
            for j, d in enumerate(r.route):
                if not d.destination.subset:
                    for other in {o.key: o for o in split.get(d.destination.host, [])}.values():
                        yield Message("IST0140", WARNING, ref(vs),
                                      f"Subset in virtual service {other.namespace}/{other.name} has no effect on "
                                      f"ingress gateway {vs.namespace}/{vs.name} requests",
                                      "route the gateway's requests to a subset too",
                                      f"spec.http[{i}].route[{j}].destination")


@analyzer
def delegates(ctx: Context) -> Iterable[Message]:
    """MZ0104: a delegating route whose delegate is missing (the route is omitted) or whose delegate's routes
    do not fit under its match (they are ignored)."""
    from ..model.snapshot import ConfigIndex
    from ..model.delegate import problems

    roots = [vs for vs in ctx.kind("VirtualService") if vs.spec.hosts and any(r.delegate for r in vs.spec.http)]
    if not roots:
        return
    idx = ConfigIndex(ctx.resources)
    for vs in roots:
        for path, msg in problems(idx, vs):
            yield Message("MZ0104", WARNING, ref(vs), msg, "create the delegate VirtualService (no hosts) or make "
                          "its matches a subset of the root route's", path)
