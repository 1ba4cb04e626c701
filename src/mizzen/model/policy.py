"""DestinationRule traffic policy, resolved as Istio resolves it. Pure; no Envoy types here.

The effective policy of `outbound|<port>|<subset>|<host>` merges, field by field (each field replaced whole,
as Istio's MergeTrafficPolicy does), from lowest to highest precedence: the top-level trafficPolicy, its
portLevelSettings for the port, the subset's trafficPolicy, the subset's portLevelSettings for the port.

Locality load balancing is resolved here too: which priority an endpoint has for a caller (failover) and
which weight each locality gets (`distribute`). `translate/endpoints.py` turns the answers into a CLA.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from ..api.base import Resource
from ..api.client_tls import ClientTLSSettings
from ..api.destination_rule import (ConnectionPoolSettings, ConsistentHashLB, HealthCheck,
                                    LoadBalancerSettings, LocalityLbSetting, OutlierDetection, RetryBudget)

_FIELDS = ("load_balancer", "connection_pool", "outlier_detection", "tls", "health_check", "retry_budget")


@dataclass(frozen=True)
class Policy:
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    health_check: HealthCheck | None = None
    retry_budget: RetryBudget | None = None

    @property
    def consistent_hash(self) -> ConsistentHashLB | None:
        return self.load_balancer.consistent_hash if self.load_balancer else None

    @property
    def locality(self) -> LocalityLbSetting | None:
        return self.load_balancer.locality_lb_setting if self.load_balancer else None

    @property
    def locality_failover(self) -> bool:
        """Istio: locality failover (priorities by locality) is on when outlier detection is set, unless
        localityLbSetting.enabled is false or distribute is used instead."""
        loc = self.locality
        if loc is not None and (loc.enabled is False or loc.distribute):
            return False
        return self.outlier_detection is not None

    @property
    def locality_distribute(self) -> bool:
        loc = self.locality
        return bool(loc and loc.enabled is not False and loc.distribute)

    @property
    def locality_sensitive(self) -> bool:
        """True if the endpoints a caller gets depend on the caller's locality."""
        return self.locality_failover or self.locality_distribute


def _layers(tp, port: int) -> list:
    if tp is None:
        return []
    out = [tp]
    for pl in tp.port_level_settings:
        if pl.port is not None and pl.port.number == port:
            out.append(pl)
    return out


def effective(dr: Resource | None, subset: str | None, port: int) -> Policy:
    """The merged policy of one (subset, port) of the DestinationRule `dr` (None: no rule, empty policy)."""
    if dr is None:
        return Policy()
    layers = _layers(dr.spec.traffic_policy, port)
    if subset:
        for s in dr.spec.subsets:
            if s.name == subset:
                layers += _layers(s.traffic_policy, port)
    vals: dict[str, Any] = {}
    for layer in layers:
        for f in _FIELDS:
            v = getattr(layer, f, None)
            if v is not None:
                vals[f] = v
    return Policy(**vals)


# ------------------------------------------------------------------------------------------ locality

_LOCALITY_KEYS = {"topology.kubernetes.io/region": 0, "topology.kubernetes.io/zone": 1,
                  "topology.istio.io/subzone": 2}


def _loc(text: str) -> tuple[str, str, str]:
    p = (text.split("/") + ["", "", ""])[:3]
    return p[0], p[1], p[2]


def _loc_match(pattern: str, loc: str) -> bool:
    """Istio locality patterns: 'region/zone/subzone' with '*' for any trailing part."""
    pat = pattern.split("/")
    have = _loc(loc)
    for i, part in enumerate(pat[:3]):
        if part == "*":
            return True
        if part != have[i]:
            return False
    return True


def locality_priorities(pol: Policy, proxy_locality: str, proxy_labels: dict[str, str], endpoints: Iterable
                        ) -> dict:
    """Istio's locality failover: priority 0 = same region/zone/subzone as the caller, 1 = same zone,
    2 = same region, 3 = the `failover.to` region of the caller's region, 4 = anything else; with
    `failoverPriority`, the number of leading labels that differ. Compacted to 0..n (Envoy needs that).
    `endpoints` are `model.snapshot.Endpoint`s (anything with `locality` and `labels`)."""
    loc = pol.locality
    eps = list(endpoints)
    raw: dict = {}
    if loc is not None and loc.failover_priority:
        keys = loc.failover_priority
        mine = {k: _value(k, proxy_locality, proxy_labels) for k in keys}
        for ep in eps:
            theirs = {k: _value(k, ep.locality, dict(ep.labels)) for k in keys}
            n = 0
            for k in keys:
                if mine[k] is None or mine[k] != theirs[k]:
                    break
                n += 1
            raw[ep] = len(keys) - n
    else:
        region, zone, sub = _loc(proxy_locality)
        to = {f.from_: f.to for f in (loc.failover if loc else [])}
        for ep in eps:
            r, z, s = _loc(ep.locality)
            if r == region:
                raw[ep] = 0 if (z == zone and s == sub) else (1 if z == zone else 2)
            elif region in to and to[region] == r:
                raw[ep] = 3
            else:
                raw[ep] = 4
    order = sorted(set(raw.values()))
    return {ep: order.index(p) for ep, p in raw.items()}


def _value(key: str, locality: str, labels: dict[str, str]) -> str | None:
    if key in _LOCALITY_KEYS:
        i = _LOCALITY_KEYS[key]
        parts = _loc(locality)
        return "/".join(parts[: i + 1]) if parts[i] else None
    return labels.get(key)


def locality_weights(pol: Policy, proxy_locality: str, localities: dict[str, int]) -> dict[str, int] | None:
    """Istio's `distribute`: for the first rule whose `from` matches the caller, each `to` weight is split
    among the localities it matches by their endpoint counts; localities no `to` matches get no traffic
    (they are dropped). None = no rule applies to this caller."""
    loc = pol.locality
    if loc is None:
        return None
    for rule in loc.distribute:
        if not _loc_match(rule.from_, proxy_locality):
            continue
        out: dict[str, float] = {}
        for pattern, w in rule.to.items():
            matched = {l: n for l, n in localities.items() if _loc_match(pattern, l) and l not in out}
            total = sum(matched.values())
            for l, n in matched.items():
                out[l] = w * n / total if total else 0
        return {l: max(1, round(w * 10)) for l, w in out.items() if w > 0}
    return None
