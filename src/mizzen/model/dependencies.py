"""Push scoping: what changed between two snapshots, what one proxy's config depends on, and so whether a
change must be pushed to it. Pure. The reference is Istio's `pilot/pkg/xds/proxy_dependencies.go`.

    change = diff(old, new)                  # Change(hosts, resources, everything)
    dependencies(new.config, proxy)          # Dependencies(scope, visible, own, routed, configs)
    affected(change, proxy, old, new)        # push this proxy?

A change reaches proxies in one of three ways:
- through **hosts** (`HOST_KINDS` and registry instances): a Service/ServiceEntry, the VirtualServices and
  delegates of a host, its DestinationRule, its endpoints. A proxy depends on a host it can see (its Sidecar
  egress), on the services that select it (its inbound listener: their ports and protocols) and on every
  host the routes of a visible host send to (cluster names, hash policies). Old and new snapshots are both
  asked (Istio's PrevSidecarScope): a proxy that stops seeing a host is pushed too.
- through **per-proxy resources** (`PROXY_KINDS`): a Telemetry or EnvoyPatch (old or new version) that
  applies to the proxy by namespace and selector; a Sidecar whenever the proxy's scope differs. For Telemetry
  and ExtensionProvider (`RESOLVED_KINDS`) only when the proxy's resolved telemetry (`model/telemetry.py`:
  metrics per side, tracing, access logs) differs between the two snapshots.
- **unknown kinds** (neither listed here nor in `IGNORED_KINDS`) push every proxy: a kind added later is
  correct before it is scoped. AuthorizationPolicy and RequestAuthentication are namespace- and
  selector-scoped like Telemetry (one with targetRefs: its whole namespace); a fetched JWKS that changed counts
  as a change of the RequestAuthentications that use it (`diff`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..api.base import Resource, ResourceKey
from . import authz, ratelimits
from . import gateway as gw
from .labels import ROOT_NAMESPACE, labels_match, scoped_to
from .security import PEER_AUTHENTICATION, applies_to_proxy
from .snapshot import ConfigIndex, SidecarScope, Snapshot
from .types import Proxy

# Kinds whose changes are seen as changed hosts (the host-keyed indexes of ConfigIndex are compared).
HOST_KINDS = frozenset({"Service", "ServiceEntry", "VirtualService", "DestinationRule"})
# Kinds no sidecar's config depends on as such (a Router: through the VirtualService/DestinationRule it generates;
# WorkloadEntries act as endpoints (the endpoint index's instances); groups and Hosts are stored only).
# A Secret: read by gateway agents (credentialName, over SDS), never part of a rendered view.
# Gateway API kinds: through the Istio Gateways and VirtualServices they generate (model/gateway_api.py).
IGNORED_KINDS = frozenset({"Workload", "Namespace", "ServiceAccount", "Router",
                           "WorkloadEntry", "WorkloadGroup", "Host", "Secret",
                           "KubeGateway", "HTTPRoute", "GRPCRoute", "ReferenceGrant"})


def _selector(r: Resource) -> dict[str, str] | None:
    if r.kind == "Telemetry":
        return r.spec.selector.match_labels if r.spec.selector else None
    sel = getattr(r.spec, "workload_selector", None)
    return sel.labels if sel is not None else None


def selected(r: Resource, proxy: Proxy) -> bool:
    """Root-namespace resources apply mesh-wide, others in their namespace; a selector narrows them."""
    return scoped_to(r.namespace, _selector(r), proxy.namespace, proxy.label_dict)


# Per-proxy kinds: does a changed resource (old or new version) apply to this proxy?
PROXY_KINDS: dict[str, Callable[[Resource, Proxy], bool]] = {
    "Telemetry": selected,
    "EnvoyPatch": selected,
    # its inbound listener; and, through `diff`, the hosts of its namespace (callers' auto mTLS: endpoint
    # modes in EDS, the namespace's mode on clusters)
    PEER_AUTHENTICATION: applies_to_proxy,
    # gateway proxies (model/gateway.py); they also take every non-empty change (see `affected`)
    "Gateway": lambda r, proxy: proxy.kind == "gateway",
    "AuthorizationPolicy": authz.may_apply,
    "RequestAuthentication": authz.may_apply,
    # workloadSelector: the proxies it selects; a `host` RateLimit acts through its host (see diff)
    "RateLimit": ratelimits.selects,
    "ExtensionProvider": lambda r, proxy: True,  # any proxy's Telemetry may name it: narrowed below
}


def _telemetry(config: ConfigIndex, proxy: Proxy):
    return config.resolved.telemetry_for(proxy)


# Per-proxy kinds whose effect on a proxy is one resolved value: a change pushes a proxy it applies to only
# when that value differs between the old and the new snapshot (a Telemetry edit that changes nothing for a
# proxy, or an ExtensionProvider no Telemetry of the proxy names, pushes nobody).
RESOLVED_KINDS: dict[str, Callable[[ConfigIndex, Proxy], object]] = {
    "Telemetry": _telemetry,
    "ExtensionProvider": _telemetry,
}


@dataclass(frozen=True)
class Change:
    """What differs between two snapshots."""

    hosts: frozenset[str] = frozenset()  # hosts whose service, routes, DestinationRule or endpoints changed
    resources: tuple[Resource, ...] = ()  # changed Sidecars and PROXY_KINDS: old and new versions
    everything: bool = False  # a kind nobody scopes changed: every proxy

    @property
    def empty(self) -> bool:
        return not (self.everything or self.hosts or self.resources)


EVERYTHING = Change(everything=True)


@dataclass(frozen=True)
class Dependencies:
    """What one proxy's rendered config is built from (besides the proxy's own identity)."""

    scope: SidecarScope
    visible: frozenset[str]  # hosts it can see: clusters, endpoints, outbound listener chains, routes
    own: frozenset[str]  # services selecting it: the inbound listener's chains follow their port protocols
    routed: frozenset[str]  # hosts the visible hosts' routes send to
    configs: frozenset[ResourceKey]  # per-proxy resources that apply to it (Sidecar, Telemetry, EnvoyPatch)
    hosts: frozenset[str] = field(default=frozenset(), compare=False)  # visible | own | routed

    def __post_init__(self) -> None:
        object.__setattr__(self, "hosts", self.visible | self.own | self.routed)


def dependencies(config: ConfigIndex, proxy: Proxy) -> Dependencies:
    """Memoized per (namespace, labels): everything here follows from them and the config."""
    def compute() -> Dependencies:
        scope = config.sidecar_scope(proxy)
        visible = frozenset(s.hostname for s in config.visible_services(proxy))
        routed = frozenset(h for v in visible for h in config.resolved_for(proxy.namespace).route_destinations(v))
        configs = {r.key for kind in PROXY_KINDS if kind != "ExtensionProvider"
                   for r in config.by_kind.get(kind, ()) if PROXY_KINDS[kind](r, proxy)}
        configs.update(k for k in config.resolved.telemetry_for(proxy).sources if k.kind == "ExtensionProvider")
        if scope.key:
            ns, name = scope.key.split("/", 1)
            configs.add(ResourceKey("Sidecar", ns, name))
        return Dependencies(scope, visible, frozenset(s.hostname for s in config.own_services(proxy)),
                            routed, frozenset(configs))

    return config.memoized(("dependencies", proxy.namespace, proxy.labels), compute)


def affected(change: Change, proxy: Proxy, old: Snapshot | None, new: Snapshot) -> bool:
    """Must `proxy` be pushed for `change` (from `old` to `new`)?"""
    if change.everything or old is None:
        return True
    if proxy.kind == "gateway" and not change.empty:  # few, and they route to any host: always pushed
        return True
    if change.hosts:
        if change.hosts & dependencies(new.config, proxy).hosts:
            return True
        if old.config is not new.config and change.hosts & dependencies(old.config, proxy).hosts:
            return True
    for r in change.resources:
        if r.kind == "Sidecar":
            if old.config.sidecar_scope(proxy) != new.config.sidecar_scope(proxy):
                return True
        else:
            applies = PROXY_KINDS.get(r.kind)
            if applies is None:
                return True
            if not applies(r, proxy):
                continue
            value = RESOLVED_KINDS.get(r.kind)
            if value is None or value(old.config, proxy) != value(new.config, proxy):
                return True
    if old.endpoints is not new.endpoints and ratelimits.view_inputs(old, proxy) != ratelimits.view_inputs(new, proxy):
        return True  # a rate-limit share or a caller identity table it uses changed with the registry
    return False


def diff(old: Snapshot | None, new: Snapshot) -> Change:
    """What changed from `old` to `new` (None: everything). Tables a change did not touch are shared by
    identity between the two indexes (`ConfigIndex.updated`) and skipped."""
    if old is None:
        return EVERYTHING
    oc, nc = old.config, new.config
    hosts: set[str] = set()
    resources: list[Resource] = []
    if oc is not nc:
        for kind in sorted(set(oc.by_kind) | set(nc.by_kind)):
            a, b = oc.by_kind.get(kind, ()), nc.by_kind.get(kind, ())
            if a is b or kind in HOST_KINDS or kind in IGNORED_KINDS:
                continue
            if kind == "Sidecar" or kind in PROXY_KINDS:
                before, after = {r.key: r for r in a}, {r.key: r for r in b}
                for k in sorted(before.keys() | after.keys(), key=str):
                    x, y = before.get(k), after.get(k)
                    if x is None or y is None or x.revision != y.revision:
                        resources += [r for r in (x, y) if r is not None]
                        if kind == "RateLimit":  # a `host` RateLimit changes what the host's callers render
                            hosts.update(h for h in (ratelimits.target_host(oc, x) if x else None,
                                                     ratelimits.target_host(nc, y) if y else None) if h)
            elif _revs(a) != _revs(b):
                return EVERYTHING
        for r in resources:
            if r.kind == PEER_AUTHENTICATION:  # callers' clusters and endpoints of the hosts it may govern
                hosts.update(h for svcs in (oc.services, nc.services) for h, s in svcs.items()
                             if r.namespace in (ROOT_NAMESPACE, s.namespace))
        if oc.services is not nc.services:
            hosts.update(h for h in oc.services.keys() | nc.services.keys() if oc.services.get(h) != nc.services.get(h))
        for table_o, table_n in ((oc.virtual_services_by_host, nc.virtual_services_by_host),
                                 (oc.delegates_by_host, nc.delegates_by_host),
                                 (oc.destination_rules_by_host, nc.destination_rules_by_host)):
            if table_o is not table_n:
                hosts.update(h for h in table_o.keys() | table_n.keys() if _revs(table_o.get(h)) != _revs(table_n.get(h)))
        vo, vn = oc.by_kind.get("VirtualService", ()), nc.by_kind.get("VirtualService", ())
        if vo is not vn:  # gateway-only VirtualServices are in no host table: their hosts reach the gateways
            before, after = {r.key: r for r in vo}, {r.key: r for r in vn}
            for k in before.keys() | after.keys():
                x, y = before.get(k), after.get(k)
                if x is None or y is None or x.revision != y.revision:
                    hosts.update(h for r in (x, y) if r is not None and gw.is_gateway_bound(r) for h in r.spec.hosts)
    if old.jwks is not new.jwks:
        changed = [u for u in old.jwks.keys() | new.jwks.keys() if old.jwks.get(u) != new.jwks.get(u)]
        if changed:
            resources += authz.users_of_jwks(nc, changed)
    if old.endpoints is not new.endpoints:
        before = {i.id: i for i in old.endpoints.instances}
        after = {i.id: i for i in new.endpoints.instances}
        index: dict[tuple[str, str, str], list] | None = None
        for k in before.keys() | after.keys():
            if before.get(k) == after.get(k):
                continue
            if index is None:
                index = selector_index(nc.services.values())
            for inst in (before.get(k), after.get(k)):
                if inst is not None:
                    hosts.update(services_selecting(index, inst.namespace, inst.label_dict))
    return Change(frozenset(hosts), tuple(resources))


def selector_index(services) -> dict[tuple[str, str, str], list]:
    """Services with a selector, by (namespace, one label of their selector): an instance can only be selected
    by services indexed under one of its own labels, so a changed instance costs O(its labels), not O(services)
    (registration churn in a 10,000-service mesh)."""
    index: dict[tuple[str, str, str], list] = {}
    for s in services:
        if s.selector:
            items = s.selector.items() if hasattr(s.selector, "items") else s.selector
            k, v = min(items)
            index.setdefault((s.namespace, k, v), []).append(s)
    return index


def services_selecting(index: dict[tuple[str, str, str], list], namespace: str, labels: dict[str, str]) -> set[str]:
    """Hostnames of the indexed services whose selector matches an instance of `namespace` with `labels`."""
    out: set[str] = set()
    for k, v in labels.items():
        for s in index.get((namespace, k, v), ()):
            if labels_match(s.selector, labels):
                out.add(s.hostname)
    return out


def diff_hosts(old: Snapshot | None, new: Snapshot) -> frozenset[str] | None:
    """The hosts a change touched (None: everything) — `diff(old, new).hosts`."""
    c = diff(old, new)
    return None if c.everything else c.hosts


def _revs(x) -> tuple:
    if x is None:
        return ()
    if isinstance(x, tuple):
        return tuple((r.key, r.revision) for r in x)
    return ((x.key, x.revision),)
