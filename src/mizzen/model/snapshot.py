"""One immutable, indexed view of config + registry, built in two independent halves.

`ConfigIndex` is rebuilt only when the store changes, and then incrementally: `ConfigIndex.updated(prev,
changes)` rebuilds only the indexes fed by the kinds that changed (a VirtualService edit rebuilds the
VirtualService indexes and reuses the services, DestinationRule and Sidecar indexes as they are).
`EndpointIndex` is rebuilt only when the registry changes; a `Snapshot` pairs them. What a change touched,
and which proxies depend on it, is `model/dependencies.py`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Iterable, Mapping

from ..api.base import Resource, ResourceKey
from .authz import Jwks
from . import gateway_api
from .labels import ROOT_NAMESPACE, labels_match
from .resolved import Resolved
from .router import expand_all
from .security import NO_TLS, TLS_MODE_LABEL, endpoint_tls_mode
from .services import Service, is_http, resolve_host, services_from_resources
from .types import Instance, Proxy
from .visibility import destination_rule_seen, exported_to, virtual_services_seen

__all__ = ["ROOT_NAMESPACE", "labels_match", "Endpoint", "SidecarScope", "ConfigIndex", "EndpointIndex",
           "Snapshot"]

_EXPANDED = ("VirtualService", "DestinationRule", "Router")  # kinds a Router expands into (and itself)
# memo keys (`ConfigIndex.memoized`) whose answers depend on nothing but the services table and the key itself
# (`visible`: the key holds the Sidecar scope): carried to the next index while its services are the same object
_SERVICES_ONLY = frozenset({"visible", "own"})


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    labels: tuple[tuple[str, str], ...]
    healthy: bool = True
    locality: str = ""
    instance_id: str = ""
    weight: int = 1
    # auto mTLS: `istio` when a caller's sidecar should originate mesh mTLS to it (it has a sidecar whose
    # PeerAuthentication does not DISABLE the port), else `disabled` (model/security.py)
    tls_mode: str = ""


@dataclass(frozen=True)
class SidecarScope:
    """What one proxy may reach: the hosts allowed by its Sidecar (None = everything), and the Sidecar's
    `outboundTrafficPolicy.mode` (None: not set there, the mesh default applies)."""

    key: str  # "" = no Sidecar applies; else "<ns>/<name>"
    egress: tuple[tuple[str, str], ...] | None  # (namespace pattern, host pattern)
    outbound_mode: str | None = None  # REGISTRY_ONLY | ALLOW_ANY | None

    def allows(self, svc: Service, proxy_ns: str) -> bool:
        if self.egress is None:
            return True
        for ns_pat, host_pat in self.egress:
            if ns_pat == "~":
                continue
            if ns_pat == ".":
                ns_pat = self.key.split("/", 1)[0]
            if ns_pat != "*" and ns_pat != svc.namespace:
                continue
            if host_pat == "*" or host_pat == svc.hostname or host_pat in svc.short_names:
                return True
            if host_pat.startswith("*.") and svc.hostname.endswith(host_pat[1:]):
                return True
        return False


class ConfigIndex:
    """Indexes over the config store's resources. Immutable once built.

    Every table is an attribute; a table not fed by a changed kind is the previous index's object itself
    (so `model.dependencies.diff` skips it by identity)."""

    def __init__(self, resources: Iterable[Resource] = (), revision: int = 0):
        raw: dict[str, dict[ResourceKey, Resource]] = {}
        for r in resources:
            raw.setdefault(r.kind, {})[r.key] = r
        self._build(raw, revision, None, frozenset())

    @classmethod
    def updated(cls, prev: "ConfigIndex", changes: Mapping[ResourceKey, Resource | None],
                revision: int) -> "ConfigIndex":
        """`prev` with `changes` applied (key -> the resource as stored now, None = deleted)."""
        raw = dict(prev._raw)
        for key, res in changes.items():
            if raw.get(key.kind) is prev._raw.get(key.kind):
                raw[key.kind] = dict(raw.get(key.kind, {}))  # copy on first write: prev stays immutable
            if res is None:
                raw[key.kind].pop(key, None)
            else:
                raw[key.kind][key] = res
        out = cls.__new__(cls)
        out._build({k: v for k, v in raw.items() if v}, revision, prev, frozenset(k.kind for k in changes))
        return out

    def _build(self, raw: dict[str, dict[ResourceKey, Resource]], revision: int, prev: "ConfigIndex | None",
               changed: frozenset[str]) -> None:
        self._raw = raw
        self.revision = revision
        self._known = frozenset(k.namespace for tbl in raw.values() for k in tbl)
        full = prev is None or prev._known != self._known  # host resolution depends on the namespaces
        routers = bool(raw.get("Router") or (prev is not None and prev._raw.get("Router")))
        if not full and routers and changed & set(_EXPANDED):
            changed |= {"VirtualService", "DestinationRule"}  # a Router generates both
        # Gateway API resources stand for the Istio Gateways and VirtualServices they become (model/gateway_api.py)
        gwapi = any(raw.get(k) or (prev is not None and prev._raw.get(k)) for k in gateway_api.INPUT_KINDS)
        if not full and gwapi and changed & set(gateway_api.INPUT_KINDS + ("Namespace",)):
            changed |= {"Gateway", "VirtualService"}
        by_kind: dict[str, tuple[Resource, ...]] = {}
        expanded: dict[str, list[Resource]] | None = None
        generated: dict[str, list[Resource]] = {}
        if any(raw.get(k) for k in gateway_api.INPUT_KINDS) and (full or changed & {"Gateway", "VirtualService"}):
            kinds_in = {k: list(raw.get(k, {}).values()) for k in gateway_api.INPUT_KINDS + ("Namespace",)}
            newest = max((r.revision for lst in kinds_in.values() for r in lst), default=revision)
            generated = gateway_api.convert(kinds_in, newest)
        kinds = set(raw) - {"Router"}  # a Router stands for the VirtualService + DestinationRule it generates
        if gwapi:
            kinds |= {"Gateway", "VirtualService"}
        if raw.get("Router"):
            kinds |= {"VirtualService", "DestinationRule"}
            if full or changed & set(_EXPANDED):
                expanded = {}
                for r in expand_all([r for k in _EXPANDED for r in raw.get(k, {}).values()], self._known):
                    expanded.setdefault(r.kind, []).append(r)
        for kind in kinds:
            if not full and kind not in changed and kind in prev.by_kind:
                by_kind[kind] = prev.by_kind[kind]
                continue
            items = expanded.get(kind, []) if expanded is not None and kind in _EXPANDED \
                else list(raw.get(kind, {}).values())
            items += generated.get(kind, [])
            by_kind[kind] = tuple(sorted(items, key=lambda r: (r.revision, r.namespace, r.name)))
        self.by_kind: dict[str, tuple[Resource, ...]] = {k: v for k, v in by_kind.items() if v}
        self.namespaces = frozenset(r.namespace for lst in self.by_kind.values() for r in lst)
        full = full or prev.namespaces != self.namespaces

        def stale(*kinds: str) -> bool:
            return full or bool(changed & set(kinds))

        # Services of unchanged resources are reused from `prev` (same objects when their VIP is the same)
        self._services_memo = prev._services_memo if prev is not None else {}
        if stale("Service", "ServiceEntry"):
            self.services: dict[str, Service] = services_from_resources(
                self.by_kind.get("Service", ()), self.by_kind.get("ServiceEntry", ()), self.namespaces,
                self._services_memo)
            self.ports_by_number: dict[int, tuple[Service, ...]] = self._ports()
        else:
            self.services, self.ports_by_number = prev.services, prev.ports_by_number
        if stale("VirtualService"):
            self.virtual_services_by_host: dict[str, tuple[Resource, ...]] = self._vs_by_host()
            # hostless VirtualServices are delegates (Istio): found by namespace/name from a root's http[].delegate
            self.delegate_virtual_services: dict[tuple[str, str], Resource] = {
                (vs.namespace, vs.name): vs for vs in self.by_kind.get("VirtualService", ()) if not vs.spec.hosts}
            self.delegates_by_host: dict[str, tuple[Resource, ...]] = self._delegates_by_host()
        else:
            self.virtual_services_by_host = prev.virtual_services_by_host
            self.delegate_virtual_services = prev.delegate_virtual_services
            self.delegates_by_host = prev.delegates_by_host
        if stale("DestinationRule"):
            self.destination_rules_by_host: dict[str, tuple[Resource, ...]] = self._dr_by_host()
        else:
            self.destination_rules_by_host = prev.destination_rules_by_host
        self.sidecars: tuple[Resource, ...] = self.by_kind.get("Sidecar", ())
        self._memo: dict = {}
        if prev is not None and self.services is prev.services:
            # answers that follow from the services table alone (and the key) stay true: a VirtualService or
            # DestinationRule change does not scan every service again for every workload
            self._memo = {k: v for k, v in prev._memo.items() if k[0] in _SERVICES_ONLY}

    def memoized(self, key: tuple, compute):
        """A derived answer, computed once per index (the index is immutable)."""
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = compute()
        return hit

    def visible_services(self, proxy: Proxy) -> tuple[Service, ...]:
        """The services the proxy's Sidecar egress lets it see (all without a Sidecar), by hostname."""
        scope = self.sidecar_scope(proxy)
        return self.memoized(("visible", scope.key, scope.egress, proxy.namespace), lambda: tuple(
            s for s in sorted(self.services.values(), key=lambda s: s.hostname) if scope.allows(s, proxy.namespace)
            and exported_to(s.export_to, s.namespace, proxy.namespace)))  # exportTo: model/visibility.py

    def own_services(self, proxy: Proxy) -> tuple[Service, ...]:
        """The services that select this proxy (its namespace, selector ⊆ its labels): its inbound side."""
        labels = proxy.label_dict
        return self.memoized(("own", proxy.namespace, proxy.labels), lambda: tuple(
            s for s in self.services.values()
            if s.namespace == proxy.namespace and s.selector and labels_match(s.selector, labels)))

    @cached_property
    def resolved(self) -> Resolved:
        """Istio's semantics over this index (routes with delegation merged, policies, per-proxy kinds), not
        bound to a namespace: the oldest VirtualService and DestinationRule of a host, whatever their exportTo
        (what `mizzen analyze` and the SDK ask). Rendering asks `resolved_for(proxy namespace)`."""
        return Resolved(self)

    def resolved_for(self, namespace: str) -> Resolved:
        """The answers as proxies of `namespace` see them (exportTo of VirtualServices and DestinationRules)."""
        return self.resolved.for_namespace(namespace)

    def resolve(self, host: str, namespace: str) -> str:
        return resolve_host(host, namespace, self.namespaces)

    def _vs_by_host(self) -> dict[str, tuple[Resource, ...]]:
        out: dict[str, list[Resource]] = {}
        for vs in self.by_kind.get("VirtualService", ()):
            gws = vs.spec.gateways
            if gws and "mesh" not in gws:
                continue  # gateway-only VirtualService: not for sidecars
            for h in vs.spec.hosts:
                out.setdefault(self.resolve(h, vs.namespace), []).append(vs)
        return {h: tuple(v) for h, v in out.items()}

    def delegate_for(self, root: Resource, ref) -> Resource | None:
        """The delegate VirtualService a root's `http[].delegate` names (its namespace defaults to the
        root's); None when there is none, or when the named VirtualService has hosts (not a delegate)."""
        return self.delegate_virtual_services.get((ref.namespace or root.namespace, ref.name))

    def _delegates_by_host(self) -> dict[str, tuple[Resource, ...]]:
        """Per host, the delegates its VirtualServices use: a change to one re-pushes the root's host."""
        out: dict[str, tuple[Resource, ...]] = {}
        for h, vss in self.virtual_services_by_host.items():
            found = [d for vs in vss for r in vs.spec.http if r.delegate is not None
                     for d in [self.delegate_for(vs, r.delegate)] if d is not None]
            if found:
                out[h] = tuple({(d.namespace, d.name): d for d in found}.values())
        return out

    def _dr_by_host(self) -> dict[str, tuple[Resource, ...]]:
        """Every DestinationRule of each host, oldest first (which one a proxy uses: `destination_rule_for`)."""
        out: dict[str, list[Resource]] = {}
        for dr in self.by_kind.get("DestinationRule", ()):
            out.setdefault(self.resolve(dr.spec.host, dr.namespace), []).append(dr)
        return {h: tuple(v) for h, v in out.items()}

    def destination_rule_for(self, host: str, namespace: str | None = None) -> Resource | None:
        """The DestinationRule proxies of `namespace` use for `host` (exportTo and Istio's lookup order,
        `model/visibility.py`); `namespace` None: the oldest one (not bound to a viewer)."""
        drs = self.destination_rules_by_host.get(host)
        if not drs:
            return None
        if namespace is None:
            return drs[0]
        svc = self.services.get(host)
        return self.memoized(("dr_for", host, namespace), lambda: destination_rule_seen(
            drs, svc.namespace if svc is not None else None, namespace))

    def _ports(self) -> dict[int, tuple[Service, ...]]:
        out: dict[int, list[Service]] = {}
        for s in sorted(self.services.values(), key=lambda s: s.hostname):
            for p in s.ports:
                out.setdefault(p.port, []).append(s)
        return {k: tuple(v) for k, v in out.items()}

    def virtual_service_for(self, host: str, namespace: str | None = None) -> Resource | None:
        """The VirtualService proxies of `namespace` use for `host` (exportTo, Istio's order of preference:
        `model/visibility.py`); `namespace` None: the oldest one (not bound to a viewer)."""
        lst = self.virtual_services_by_host.get(host)
        if not lst:
            return None
        if namespace is None:
            return lst[0]
        seen = self.memoized(("vs_for", host, namespace), lambda: virtual_services_seen(lst, namespace))
        return seen[0] if seen else None

    def sidecar_scope(self, proxy: Proxy) -> SidecarScope:
        labels = proxy.label_dict
        chosen: Resource | None = None
        for sc in self.sidecars:  # workload-selected Sidecar in the proxy's namespace wins
            sel = sc.spec.workload_selector
            if sc.namespace == proxy.namespace and sel and sel.labels and labels_match(sel.labels, labels):
                chosen = sc
                break
        if chosen is None:
            for ns in (proxy.namespace, ROOT_NAMESPACE):
                for sc in self.sidecars:
                    sel = sc.spec.workload_selector
                    if sc.namespace == ns and not (sel and sel.labels):
                        chosen = sc
                        break
                if chosen:
                    break
        if chosen is None:
            return SidecarScope("", None)
        otp = chosen.spec.outbound_traffic_policy
        mode = otp.mode if otp is not None else None
        if not chosen.spec.egress:
            return SidecarScope(f"{chosen.namespace}/{chosen.name}" if mode else "", None, mode)
        egress: list[tuple[str, str]] = []
        for eg in chosen.spec.egress:
            for h in eg.hosts:
                ns_pat, host_pat = h.split("/", 1)
                # "." is the proxy's own namespace: for a namespace's Sidecar that is its namespace, for the
                # mesh-wide default in the root namespace it is each proxy's (Istio's semantics)
                egress.append((proxy.namespace if ns_pat == "." else ns_pat, host_pat))
        return SidecarScope(f"{chosen.namespace}/{chosen.name}", tuple(egress), mode)


