"""`mizzen analyze` for proxyless gRPC clients. PURE.

- MZ0120 (Warning): a Workload annotated `mizzen.dev/proxyless: "true"` (its pods call `xds:///` targets with
  grpcio's own xDS client, no sidecar) sees a VirtualService or DestinationRule field that gRPC does not
  implement: the control plane leaves it out for that client (`translate/proxyless.py` records each one as
  it translates, so this list is exactly what is dropped). Reported once per field, naming the Workload.
- MZ0121 (Error): a proxyless Workload (or one annotated `mizzen.dev/sdk: "true"`, a `mizzen.sdk` caller) sees
  a service whose workloads' PeerAuthentication is STRICT on the port: both call in plaintext, so every
  call is refused.
"""
from __future__ import annotations

from typing import Iterable

from ..api.core import sidecar_enabled
from ..model.labels import labels_match
from ..model.security import PEER_AUTHENTICATION, STRICT, compose
from ..model.services import is_http
from ..model.snapshot import Snapshot
from ..model.types import Proxy, labels_tuple
from ..translate.proxyless import ANNOTATION, PROXYLESS, gaps
from .base import ERROR, WARNING, Context, Message, analyzer

SDK_ANNOTATION = "mizzen.dev/sdk"


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


@analyzer
def plaintext_callers_to_strict(ctx: Context) -> Iterable[Message]:
    callers = [(w, "proxyless gRPC") for w in proxyless_workloads(ctx)] + \
        [(w, "mizzen.sdk") for w in ctx.kind("Workload")
         if str(w.metadata.annotations.get(SDK_ANNOTATION, "")).lower() == "true"]
    if not callers:
        return
    snap = Snapshot.build(ctx.resources, ())
    pas = snap.config.by_kind.get(PEER_AUTHENTICATION, ())
    if not pas:
        return
    ns_labels = {r.name: r.metadata.labels for r in ctx.kind("Namespace")}
    servers = [w for w in ctx.kind("Workload") if sidecar_enabled(w.spec, ns_labels.get(w.namespace))]
    for w, what in callers:
        proxy = Proxy(id=f"{PROXYLESS}~analyze~{w.name}.{w.namespace}", namespace=w.namespace, workload=w.name,
                      labels=labels_tuple(w.metadata.labels), kind=PROXYLESS)
        for svc in snap.visible_services(proxy):
            for sw in servers:
                if sw.namespace != svc.namespace or not svc.selector or \
                        not labels_match(svc.selector, sw.metadata.labels):
                    continue
                mtls = compose(pas, sw.namespace, sw.metadata.labels)
                strict = [sp.port for sp in svc.ports if is_http(sp.protocol) and
                          mtls.for_port(sp.target_for()) == STRICT]
                if strict:
                    src = str(mtls.sources[-1]) if mtls.sources else "PeerAuthentication"
                    yield Message("MZ0121", ERROR, f"Workload {w.namespace}/{w.name}",
                                  f"{what} clients call {svc.hostname} (ports {', '.join(map(str, strict))}) in "
                                  f"plaintext, but Workload {sw.namespace}/{sw.name} requires mTLS ({src}): every "
                                  "call is refused", hint="make the port PERMISSIVE for these callers, or give the "
                                  "caller a sidecar", path="metadata.annotations")
                    break
