"""Istio's gateway semantics, resolved for one gateway proxy. Pure. (`translate/gateway.py` shapes Envoy.)

    gateway.ports(config, proxy)           # the Gateway servers that select the proxy, grouped by port
    gateway.bound(config, server)          # the VirtualServices bound to a server, with the hosts they serve
    gateway.http_routes(config, vs, server)  # a bound VirtualService's http routes (delegation merged) with
                                             # the matches that apply on this gateway and port
    gateway.tcp_routes / tls_routes        # the same for `tcp` and `tls` routes

Istio's rules, as documented for `Gateway` and `VirtualService.gateways`:
- a Gateway applies to the gateway proxies its `selector` selects, in any namespace (Istio's default,
  `PILOT_SCOPE_GATEWAY_TO_NAMESPACE=false`); servers of every Gateway selecting a proxy are merged by port.
- a VirtualService is bound to a Gateway when its `gateways` names it: `<name>` (in the VirtualService's
  namespace) or `<namespace>/<name>`; `mesh` means the sidecars; no `gateways` at all means `mesh` only.
- a server's `hosts` entry `<ns>/<host>` admits VirtualServices of namespace `<ns>` (`*`: any, `.`: the
  Gateway's own) for `<host>` (wildcards `*.example.com` and `*`); a bound VirtualService serves the hosts
  of its own that a server host admits (the more specific name of the two when one is a wildcard).
- match-level `gateways` narrow a match to the gateways (or `mesh`) it names; `port` to the server port;
  `sourceLabels`/`sourceNamespace` are compared with the gateway proxy's own labels and namespace.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from ..api.base import Resource
from ..api.networking import parse_protocol
from ..api.virtual_service import HTTPMatchRequest, HTTPRoute
from . import delegate
from .labels import labels_match
from .types import Proxy
from .visibility import export_to_of, exported_to

MESH = "mesh"
HTTP_PROTOCOLS = ("HTTP", "HTTP2", "GRPC", "GRPC-WEB")


@dataclass(frozen=True)
class GatewayServer:
    """One server of one Gateway resource."""

    gateway: Resource
    index: int

    @property
    def server(self) -> Any:
        return self.gateway.spec.servers[self.index]

    @property
    def ref(self) -> str:
        return f"{self.gateway.namespace}/{self.gateway.name}"

    @property
    def port(self) -> int:
        return self.server.port.number

    @property
    def protocol(self) -> str:
        return parse_protocol(self.server.port.protocol) or "TCP"

    @property
    def tls_mode(self) -> str | None:
        return self.server.tls.mode if self.server.tls is not None else None

    @property
    def terminates_tls(self) -> bool:
        """HTTPS, or TLS that is not passed through."""
        return self.protocol in ("HTTPS", "TLS") and self.tls_mode not in ("PASSTHROUGH", "AUTO_PASSTHROUGH")

    @property
    def serves_http(self) -> bool:
        return self.protocol in HTTP_PROTOCOLS or self.protocol == "HTTPS"

    @property
    def name(self) -> str:
        """Stable name: Istio's `<protocol>.<port>.<port name>.<gateway>.<namespace>` for route configs."""
        return f"{self.server.port.name}.{self.gateway.name}.{self.gateway.namespace}"

    @property
    def host_patterns(self) -> tuple[tuple[str, str], ...]:
        """(namespace pattern, host) of each `hosts` entry; `.` resolved to the Gateway's namespace."""
        out = []
        for h in self.server.hosts:
            ns, slash, host = h.partition("/")
            if not slash:
                ns, host = "*", h
            out.append((self.gateway.namespace if ns == "." else ns, host))
        return tuple(out)


@dataclass(frozen=True)
class PortServers:
    number: int
    servers: tuple[GatewayServer, ...]


def selects(gw: Resource, proxy: Proxy) -> bool:
    sel = gw.spec.selector
    return bool(sel) and labels_match(sel, proxy.label_dict)


def gateways_for(config: Any, proxy: Proxy) -> tuple[Resource, ...]:
    """The Gateways whose selector selects this gateway proxy (oldest first); none for a sidecar."""
    if proxy.kind != "gateway":
        return ()
    return config.memoized(("gateways", proxy.labels), lambda: tuple(
        g for g in config.by_kind.get("Gateway", ()) if selects(g, proxy)))


def ports(config: Any, proxy: Proxy) -> tuple[PortServers, ...]:
    by_port: dict[int, list[GatewayServer]] = {}
    for g in gateways_for(config, proxy):
        for i, s in enumerate(g.spec.servers):
            if s.port.number:  # a unix-socket bind (port 0) is not served
                by_port.setdefault(s.port.number, []).append(GatewayServer(g, i))
    return tuple(PortServers(p, tuple(v)) for p, v in sorted(by_port.items()))


# ------------------------------------------------------------------------------------------ binding
def gateway_refs(vs: Resource) -> tuple[str, ...]:
    """A VirtualService's `gateways` as `<ns>/<name>` (and `mesh`); none given = `mesh`."""
    return tuple(_ref(g, vs.namespace) for g in vs.spec.gateways) or (MESH,)