class EndpointIndex:
    """Registry instances grouped by the services that select them."""

    def __init__(self, instances: Iterable[Instance], version: int = 0):
        self.version = version
        self.instances: tuple[Instance, ...] = tuple(sorted(instances, key=lambda i: i.id))

    def for_service(self, svc: Service) -> tuple[Instance, ...]:
        key = (svc.namespace, svc.selector)
        hit = self._groups.get(key)
        if hit is None:
            hit = self._select(*key)
            self._groups[key] = hit
        return hit

    @cached_property
    def _groups(self) -> dict:
        return {}

    @cached_property
    def _by_label(self) -> dict[tuple[str, str, str], list[Instance]]:
        idx: dict[tuple[str, str, str], list[Instance]] = {}
        for inst in self.instances:
            for k, v in inst.labels:
                idx.setdefault((inst.namespace, k, v), []).append(inst)
        return idx

    def _select(self, namespace: str, selector: tuple[tuple[str, str], ...]) -> tuple[Instance, ...]:
        if not selector:
            return ()
        lists = [self._by_label.get((namespace, k, v), []) for k, v in selector]
        smallest = min(lists, key=len)
        return tuple(i for i in smallest if labels_match(selector, i.label_dict))


@dataclass(frozen=True)
class MeshSettings:
    """Mesh-wide defaults set on the control plane (Istio's MeshConfig), not in the store."""

    # for proxies whose Sidecar does not set outboundTrafficPolicy (`mizzen up --outbound-traffic-policy`)
    outbound_traffic_policy: str = "ALLOW_ANY"


