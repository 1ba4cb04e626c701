"""The runner's copy of the control plane's services and instances, and what follows from it inside the
pods: hosts files (service names → VIPs) and each pod's service-VIP rules (plainroutes.py). Also the
structured reading of what proxies were sent (`eds_endpoints`), used to know when an endpoint change has
reached every caller.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

from . import plainroutes
from .netns import NetnsError
from .pods import API_ERRORS, Pod
from .protocols import ControlPlaneApi, PodNetwork
from .table import PodTable, VipTable

log = logging.getLogger("mizzen.local")

Endpoint = tuple[str, int]


def refresh_services(t: PodTable, api: ControlPlaneApi, net: PodNetwork) -> bool:
    """Read the services; rewrite the pods' hosts files when they changed. True if they did."""
    try:
        items = api.services()
    except API_ERRORS:
        return False
    items = sorted(items, key=lambda s: (s.get("namespace") or "", s.get("name") or "", s.get("hostname") or ""))
    with t.lock:
        if items == t.services:
            return False
        t.services = items
    if net.set_services(items):
        log.info("hosts files rewritten (%d services)", len(items))
    return True


def refresh_instances(t: PodTable, api: ControlPlaneApi) -> None:
    try:
        items = api.instances()
    except API_ERRORS:
        return
    with t.lock:
        t.instance_items = items
        t.registered = {str(i.get("id")) for i in items}


def vip_chain(t: PodTable, api: ControlPlaneApi | None = None, pod: Pod | None = None) -> list[str]:
    """The service-VIP rules as the table's services and instances make them, for a new `pod`: with a sidecar
    under REGISTRY_ONLY only the VIPs of services its Sidecar lets it see (asked of the control plane)."""
    table = plainroutes.vip_table(t.services, t.instance_items)
    if api is not None and pod is not None and pod.sidecar:
        scopes = _egress(api, [_group(pod)])
        if scopes is not None:
            table = _scoped(table, t.services, scopes.get(_group(pod)))
    return plainroutes.service_chain(table)


Group = tuple[str, tuple[tuple[str, str], ...]]  # (namespace, labels): pods that share a proxy view


def _group(pod: Pod) -> Group:
    return pod.namespace, tuple(sorted(pod.labels.items()))


def _egress(api: ControlPlaneApi, groups: list[Group]) -> dict[Group, dict[str, Any]] | None:
    """Each group's egress (`mode`, and `hosts` under REGISTRY_ONLY); None: the control plane did not answer."""
    if not groups:
        return {}
    try:
        items = api.egress([{"namespace": ns, "labels": dict(labels)} for ns, labels in groups])
        return {(str(i["namespace"]), tuple(sorted((i.get("labels") or {}).items()))): i for i in items}
    except API_ERRORS:
        return None


def _scoped(table: VipTable, services: list[dict[str, Any]], scope: dict[str, Any] | None
            ) -> VipTable:
    """Under REGISTRY_ONLY, Envoy's own connections may reach only the VIPs of services the proxy sees: a
    hidden service's VIP gets no DNAT (so not even a passthrough cluster gets there)."""
    if not scope or scope.get("mode") != "REGISTRY_ONLY":
        return table
    hosts = set(scope.get("hosts") or ())
    vips = {str(s.get("vip")) for s in services if s.get("hostname") in hosts and s.get("vip")}
    return {k: v for k, v in table.items() if k[0] in vips}


