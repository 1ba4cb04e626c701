"""Which `mizzen.dev/v1 RateLimit` limits apply where, resolved for the sidecars. Pure.

    inbound(config, proxy, port)        # limits at this proxy's inbound chain for container port `port`
    outbound(config, proxy, host, port) # limits at this proxy's outbound virtual host `host:port`
    view_inputs(snap, proxy)            # what else besides the view key a proxy's rate-limit config reads

A RateLimit targets either workloads (`workloadSelector`, enforced at their inbound sidecars: the callee side;
in the root namespace mesh-wide, as other selector-scoped kinds; a selected gateway workload enforces them on
its Gateway servers' HTTP chains, `port` being the server port) or a `host` (enforced at the outbound sidecar
of every proxy that can see it: the callers' side), optionally narrowed by a service `port`. Per limit, a
match `port` must fit and, at a caller, `sourceLabels`/`sourceNamespace` must fit the caller (known here);
the rest of the match (uri, method, headers, query) is checked per request by Envoy.

Two inputs come from the registry rather than the config, so they are in `view_inputs` (the renderer keys
views by it, and `dependencies.affected` pushes a proxy when it changes):
- `scope: service` limits are divided among the healthy sidecar instances the selector selects (`share`);
- at an inbound sidecar, the caller's identity (workload, namespace, principal) is looked up by the caller's
  address in a table of every registered instance (`identities`): the sidecar matches the TCP peer address,
  never a header a client could send. Addresses shared by instances of different identities (loopback mode:
  every replica is 127.0.0.1) are left out: such callers have no known identity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from ..api.base import Resource
from . import gateway as G
from .labels import ROOT_NAMESPACE, labels_match, scoped_to
from .types import Proxy

SOURCE_KEYS = {"sourceWorkload": "workload", "sourceNamespace": "namespace", "sourcePrincipal": "principal"}
TRUST_DOMAIN = "cluster.local"


def principal(namespace: str, service_account: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account or 'default'}"


@dataclass(frozen=True)
class AppliedLimit:
    """One limit of one RateLimit, as it applies at one place."""

    resource: Resource
    index: int  # the limit's position in spec.limits

    @property
    def limit(self) -> Any:
        return self.resource.spec.limits[self.index]

    @property
    def spec(self) -> Any:
        return self.resource.spec

    @property
    def id(self) -> str:
        """`<namespace>/<RateLimit>/<limit>`: the descriptor value of `mizzen_limit` (ratelimit/table.py)."""
        return f"{self.resource.namespace}/{self.resource.name}/{self.limit.name}"

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def service_scoped(self) -> bool:
        return self.spec.scope == "service"

    def sources(self) -> set[str]:
        """The caller identities this limit's descriptor needs: workload | namespace | principal."""
        out = {SOURCE_KEYS[form] for form, _ in self.limit.key_parts() if form in SOURCE_KEYS}
        prio = self.limit.priority
        if prio is not None and prio.source is not None:
            out.add(prio.source)
        return out


def _ratelimits(config: Any) -> tuple[Resource, ...]:
    return tuple(config.by_kind.get("RateLimit", ()))


def selects(r: Resource, proxy: Proxy) -> bool:
    """A workload-targeted RateLimit applies to this proxy (its namespace, or mesh-wide from the root one)."""
    sel = r.spec.workload_selector
    return sel is not None and scoped_to(r.namespace, sel.labels, proxy.namespace, proxy.label_dict)


def target_host(config: Any, r: Resource) -> str | None:
    """The FQDN a host-targeted RateLimit names (resolved in its namespace), else None."""
    return None if r.spec.host is None else config.resolve(r.spec.host, r.namespace)


def _service_ports(config: Any, proxy: Proxy, container_port: int) -> frozenset[int]:
    """The service ports of the services selecting the proxy that lead to `container_port`."""
    return frozenset(sp.port for s in config.own_services(proxy) for sp in s.ports if sp.target_for() == container_port)


def _port_fits(wanted: int | None, ports: Iterable[int]) -> bool:
    return wanted is None or wanted in ports


def inbound(config: Any, proxy: Proxy, port: int) -> tuple[AppliedLimit, ...]:
    """The limits enforced at this proxy's inbound chain of container port `port` (memoized per index)."""
    def compute() -> tuple[AppliedLimit, ...]:
        ports = _service_ports(config, proxy, port) | {port}
        out = []
        for r in _ratelimits(config):
            if not selects(r, proxy) or not _port_fits(r.spec.port, ports):
                continue
            out += [AppliedLimit(r, i) for i, lim in enumerate(r.spec.limits)
                    if lim.match is None or _port_fits(lim.match.port, ports)]
        return tuple(out)

    return config.memoized(("rl_inbound", proxy.namespace, proxy.labels, port), compute)


