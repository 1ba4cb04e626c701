"""`mizzen analyze` for proxyless gRPC clients. PURE.

- MZ0120 (Warning): a Workload annotated `mizzen.dev/proxyless: "true"` (its pods call `xds:///` targets with
  grpcio's own xDS client, no sidecar) sees a VirtualService or DestinationRule field that gRPC does not
  implement: the control plane leaves it out for that client (`translate/proxyless.py` records each one as
  it translates, so this list is exactly what is dropped). Reported once per field, naming the Workload.
"""
from __future__ import annotations

from typing import Iterable

from ..model.snapshot import Snapshot
from ..model.types import Proxy, labels_tuple
from ..translate.proxyless import ANNOTATION, PROXYLESS, gaps
from .base import WARNING, Context, Message, analyzer


def proxyless_workloads(ctx: Context) -> list:
    return [w for w in ctx.kind("Workload") if str(w.metadata.annotations.get(ANNOTATION, "")).lower() == "true"]


@analyzer
def proxyless_unsupported(ctx: Context) -> Iterable[Message]:
    workloads = proxyless_workloads(ctx)
    if not workloads:
        return
    snap = Snapshot.build(ctx.resources, ())
    for w in workloads:
        proxy = Proxy(id=f"{PROXYLESS}~analyze~{w.name}.{w.namespace}", namespace=w.namespace, workload=w.name,
                      labels=labels_tuple(w.metadata.labels), kind=PROXYLESS,
                      locality=getattr(w.spec, "locality", None) or "")
        for g in gaps(snap, proxy):
            yield Message("MZ0120", WARNING, g.resource,
                          f"proxyless gRPC clients of Workload {w.namespace}/{w.name} calling {g.host}: {g.message}",
                          hint="give that client a sidecar, or keep this rule to what gRPC implements "
                               "(docs/proxyless.md)", path=g.path)
