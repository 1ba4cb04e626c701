"""`mizzen analyze` for mutual TLS: config that Istio accepts but whose traffic fails or is not protected. PURE.

- IST0113 MTLSPolicyConflict (Error): a DestinationRule's `tls` and the PeerAuthentication of the workloads
  behind its host disagree on a port: plaintext (DISABLE, or SIMPLE/MUTUAL with other certificates) towards a
  STRICT workload — every connection is refused —, or ISTIO_MUTUAL towards a workload that DISABLEs mTLS or
  has no sidecar — every handshake fails. (Istio's message, with PeerAuthentication as the policy.)
- IST0127 NoMatchingWorkloadsFound (Warning): a PeerAuthentication selector that matches no Workload.
(IST0128/IST0129, a DestinationRule that does not verify its server, are in analyze/checks.py.)
- MZ0105 (Warning): a STRICT PeerAuthentication selecting a Workload that runs without a sidecar: nothing
  enforces it, the app is reached in plaintext.
"""
from __future__ import annotations

from typing import Iterable

from ..api.base import Resource
from ..api.core import sidecar_enabled
from ..model.labels import labels_match
from ..model.security import DISABLE, PEER_AUTHENTICATION, STRICT, compose
from ..model.snapshot import ConfigIndex
from .base import ERROR, WARNING, Context, Message, analyzer


def _ref(r: Resource) -> str:
    return f"{r.kind} {r.namespace}/{r.name}"


def _tls_layers(dr: Resource) -> Iterable[tuple[str, object, int | None, str | None]]:
    """(field path, ClientTLSSettings, port or None, subset or None) of every `tls` in a DestinationRule."""
    tp = dr.spec.traffic_policy
    if tp is not None:
        if tp.tls is not None:
            yield "spec.trafficPolicy.tls", tp.tls, None, None
        for i, pl in enumerate(tp.port_level_settings):
            if pl.tls is not None:
                yield f"spec.trafficPolicy.portLevelSettings[{i}].tls", pl.tls, pl.port.number, None
    for j, s in enumerate(dr.spec.subsets):
        stp = s.traffic_policy
        if stp is None:
            continue
        if stp.tls is not None:
            yield f"spec.subsets[{j}].trafficPolicy.tls", stp.tls, None, s.name
        for i, pl in enumerate(stp.port_level_settings):
            if pl.tls is not None:
                yield f"spec.subsets[{j}].trafficPolicy.portLevelSettings[{i}].tls", pl.tls, pl.port.number, s.name


def _workloads(idx: ConfigIndex) -> list[tuple[Resource, bool]]:
    """Every Workload with whether it runs with a sidecar (its field, else its Namespace's label)."""
    ns_labels = {r.name: r.metadata.labels for r in idx.by_kind.get("Namespace", ())}
    return [(w, sidecar_enabled(w.spec, ns_labels.get(w.namespace))) for w in idx.by_kind.get("Workload", ())]


@analyzer
def mtls_conflicts(ctx: Context) -> Iterable[Message]:
    idx = ConfigIndex(ctx.resources)
    pas = idx.by_kind.get(PEER_AUTHENTICATION, ())
    workloads = _workloads(idx)
    yield from _dr_conflicts(idx, pas, workloads)
    yield from _selectors(pas, workloads)


def _dr_conflicts(idx: ConfigIndex, pas: tuple[Resource, ...], workloads) -> Iterable[Message]:
    for dr in idx.by_kind.get("DestinationRule", ()):
        host = idx.resolve(dr.spec.host, dr.namespace)
        svc = idx.services.get(host)
        if svc is None or not svc.selector:
            continue
        subsets = {s.name: s.labels for s in dr.spec.subsets}
        for path, tls, port, subset in _tls_layers(dr):
            ports = [p for p in svc.ports if port is None or p.port == port]
            for w, sidecar in workloads:
                labels = w.metadata.labels
                if w.namespace != svc.namespace or not labels_match(svc.selector, labels):
                    continue
                if subset is not None and not labels_match(subsets.get(subset, {}), labels):
                    continue
                mtls = compose(pas, w.namespace, labels)
                for p in ports:
                    mode = mtls.for_port(p.target_for()) if sidecar else "no sidecar"
                    want = tls.mode == "ISTIO_MUTUAL"
                    if (not want and mode == STRICT) or (want and mode in (DISABLE, "no sidecar")):
                        policy = str(mtls.sources[-1]).split("/", 1)[1] if mtls.sources and sidecar else \
                            f"Workload {w.namespace}/{w.name}"
                        yield Message(
                            "IST0113", ERROR, _ref(dr),
                            f"A DestinationRule and Policy are in conflict with regards to mTLS for host "
                            f"{host}:{p.port}. The DestinationRule \"{dr.namespace}/{dr.name}\" specifies that mTLS "
                            f"must be {str(want).lower()} but the Policy object \"{policy}\" specifies "
                            f"{'Plaintext' if mode in (DISABLE, 'no sidecar') else mode} (workload {w.name})",
                            "use tls.mode ISTIO_MUTUAL (or drop tls: auto mTLS does it) towards STRICT workloads"
                            if not want else "drop tls (auto mTLS sends plaintext where mTLS is off) or enable "
                            "mTLS on the workload", path)
                        break


def _selectors(pas: tuple[Resource, ...], workloads) -> Iterable[Message]:
    if not workloads:
        return  # no Workloads known (files without them): nothing to match selectors against
    for pa in pas:
        sel = pa.spec.labels
        if not sel:
            continue
        chosen = [(w, sc) for w, sc in workloads if w.namespace == pa.namespace and labels_match(sel, w.metadata.labels)]
        if not chosen:
            shown = ",".join(f"{k}={v}" for k, v in sorted(sel.items()))
            yield Message("IST0127", WARNING, _ref(pa), f"No matching workloads for this resource with the following "
                          f"labels: {shown}", "fix spec.selector.matchLabels (or the Workload's labels)",
                          "spec.selector.matchLabels")
            continue
        if pa.spec.mode == STRICT or any(m.mode == STRICT for m in pa.spec.port_level_mtls.values()):
            for w, sc in chosen:
                if not sc:
                    yield Message("MZ0105", WARNING, _ref(pa), f"STRICT mTLS selects Workload {w.name}, which runs "
                                  "without a sidecar: nothing enforces it, callers reach the app in plaintext",
                                  "run the workload with a sidecar (spec.sidecar: true)", "spec.mtls.mode")
