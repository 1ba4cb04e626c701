"""WorkloadEntries as endpoints: each becomes an `Instance` the endpoint index selects like a registered one
(a v1 Service's selector, a ServiceEntry's workloadSelector, in its namespace). Pure.

Id `<namespace>.we-<name>`, workload = its `app` label (else its name), ports = its port numbers (none: it
accepts any target port), healthy (a WorkloadEntry is configuration: withdraw it by deleting it), source
`workloadentry`. It has a sidecar — and gets mTLS when the mesh sends it — only when labelled
`security.istio.io/tlsMode: istio`, as Istio reads that label."""
from __future__ import annotations

from typing import Iterable

from ..api.base import Resource
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
    return [instance_of(r) for r in entries if r.kind == "WorkloadEntry" and r.spec.address]
