"""`mizzen analyze`: find config that is valid YAML but will not do what its author meant. PURE.

Codes follow Istio's (`istioctl analyze`) where Istio has one; Mizzen's own checks use `MZ01xx` in the
same style. Each message carries a fix hint.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from ..api.base import Resource
from ..api.virtual_service import HTTPMatchRequest
from ..model.services import port_protocol
from ..model.snapshot import ConfigIndex, labels_match
from . import ratelimit

ERROR, WARNING, INFO = "Error", "Warning", "Info"


@dataclass(frozen=True)
class Message:
    code: str
    level: str
    resource: str  # "VirtualService default/reviews"
    message: str
    hint: str = ""
    path: str = ""

    def __str__(self) -> str:
        where = f" field {self.path}" if self.path else ""
        hint = f" (fix: {self.hint})" if self.hint else ""
        return f"{self.level} [{self.code}] ({self.resource}{where}) {self.message}{hint}"

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v}


def _ref(r: Resource) -> str:
    return f"{r.kind} {r.namespace}/{r.name}"


Analyzer = Callable[[ConfigIndex], Iterable[Message]]


def referenced_hosts_and_subsets(idx: ConfigIndex) -> Iterable[Message]:
    """IST0101: a VirtualService routes to a host or subset that does not exist."""
    for vs in idx.by_kind.get("VirtualService", ()):
        for i, r in enumerate(vs.spec.http):
            dests = [(f"spec.http[{i}].route[{j}].destination", d.destination) for j, d in enumerate(r.route)]
            if r.mirror is not None:
                dests.append((f"spec.http[{i}].mirror", r.mirror))
            for path, d in dests:
                host = idx.resolve(d.host, vs.namespace)
                if host not in idx.services and not host.startswith("*"):
                    yield Message("IST0101", ERROR, _ref(vs), f"referenced host not found: {d.host!r} ({host})",
                                  "create the Service or ServiceEntry, or fix the host name", f"{path}.host")
                    continue
                if d.subset:
                    dr = idx.destination_rules_by_host.get(host)
                    names = [s.name for s in dr.spec.subsets] if dr else []
                    if d.subset not in names:
                        yield Message("IST0101", ERROR, _ref(vs),
                                      f"referenced subset not found: {d.subset!r} of {host}",
                                      (f"add subset {d.subset!r} to DestinationRule {dr.namespace}/{dr.name}"
                                       if dr else f"create a DestinationRule for {d.host} with subset {d.subset!r}"),
                                      f"{path}.subset")
                if d.port is not None and host in idx.services and idx.services[host].port(d.port.number) is None:
                    yield Message("IST0101", ERROR, _ref(vs), f"port {d.port.number} is not a port of {host}",
                                  "use one of the service's ports", f"{path}.port.number")


def referenced_gateways(idx: ConfigIndex) -> Iterable[Message]:
    """IST0101: a VirtualService names a gateway that does not exist."""
    gws = {(g.namespace, g.name) for g in idx.by_kind.get("Gateway", ())}
    for vs in idx.by_kind.get("VirtualService", ()):
        for i, g in enumerate(vs.spec.gateways):
            if g == "mesh":
                continue
            ns, name = g.split("/", 1) if "/" in g else (vs.namespace, g)
            if (ns, name) not in gws:
                yield Message("IST0101", ERROR, _ref(vs), f"referenced gateway not found: {g!r}",
                              "create the Gateway or fix the name (namespace/name)", f"spec.gateways[{i}]")


def conflicting_virtual_services(idx: ConfigIndex) -> Iterable[Message]:
    """IST0109: several VirtualServices for one host on the mesh: only the oldest is used."""
    for host, lst in idx.virtual_services_by_host.items():
        if len(lst) > 1:
            used = lst[0]
            for vs in lst[1:]:
                yield Message("IST0109", ERROR, _ref(vs),
                              f"host {host} is also defined by {_ref(used)}, which wins; this one is ignored",
                              "merge the routes into one VirtualService per host", "spec.hosts")


def _match_key(m: HTTPMatchRequest | None) -> str:
    return "" if m is None else m.model_dump_json(exclude_defaults=True)


def _catch_all(m: HTTPMatchRequest | None) -> bool:
    if m is None:
        return True
    return _match_key(m) in ("{}",) or (m.uri is not None and m.uri.prefix == "/" and
                                       _match_key(m.model_copy(update={"uri": None})) == "{}")


def shadowed_routes(idx: ConfigIndex) -> Iterable[Message]:
    """MZ0101: a route can never match because an earlier one matches everything it does."""
    for vs in idx.by_kind.get("VirtualService", ()):
        seen: dict[str, int] = {}
        catch_all_at: int | None = None
        for i, r in enumerate(vs.spec.http):
            matches = r.match or [None]
            if catch_all_at is not None:
                yield Message("MZ0101", WARNING, _ref(vs),
                              f"http route {i} is unreachable: route {catch_all_at} before it matches every request",
                              "move the catch-all route last", f"spec.http[{i}]")
                continue
            for j, m in enumerate(matches):
                k = _match_key(m)
                if k in seen and k != "":
                    yield Message("MZ0102", WARNING, _ref(vs),
                                  f"match {j} of http route {i} repeats a match of route {seen[k]}: it never applies",
                                  "remove it or make it more specific and put it first", f"spec.http[{i}].match[{j}]")
                seen.setdefault(k, i)
            if any(_catch_all(m) for m in matches):
                catch_all_at = i


def weights(idx: ConfigIndex) -> Iterable[Message]:
    """MZ0103: zero-weight destinations (traffic never goes there) — sums ≠ 100 are rejected at apply."""
    for vs in idx.by_kind.get("VirtualService", ()):
        for i, r in enumerate(vs.spec.http):
            if len(r.route) > 1:
                for j, d in enumerate(r.route):
                    if d.weight == 0:
                        yield Message("MZ0103", INFO, _ref(vs), f"destination {j} has weight 0 and gets no traffic",
                                      "remove it or give it a weight", f"spec.http[{i}].route[{j}].weight")


def port_names(idx: ConfigIndex) -> Iterable[Message]:
    """IST0118: a service port without a protocol prefix is treated as TCP (no HTTP routing)."""
    for svc in idx.by_kind.get("Service", ()):
        for i, p in enumerate(svc.spec.ports):
            if port_protocol(p.name, p.app_protocol) == "TCP" and not (p.name or "").lower().startswith("tcp"):
                yield Message("IST0118", INFO, _ref(svc),
                              f"port {p.port} name {p.name!r} has no protocol prefix: treated as TCP, so "
                              "VirtualService HTTP routes do not apply",
                              "name it http-*, http2-*, grpc-* or tcp-* (or set appProtocol)", f"spec.ports[{i}].name")


def conflicting_sidecars(idx: ConfigIndex) -> Iterable[Message]:
    """IST0110/IST0111: Sidecars that select the same workloads, or several namespace-wide Sidecars."""
    by_ns: dict[str, list[Resource]] = {}
    for sc in idx.sidecars:
        by_ns.setdefault(sc.namespace, []).append(sc)
    workloads = idx.by_kind.get("Workload", ())
    for ns, lst in by_ns.items():
        wide = [s for s in lst if not (s.spec.workload_selector and s.spec.workload_selector.labels)]
        for s in wide[1:]:
            yield Message("IST0111", ERROR, _ref(s), f"namespace {ns} has several Sidecars without a workloadSelector "
                          f"({', '.join(x.name for x in wide)}); only {wide[0].name} is used",
                          "keep one namespace-wide Sidecar")
        selected = [s for s in lst if s not in wide]
        for a_i, a in enumerate(selected):
            for b in selected[a_i + 1:]:
                both = [w for w in workloads if w.namespace == ns
                        and labels_match(a.spec.workload_selector.labels, w.metadata.labels)
                        and labels_match(b.spec.workload_selector.labels, w.metadata.labels)]
                overlap = ", ".join(w.name for w in both) or None
                same_selector = a.spec.workload_selector.labels == b.spec.workload_selector.labels
                if overlap or same_selector:
                    yield Message("IST0110", ERROR, _ref(b),
                                  f"selects the same workloads as Sidecar {a.name}"
                                  + (f" ({overlap})" if overlap else ""),
                                  "make the workloadSelectors disjoint")


def delegates(idx: ConfigIndex) -> Iterable[Message]:
    """MZ0104: a delegating route whose delegate is missing (the route is omitted) or whose delegate's
    routes do not fit under its match (they are ignored)."""
    from ..model.delegate import problems

    for vs in idx.by_kind.get("VirtualService", ()):
        if not vs.spec.hosts:
            continue
        for path, msg in problems(idx, vs):
            yield Message("MZ0104", WARNING, _ref(vs), msg,
                          "create the delegate VirtualService (no hosts) or make its matches a subset of "
                          "the root route's", path)


ANALYZERS: tuple[Analyzer, ...] = (
    referenced_hosts_and_subsets, referenced_gateways, conflicting_virtual_services, shadowed_routes, weights,
    port_names, conflicting_sidecars, delegates,
) + (ratelimit.analyzer_for(Message),)


def analyze(resources: Iterable[Resource]) -> list[Message]:
    idx = ConfigIndex(resources)
    out: list[Message] = []
    for a in ANALYZERS:
        out.extend(a(idx))
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    return sorted(out, key=lambda m: (order[m.level], m.resource, m.code, m.path))