def sync_vip_rules(t: PodTable, api: ControlPlaneApi, net: PodNetwork, *, fetch: bool = False) -> None:
    """Point every pod's service VIPs at the current healthy endpoints (all connections of a sidecar-less pod,
    Envoy's passthrough ones in a pod with a sidecar — for a REGISTRY_ONLY proxy only the VIPs it may see);
    `fetch`: read services and instances first (before or after a replica change). Done only when the
    table or the proxies' egress changed since the last sync; a failure is retried on the next one."""
    if not net.routes_vips:
        return
    if fetch:
        refresh_services(t, api, net)
        refresh_instances(t, api)
    table = plainroutes.vip_table(t.services, t.instance_items)
    with t.lock:
        pods = [(p.name, _group(p) if p.sidecar else None) for p in t.pods]
    scopes = _egress(api, sorted({g for _, g in pods if g is not None}))
    if scopes is None:
        return  # the control plane did not answer: keep the rules, try again next time
    key = (table, tuple(sorted((g, repr(v)) for g, v in scopes.items())))
    with t.lock:
        if key == t.vip_table:
            return  # every pod has these (a new pod gets them when it is made)
        chains: dict[Group | None, list[str]] = {}
        failed = False
        for name, group in pods:
            if group not in chains:
                chains[group] = plainroutes.service_chain(
                    table if group is None else _scoped(table, t.services, scopes.get(group)))
            try:
                net.set_vip_rules(name, chains[group])
            except NetnsError as e:
                log.error("%s: %s", name, e)
                failed = True
        t.vip_table = None if failed else key


def deregister(t: PodTable, api: ControlPlaneApi, instance_id: str) -> None:
    """Take an instance out of the registry (best effort: a control plane that is down forgets nothing)."""
    with t.lock:
        t.static_registered.pop(instance_id, None)
    try:
        api.delete_instance(instance_id)
    except API_ERRORS:
        pass


def instance_healthy(api: ControlPlaneApi, pod: Pod) -> bool:
    if not pod.ports:
        return True
    try:
        items = api.instances()
    except API_ERRORS:
        return False
    return any(i.get("id") == pod.instance_id and i.get("healthy", True) for i in items)


# ------------------------------------------------------------------ what proxies were sent

def _f(d: Any, camel: str, snake: str) -> Any:
    return d.get(camel, d.get(snake)) if isinstance(d, dict) else None


def eds_endpoints(answer: Any) -> set[Endpoint]:
    """Every (address, port) in the ClusterLoadAssignments of `/api/v1/proxies/{id}/resources?type=EDS`
    (`{"resources": [{"name", "version", "resource": ClusterLoadAssignment as JSON}]}`), healthy or not."""
    out: set[Endpoint] = set()
    items = answer.get("resources") if isinstance(answer, dict) else None
    for item in items or []:
        cla = item.get("resource", item) if isinstance(item, dict) else None
        for group in (cla or {}).get("endpoints") or []:
            for lb in _f(group, "lbEndpoints", "lb_endpoints") or []:
                sa = _f((_f(lb, "endpoint", "endpoint") or {}).get("address") or {}, "socketAddress", "socket_address")
                if isinstance(sa, dict) and sa.get("address"):
                    port = _f(sa, "portValue", "port_value")
                    if port is not None:
                        out.add((str(sa["address"]), int(port)))
    return out


def proxy_pod(proxy_id: str) -> str:
    """`sidecar~10.244.0.3~reviews-v1-0.default~default.svc.cluster.local` -> `reviews-v1-0.default`."""
    parts = proxy_id.split("~")
    return parts[2] if len(parts) >= 4 else proxy_id


def proxies_eds(api: ControlPlaneApi, exclude: Iterable[Pod]) -> list[tuple[str, str, set[Endpoint]]] | None:
    """(id, EDS state, endpoints sent) of every connected proxy but those of the `exclude` pods; None: the
    control plane did not answer."""
    skip = {f"{p.name}.{p.namespace}" for p in exclude}
    try:
        out = []
        for pr in api.proxies():
            pid = str(pr.get("id"))
            if not pr.get("connected") or proxy_pod(pid) in skip:
                continue
            eds = (pr.get("types") or {}).get("EDS") or {}
            out.append((pid, str(eds.get("state")), eds_endpoints(api.proxy_resources(pid, "EDS"))))
        return out
    except API_ERRORS:
        return None