def outbound(config: Any, proxy: Proxy, host: str, port: int | None) -> tuple[AppliedLimit, ...]:
    """The limits enforced at this proxy's outbound virtual host for `host` on service port `port`."""
    def compute() -> tuple[AppliedLimit, ...]:
        out = []
        labels = proxy.label_dict
        for r in _ratelimits(config):
            if target_host(config, r) != host or (port is not None and not _port_fits(r.spec.port, (port,))):
                continue
            for i, lim in enumerate(r.spec.limits):
                m = lim.match
                if m is not None and ((port is not None and not _port_fits(m.port, (port,)))
                                      or (m.source_labels and not labels_match(m.source_labels, labels))
                                      or (m.source_namespace and m.source_namespace != proxy.namespace)):
                    continue
                out.append(AppliedLimit(r, i))
        return tuple(out)

    return config.memoized(("rl_outbound", proxy.namespace, proxy.labels, host, port), compute)


def relevant(config: Any, proxy: Proxy) -> tuple[Resource, ...]:
    """The RateLimits that can shape this proxy's config at all: selecting it, or naming a host it sees."""
    def compute() -> tuple[Resource, ...]:
        rls = _ratelimits(config)
        if not rls:
            return ()
        visible = {s.hostname for s in config.visible_services(proxy)}
        return tuple(r for r in rls if selects(r, proxy) or target_host(config, r) in visible)

    return config.memoized(("rl_relevant", proxy.namespace, proxy.labels), compute)


# ------------------------------------------------------------------------------------------ registry inputs

def _healthy_sidecars(endpoints: Any, r: Resource) -> int:
    sel = r.spec.workload_selector.labels
    return sum(1 for i in endpoints.instances if i.healthy and i.sidecar
               and (r.namespace == ROOT_NAMESPACE or i.namespace == r.namespace) and labels_match(sel, i.label_dict))


def share(snap: Any, a: AppliedLimit) -> int:
    """How many instances a `scope: service` limit is divided among now (at least 1; 1 for other limits)."""
    if not a.service_scoped:
        return 1
    memo = _memo(snap.endpoints)
    key = ("share", a.resource.key, a.resource.revision)
    if key not in memo:
        memo[key] = max(1, _healthy_sidecars(snap.endpoints, a.resource))
    return memo[key]


def identities(snap: Any, kind: str) -> tuple[tuple[str, str], ...]:
    """(address, identity) of every registered instance for one identity kind (workload | namespace |
    principal), addresses with more than one identity left out; sorted, memoized per registry version."""
    memo = _memo(snap.endpoints)
    key = ("identities", kind)
    if key not in memo:
        seen: dict[str, set[str]] = {}
        for i in snap.endpoints.instances:
            if i.address.startswith("unix://"):
                continue  # a WorkloadEntry on a unix socket: no source address to know it by
            value = {"workload": i.workload, "namespace": i.namespace,
                     "principal": principal(i.namespace, i.service_account)}[kind]
            seen.setdefault(i.address, set()).add(value)
        memo[key] = tuple(sorted((addr, next(iter(v))) for addr, v in seen.items() if len(v) == 1))
    return memo[key]


def _memo(endpoints: Any) -> dict:
    # the EndpointIndex is immutable: answers derived from it are kept on it (like its own _groups)
    memo = endpoints.__dict__.get("_ratelimit_memo")
    if memo is None:
        memo = endpoints.__dict__["_ratelimit_memo"] = {}
    return memo


def gateway_ports(config: Any, proxy: Proxy) -> tuple[int, ...]:
    """A gateway proxy's Gateway server ports (where its own workload's limits apply); () for a sidecar."""
    return tuple(ps.number for ps in G.ports(config, proxy))


def callee_ports(config: Any, proxy: Proxy) -> tuple[int, ...]:
    """The ports where the limits selecting this proxy's workload apply: its container ports (inbound chains)
    and, for a gateway, its Gateway server ports."""
    return tuple(dict.fromkeys((*proxy.ports, *gateway_ports(config, proxy))))


def inbound_sources(config: Any, proxy: Proxy) -> frozenset[str]:
    """The caller identities this proxy's inbound limits need (over all its ports)."""
    return config.memoized(("rl_inbound_sources", proxy.namespace, proxy.labels, proxy.kind), lambda: frozenset(
        s for p in callee_ports(config, proxy) for a in inbound(config, proxy, p) for s in a.sources()))


def view_inputs(snap: Any, proxy: Proxy) -> tuple:
    """What a proxy's rate-limit config reads beyond `translate.renderer.view_key`: () for a proxy no RateLimit
    touches. Otherwise its own identity (the outbound descriptors carry it) and rate-limit service address,
    the current share of every `scope: service` limit selecting it, and the identity tables its inbound
    limits look callers up in."""
    rls = relevant(snap.config, proxy)
    if not rls:
        return ()
    shares = tuple((a.id, share(snap, a)) for p in callee_ports(snap.config, proxy)
                   for a in inbound(snap.config, proxy, p) if a.service_scoped)
    ids = tuple((kind, identities(snap, kind)) for kind in sorted(inbound_sources(snap.config, proxy)))
    return (proxy.workload, proxy.service_account, proxy.ratelimit_address, shares, ids)
