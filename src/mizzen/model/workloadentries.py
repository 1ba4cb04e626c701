"""WorkloadEntries as endpoints: each becomes an `Instance` the endpoint index selects like a registered one
(a v1 Service's selector, a ServiceEntry's workloadSelector, in its namespace). Pure.

Id `<namespace>.we-<name>`, workload = its `app` label (else its name), ports = its port numbers (none: it
accepts any target port), healthy (a WorkloadEntry is configuration: withdraw it by deleting it), source
`workloadentry`. It has a sidecar — and gets mTLS when the mesh sends it — only when labelled
`security.istio.io/tlsMode: istio`, as Istio reads that label.

An entry on a unix domain socket (`unix:///path`, `unix://@abstract`) is an endpoint too: Envoy connects to
the socket (a pipe address) whatever the service's target port. An entry with a host name, or with no
address (only a `network`), is no endpoint: Mizzen's endpoints are addresses (a host name would need a DNS
cluster per endpoint) and it has one network; `mizzen analyze` reports them (MZ0110)."""
from __future__ import annotations

from typing import Iterable

from ..api.base import Resource
from ..api.workloadentry import address_kind
from .types import Instance, labels_tuple

SOURCE = "workloadentry"
TLS_MODE_LABEL = "security.istio.io/tlsMode"


def instance_of(r: Resource) -> Instance:
    spec = r.spec
    labels = dict(spec.labels or {})
    labels.update({k: v for k, v in r.metadata.labels.items() if k not in labels})
    return Instance(
        id=f"{r.namespace}.we-{r.name}", namespace=r.namespace, workload=labels.get("app") or r.name,
        address=spec.address, ports=tuple(sorted(set(spec.ports.values()))), labels=labels_tuple(labels),
        healthy=True, sidecar=labels.get(TLS_MODE_LABEL) == "istio", locality=spec.locality or "",
        service_account=spec.service_account or "default", source=SOURCE)


def instances_of(entries: Iterable[Resource]) -> list[Instance]:
    return [instance_of(r) for r in entries if r.kind == "WorkloadEntry" and is_endpoint(r)]


def is_endpoint(r: Resource) -> bool:
    """Does this WorkloadEntry become an endpoint (an IP address or a unix socket)?"""
    return address_kind(r.spec.address) in ("ip", "unix")
