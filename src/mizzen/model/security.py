"""Mutual TLS, resolved as Istio resolves it: PeerAuthentication modes, auto-mTLS endpoint modes, identities.
Pure.

    mtls = peer_mtls(config, namespace, labels)   # MtlsPolicy of a workload: .mode, .for_port(p), .sources
    namespace_mode(config, namespace)             # the mesh + namespace policy only (a service's default)
    selects(pa, namespace, labels)                # does a PeerAuthentication apply to a workload?

PeerAuthentication (Istio's `ComposePeerAuthentication`): at each level the oldest policy wins — mesh-wide
(root namespace, no selector), namespace-wide (no selector), workload (a selector matching the workload's
labels, in its namespace; a root-namespace policy with a selector is for root-namespace workloads only);
precedence workload > namespace > mesh; UNSET inherits from the level above; nothing at all = PERMISSIVE.
`portLevelMtls` (workload level only) overrides the mode for that container port; UNSET there inherits the
workload's effective mode.

Auto mTLS (Istio's cluster builder): a caller's sidecar originates Istio mTLS towards an endpoint when the
endpoint has a sidecar and its own PeerAuthentication does not DISABLE the port (`endpoint_tls_mode`), and
plaintext otherwise; a service whose namespace-level mode is DISABLE gets no mTLS at all (Istio's
`BestEffortInferServiceMTLSMode`), nor does a mesh-external one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from ..api.base import Resource, ResourceKey
from .labels import ROOT_NAMESPACE, labels_match
from .types import Proxy

DISABLE, PERMISSIVE, STRICT, UNSET = "DISABLE", "PERMISSIVE", "STRICT", "UNSET"
PEER_AUTHENTICATION = "PeerAuthentication"
TLS_MODE_LABEL = "security.istio.io/tlsMode"  # endpoint label / EDS metadata key `tlsMode`
ISTIO_TLS, NO_TLS = "istio", "disabled"


@dataclass(frozen=True)
class MtlsPolicy:
    """The effective PeerAuthentication of one workload."""

    mode: str = PERMISSIVE  # DISABLE | PERMISSIVE | STRICT
    per_port: tuple[tuple[int, str], ...] = ()  # container port -> mode
    sources: tuple[ResourceKey, ...] = ()  # the policies that decided it (mesh, namespace, workload)

    def for_port(self, port: int | None) -> str:
        if port is not None:
            for p, m in self.per_port:
                if p == port:
                    return m
        return self.mode

    @property
    def explicit(self) -> bool:
        """Was any PeerAuthentication involved (else: the PERMISSIVE default)?"""
        return bool(self.sources)


DEFAULT = MtlsPolicy()


def selects(pa: Resource, namespace: str, labels: dict[str, str]) -> bool:
    """Does PeerAuthentication `pa` apply to a workload of `namespace` with `labels`?"""
    sel = pa.spec.labels
    if not sel:
        return pa.namespace in (ROOT_NAMESPACE, namespace)
    return pa.namespace == namespace and labels_match(sel, labels)


def applies_to_proxy(pa: Resource, proxy: Proxy) -> bool:
    """For push scoping (`model.dependencies.PROXY_KINDS`): the proxies whose inbound side it may decide."""
    return selects(pa, proxy.namespace, proxy.label_dict)


def _levels(pas: Iterable[Resource], namespace: str, labels: dict[str, str]
            ) -> tuple[Resource | None, Resource | None, Resource | None]:
    """(mesh, namespace, workload) policies of a workload; `pas` oldest first, so the first found wins."""
    mesh = ns = wl = None
    for pa in pas:
        if not pa.spec.labels:
            if pa.namespace == ROOT_NAMESPACE:
                mesh = mesh or pa
            if pa.namespace == namespace and namespace != ROOT_NAMESPACE:
                ns = ns or pa
        elif pa.namespace == namespace and labels_match(pa.spec.labels, labels):
            wl = wl or pa
    return mesh, ns, wl


def compose(pas: Iterable[Resource], namespace: str, labels: dict[str, str]) -> MtlsPolicy:
    """The effective mTLS policy of a workload from the PeerAuthentications (oldest first)."""
    mesh, ns, wl = _levels(pas, namespace, labels)
    mode = PERMISSIVE
    for pa in (mesh, ns, wl):
        if pa is not None and pa.spec.mode != UNSET:
            mode = pa.spec.mode
    per_port: tuple[tuple[int, str], ...] = ()
    if wl is not None:
        per_port = tuple(sorted((p, mode if m.mode == UNSET else m.mode) for p, m in wl.spec.port_level_mtls.items()))
    return MtlsPolicy(mode, per_port, tuple(pa.key for pa in (mesh, ns, wl) if pa is not None))


def peer_mtls(config: Any, namespace: str, labels: dict[str, str] | tuple) -> MtlsPolicy:
    """`compose` over a ConfigIndex's PeerAuthentications, memoized per (namespace, labels)."""
    label_dict = dict(labels)
    pas = config.by_kind.get(PEER_AUTHENTICATION, ())
    if not pas:
        return DEFAULT
    key = ("peer_mtls", namespace, tuple(sorted(label_dict.items())))
    return config.memoized(key, lambda: compose(pas, namespace, label_dict))


def namespace_mode(config: Any, namespace: str) -> str:
    """The mode of `namespace` from the mesh- and namespace-wide policies only (what Istio infers for a
    service when deciding auto mTLS at the cluster level)."""
    pas = config.by_kind.get(PEER_AUTHENTICATION, ())
    mesh, ns, _ = _levels([p for p in pas if not p.spec.labels], namespace, {})
    mode = PERMISSIVE
    for pa in (mesh, ns):
        if pa is not None and pa.spec.mode != UNSET:
            mode = pa.spec.mode
    return mode


def endpoint_tls_mode(config: Any, sidecar: bool, namespace: str, labels: dict[str, str] | tuple,
                      port: int) -> str:
    """`istio` when a caller's sidecar should originate Istio mTLS to this endpoint (it has a sidecar and its
    PeerAuthentication does not DISABLE the port), else `disabled` (plaintext)."""
    if not sidecar:
        return NO_TLS
    return NO_TLS if peer_mtls(config, namespace, labels).for_port(port) == DISABLE else ISTIO_TLS


def spiffe_uri(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account or 'default'}"


def istio_sni(port: int, subset: str | None, host: str) -> str:
    """The SNI Istio's sidecars send with ISTIO_MUTUAL: `outbound_.<port>_.<subset>_.<host>`."""
    return f"outbound_.{port}_.{subset or ''}_.{host}"


__all__ = ["DISABLE", "PERMISSIVE", "STRICT", "UNSET", "MtlsPolicy", "compose", "peer_mtls", "namespace_mode",
           "endpoint_tls_mode", "selects", "applies_to_proxy", "spiffe_uri", "istio_sni", "ISTIO_TLS", "NO_TLS"]