def _ref(g: str, namespace: str) -> str:
    if g == MESH or "/" in g:
        return g
    return f"{namespace}/{g}"


def host_match(name: str, pattern: str) -> bool:
    """Does `pattern` (`*`, `*.suffix` or a name) cover `name` (itself possibly a wildcard)?"""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return name.endswith(suffix) and (not name.startswith("*.") or name[1:].endswith(suffix))
    return name == pattern


def served_hosts(gs: GatewayServer, vs: Resource) -> tuple[str, ...]:
    """The hosts of `vs` that server `gs` admits (the more specific of the two names when one is a wildcard)."""
    out: list[str] = []
    for h in vs.spec.hosts:
        for ns, pat in gs.host_patterns:
            if ns != "*" and ns != vs.namespace:
                continue
            if host_match(h, pat):
                out.append(h)
            elif host_match(pat, h):
                out.append(pat)
    return tuple(dict.fromkeys(out))


def bound(config: Any, gs: GatewayServer, namespace: str | None = None
          ) -> tuple[tuple[Resource, tuple[str, ...]], ...]:
    """The VirtualServices bound to the server's Gateway that serve some of its hosts, oldest first; with
    `namespace` (the gateway proxy's), only those exported to it (exportTo, as Istio's
    VirtualServicesForGateway)."""
    def compute():
        out = []
        for vs in config.by_kind.get("VirtualService", ()):
            if not vs.spec.hosts or gs.ref not in gateway_refs(vs):
                continue
            if namespace is not None and not exported_to(export_to_of(vs), vs.namespace, namespace):
                continue
            hosts = served_hosts(gs, vs)
            if hosts:
                out.append((vs, hosts))
        return tuple(out)

    return config.memoized(("gateway_bound", gs.ref, gs.index, gs.gateway.revision, namespace), compute)


def _match_applies(m: Any, vs: Resource, gs: GatewayServer, proxy: Proxy) -> bool:
    if m.gateways and gs.ref not in {_ref(g, vs.namespace) for g in m.gateways}:
        return False
    if m.port is not None and m.port != gs.port:
        return False
    if m.source_labels and not labels_match(m.source_labels, proxy.label_dict):
        return False
    if m.source_namespace and m.source_namespace != proxy.namespace:
        return False
    return True


@dataclass(frozen=True)
class GatewayRoute:
    owner: Resource  # resolves the route's destinations (a delegate's own namespace)
    stem: str
    route: Any  # HTTPRoute / TCPRoute / TLSRoute
    matches: tuple[Any, ...]  # (None,) = match all


def http_routes(config: Any, vs: Resource, gs: GatewayServer, proxy: Proxy) -> Iterator[GatewayRoute]:
    for owner, stem, r in delegate.expand(config, vs):
        m = _matches(r, vs, gs, proxy)
        if m:
            yield GatewayRoute(owner, stem, r, m)


def tcp_routes(vs: Resource, gs: GatewayServer, proxy: Proxy) -> Iterator[GatewayRoute]:
    for i, r in enumerate(vs.spec.tcp):
        m = _matches(r, vs, gs, proxy)
        if m:
            yield GatewayRoute(vs, f"{vs.namespace}.{vs.name}.tcp.{i}", r, m)


def tls_routes(vs: Resource, gs: GatewayServer, proxy: Proxy) -> Iterator[GatewayRoute]:
    """TLS routes whose sniHosts fall within the server's hosts (each match keeps only those sniHosts)."""
    pats = [p for ns, p in gs.host_patterns if ns in ("*", vs.namespace)]
    for i, r in enumerate(vs.spec.tls):
        kept = []
        for m in r.match:
            if not _match_applies(m, vs, gs, proxy):
                continue
            sni = [h for h in m.sni_hosts if any(host_match(h, p) for p in pats)]
            if sni:
                kept.append(m.model_copy(update={"sni_hosts": sni}))
        if kept:
            yield GatewayRoute(vs, f"{vs.namespace}.{vs.name}.tls.{i}", r, tuple(kept))


def _matches(r: Any, vs: Resource, gs: GatewayServer, proxy: Proxy) -> tuple[Any, ...]:
    if not r.match:
        return (None,)
    return tuple(m for m in r.match if _match_applies(m, vs, gs, proxy))


def is_gateway_bound(vs: Resource) -> bool:
    """Bound to at least one gateway (not only to the sidecars)."""
    return any(g != MESH for g in gateway_refs(vs))


def gateway_hosts(config: Any) -> frozenset[str]:
    """Every host named by a gateway-bound VirtualService (`model.dependencies.diff` uses it)."""
    return frozenset(h for vs in config.by_kind.get("VirtualService", ()) if is_gateway_bound(vs)
                     for h in vs.spec.hosts)


__all__ = ["GatewayServer", "PortServers", "GatewayRoute", "gateways_for", "ports", "bound", "served_hosts",
           "host_match", "http_routes", "tcp_routes", "tls_routes", "gateway_refs", "is_gateway_bound",
           "HTTPMatchRequest", "HTTPRoute"]
