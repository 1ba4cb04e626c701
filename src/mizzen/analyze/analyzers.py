"""`mizzen analyze`: find config that is valid but will not do what its author meant. PURE.

Codes and wording follow Istio's (`istioctl analyze`, pkg/config/analysis) where Istio has an analyzer that
makes sense for Mizzen; Mizzen's own checks use `MZ01xx`. Each message carries a fix hint. Istio's
Kubernetes-only analyzers (sidecar injection, images, webhooks, annotations, deployments' UIDs, external
control planes, Gateway API, multicluster, conditions) have no counterpart: Mizzen runs no Kubernetes
(docs/istio-fidelity.md lists them).
"""
from __future__ import annotations

from typing import Iterable

from ..api.base import Resource
from . import checks, virtualservice  # noqa: F401  (they register their analyzers)
from .base import ANALYZERS, ERROR, INFO, WARNING, Context, Message, Workload, sort_messages

__all__ = ["ANALYZERS", "ERROR", "INFO", "WARNING", "Message", "Workload", "analyze"]


def analyze(resources: Iterable[Resource], workloads: Iterable[Workload] = ()) -> list[Message]:
    """Every analyzer over the given config; `workloads` adds what runs (e.g. Pods of Kubernetes manifests)."""
    ctx = Context(list(resources), list(workloads))
    out: list[Message] = []
    for a in ANALYZERS:
        out.extend(a(ctx))
    return sort_messages(out)
