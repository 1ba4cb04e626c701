"""`mizzen mesh bypass on|off [--namespace NS]`: a platform team's big red switch.

The switch is stored config, so every runner (one per host) and every control plane sees it: a v1 Namespace
label `mizzen.dev/bypass: "true"|"false"` on the namespace, or, mesh-wide, on the root namespace
`istio-system` (a namespace's own label wins; `mizzen mesh bypass on|off` without `--namespace` clears the
namespaces' own labels, so the mesh-wide switch covers everything).

With bypass on, the runners take the capture rules out of the pods of that namespace: apps reach each
other directly — names resolve to service VIPs as before, and each pod's kube-proxy-style rules (plainroutes.py)
send a VIP's connections straight to a healthy instance's address from the registry; clients of the Consul
API get the same addresses. The sidecars keep running (and keep their config), idle. With bypass off, capture
comes back and traffic flows through the sidecars again. Nothing restarts.

Order: every pod that switches passes through a middle state in which what it *sends* goes direct while what
*arrives* is still captured (netns.inbound_only_rules): going on, all pods first stop capturing what they send,
then what they receive; going off, all first capture what they receive again, then what they send. So a
sidecar never sends to a peer that no longer captures, and a plain connection always meets either an app or
a sidecar that accepts it (PERMISSIVE). Connections already open keep their path (the kernel's connection
tracking keeps their NAT); new connections take the new one. Needs netns mode (loopback-mode apps are
pointed at their sidecar by HTTP_PROXY, which cannot change under a running process).
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

from .pods import API_ERRORS
from .protocols import ControlPlaneApi
from .table import PodTable

log = logging.getLogger("mizzen.local")

BYPASS_LABEL = "mizzen.dev/bypass"
ROOT_NAMESPACE = "istio-system"


def _flag(labels: dict[str, str] | None) -> bool | None:
    v = (labels or {}).get(BYPASS_LABEL)
    if v is None:
        return None
    return v.strip().lower() in ("true", "on", "1", "yes")


def namespace_labels(items: Iterable[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Namespace name -> labels, from the REST API's Namespace items."""
    return {str((it.get("metadata") or {}).get("name")): dict((it.get("metadata") or {}).get("labels") or {})
            for it in items}


def is_bypassed(namespace: str, labels: dict[str, dict[str, str]]) -> bool:
    own = _flag(labels.get(namespace))
    if own is not None:
        return own
    return bool(_flag(labels.get(ROOT_NAMESPACE)))


def switch_documents(items: Iterable[dict[str, Any]], on: bool, namespace: str | None) -> list[dict[str, Any]]:
    """The Namespace documents to apply (in one apply) for `mizzen mesh bypass on|off [--namespace NS]`."""
    labels = namespace_labels(items)
    value = "true" if on else "false"

    def doc(name: str, lbls: dict[str, str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": lbls}}

    if namespace is not None:
        return [doc(namespace, {**labels.get(namespace, {}), BYPASS_LABEL: value})]
    out = [doc(ROOT_NAMESPACE, {**labels.get(ROOT_NAMESPACE, {}), BYPASS_LABEL: value})]
    for name, lbls in sorted(labels.items()):
        if name != ROOT_NAMESPACE and BYPASS_LABEL in lbls:
            out.append(doc(name, {k: v for k, v in lbls.items() if k != BYPASS_LABEL}))
    return out


def sync(t: PodTable, api: ControlPlaneApi, net: Any) -> list[str]:
    """Bring every sidecar pod of this runner to its namespace's bypass state (two phases, see above).
    Returns the pods switched."""
    if not getattr(net, "supports_bypass", False):
        return []
    try:
        labels = namespace_labels(api.list_resources("Namespace"))
    except API_ERRORS:
        return []
    with t.lock:
        pods = [p for p in t.pods if p.sidecar and not p.stopping and p.netns]
    want = {p.name: "on" if is_bypassed(p.namespace, labels) else "off" for p in pods}
    moving = [p for p in pods if p.bypass != want[p.name]]
    if not moving:
        return []
    for p in moving:  # phase 1: what they send goes direct, what arrives is still captured
        if p.bypass != "outbound":
            net.set_bypass(p, "outbound")
    for p in moving:  # phase 2: the target
        net.set_bypass(p, want[p.name])
    by_state: dict[str, list[str]] = {}
    for p in moving:
        by_state.setdefault(want[p.name], []).append(p.name)
    for state, names in sorted(by_state.items()):
        log.info("mesh bypass %s: %s", state, ", ".join(names))
    return [p.name for p in moving]