@dataclass(frozen=True)
class Snapshot:
    config: ConfigIndex
    endpoints: EndpointIndex
    generation: int = 0
    # JWKS the control plane fetched, by jwksUri (data, so translate stays pure); replaced, never mutated
    jwks: Mapping[str, Jwks] = field(default_factory=dict)
    mesh: MeshSettings = MeshSettings()

    @classmethod
    def build(cls, resources: Iterable[Resource], instances: Iterable[Instance], *, revision: int = 0,
              registry_version: int = 0, generation: int = 0, jwks: Mapping[str, Jwks] | None = None,
              mesh: MeshSettings | None = None) -> "Snapshot":
        return cls(ConfigIndex(resources, revision), EndpointIndex(instances, registry_version), generation,
                   jwks or {}, mesh or MeshSettings())

    def with_config(self, config: ConfigIndex, generation: int) -> "Snapshot":
        return replace(self, config=config, generation=generation)

    def with_endpoints(self, endpoints: EndpointIndex, generation: int) -> "Snapshot":
        return replace(self, endpoints=endpoints, generation=generation)

    def with_jwks(self, jwks: Mapping[str, Jwks], generation: int) -> "Snapshot":
        return replace(self, jwks=jwks, generation=generation)

    def outbound_mode(self, proxy: Proxy) -> str:
        """REGISTRY_ONLY or ALLOW_ANY: the proxy's Sidecar's outboundTrafficPolicy (workload > namespace >
        root namespace, the Sidecar that applies, as Istio), else the mesh default."""
        return self.config.sidecar_scope(proxy).outbound_mode or self.mesh.outbound_traffic_policy

    @property
    def services(self) -> dict[str, Service]:
        return self.config.services

    @property
    def resolved(self) -> Resolved:
        return self.config.resolved

    def endpoints_for(self, svc: Service, port: int, subset_labels: tuple[tuple[str, str], ...] = ()
                      ) -> tuple[Endpoint, ...]:
        """Endpoints of one service port (optionally one subset), healthy or not."""
        sp = svc.port(port)
        if sp is None:
            return ()
        out: list[Endpoint] = []
        if svc.static_endpoints:
            for se in svc.static_endpoints:
                if subset_labels and not labels_match(subset_labels, dict(se.labels)):
                    continue
                ep_port = dict(se.ports).get(sp.name) or sp.target_for()
                out.append(Endpoint(se.address, ep_port, se.labels, True, se.locality, "", se.weight or 1,
                                    dict(se.labels).get(TLS_MODE_LABEL, NO_TLS)))
        else:
            target = sp.target_for()
            for inst in self.endpoints.for_service(svc):
                if subset_labels and not labels_match(subset_labels, inst.label_dict):
                    continue
                if inst.ports and target not in inst.ports:
                    continue
                out.append(Endpoint(inst.address, inst.reachable_port(target), inst.labels, inst.healthy,
                                    inst.locality, inst.id, 1, endpoint_tls_mode(
                                        self.config, inst.sidecar, inst.namespace, inst.labels, target)))
        return tuple(out)

    def visible_services(self, proxy: Proxy) -> tuple[Service, ...]:
        return self.config.visible_services(proxy)

    def service_identities(self, svc: Service) -> tuple[tuple[str, str], ...]:
        """(namespace, service account) of the service's instances that have a sidecar: the identities its
        servers may present (secure naming). Sorted; empty when it has none (yet)."""
        return tuple(sorted({(i.namespace, i.service_account or "default")
                             for i in self.endpoints.for_service(svc) if i.sidecar}))

    def own_services(self, proxy: Proxy) -> tuple[Service, ...]:
        return self.config.own_services(proxy)

    def inbound_protocol(self, proxy: Proxy, container_port: int) -> str:
        """HTTP if any service selecting this proxy exposes the port as HTTP, else TCP."""
        for s in self.config.own_services(proxy):
            for p in s.ports:
                if p.target_for() == container_port and is_http(p.protocol):
                    return p.protocol
        return "TCP"
