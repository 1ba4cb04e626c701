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
from . import checks, gateway, mtls, proxyless, ratelimit, security, virtualservice  # noqa: F401  (they register their analyzers)
from .base import ANALYZERS, ERROR, INFO, WARNING, Context, Message, Workload, sort_messages

__all__ = ["ANALYZERS", "ERROR", "INFO", "WARNING", "Message", "Workload", "analyze"]


def _default_ingress() -> tuple[Resource, Workload]:
    """istioctl analyzes Gateways against a default ingress gateway (a Pod labelled istio=ingressgateway and
    its Service in istio-system) when the input has none: so does Mizzen, to judge Gateways alike."""
    from ..api.load import parse_document

    svc, _, _ = parse_document({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
        "spec": {"selector": {"istio": "ingressgateway"}, "ports": [
            {"name": "http2", "port": 80}, {"name": "https", "port": 443}, {"name": "tcp", "port": 31400},
            {"name": "tls", "port": 15443}]}})
    return svc, Workload("Pod", "istio-system", "istio-ingressgateway-dummypod", (("istio", "ingressgateway"),))


def analyze(resources: Iterable[Resource], workloads: Iterable[Workload] = (),
            only: Iterable[str] | None = None) -> list[Message]:
    """Every analyzer (or those named in `only`) over the given config; `workloads` adds what runs (e.g.
    Pods of Kubernetes manifests)."""
    resources, workloads = list(resources), list(workloads)
    if not any(w.label_dict.get("istio") == "ingressgateway" for w in workloads) and \
            not any(r.kind == "Workload" and r.metadata.labels.get("istio") == "ingressgateway" for r in resources):
        svc, pod = _default_ingress()
        if svc is not None and svc.key not in {r.key for r in resources}:
            resources.append(svc)
        workloads.append(pod)
    ctx = Context(resources, workloads)
    names = set(only) if only is not None else None
    out: list[Message] = []
    for a in ANALYZERS:
        if names is None or a.__name__ in names:
            out.extend(a(ctx))
    return sort_messages(out)
