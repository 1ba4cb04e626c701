"""mTLS in the translator: what a proxy without a certificate gets, and what changes when identities do."""
from __future__ import annotations

from mizzen.api import load_text
from mizzen.model import Instance, Proxy, Snapshot
from mizzen.model.dependencies import diff
from mizzen.model.types import CLUSTER, ENDPOINT, LISTENER
from mizzen.translate import Renderer
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

SVC = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 8080, name: http}]}
"""
STRICT = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec: {mtls: {mode: STRICT}}
"""


def resources(*docs: str):
    res = load_text("---\n".join(docs), file="in.yaml").resources
    return [r.with_revision(i + 1) for i, r in enumerate(res)]


def web(i: int, sa: str = "web", sidecar: bool = True) -> Instance:
    return Instance(f"default.web-{i}", "default", "web", f"10.244.0.{i + 2}", (8080,), (("app", "web"),),
                    service_account=sa, sidecar=sidecar)


def proxy(td: str = "cluster.local") -> Proxy:
    return Proxy(id="p", namespace="default", labels=(("app", "web"),), ports=(8080,), service_account="web",
                 trust_domain=td)


def inbound(view) -> listener_pb2.Listener:
    return listener_pb2.Listener.FromString(view[LISTENER]["virtualInbound"].payload)


def sans(view, name="outbound|8080||web.default.svc.cluster.local") -> list[str]:
    c = cluster_pb2.Cluster.FromString(view[CLUSTER][name].payload)
    ctx = tls_pb2.UpstreamTlsContext()
    c.transport_socket_matches[0].transport_socket.typed_config.Unpack(ctx)
    vc = ctx.common_tls_context.combined_validation_context.default_validation_context
    return [m.matcher.exact for m in vc.match_typed_subject_alt_names]


def test_strict_without_a_certificate_is_closed_not_open():
    view = Renderer(Snapshot.build(resources(SVC, STRICT), [web(0)])).resources_for(proxy(td=""))
    lst = inbound(view)
    chain = next(fc for fc in lst.filter_chains if fc.filter_chain_match.destination_port.value == 8080)
    assert not chain.HasField("transport_socket") and b"BlackHoleCluster" in chain.filters[0].typed_config.value
    assert b"BlackHoleCluster" in lst.default_filter_chain.filters[0].typed_config.value
    # and no TLS config at all (it has no sds-grpc cluster to get secrets from)
    assert all(b"sds-grpc" not in r.payload for t in view.values() for r in t.values())


def test_permissive_with_a_certificate_has_both_chains_and_the_tls_inspector():
    lst = inbound(Renderer(Snapshot.build(resources(SVC), [web(0)])).resources_for(proxy()))
    assert [f.name for f in lst.listener_filters] == ["envoy.filters.listener.original_dst",
                                                      "envoy.filters.listener.tls_inspector"]
    names = [fc.name for fc in lst.filter_chains]
    assert names == ["inbound|8080||mtls", "inbound|8080||"]
    assert lst.filter_chains[0].filter_chain_match.transport_protocol == "tls"
    assert not lst.filter_chains[1].HasField("transport_socket")


def test_secure_naming_follows_the_service_accounts_of_its_instances():
    """A new replica with another service account: an endpoint-only change re-renders the cluster's SANs."""
    old = Snapshot.build(resources(SVC), [web(0)])
    r1 = Renderer(old)
    v1 = r1.resources_for(proxy())
    assert sans(v1) == ["spiffe://cluster.local/ns/default/sa/web"]
    new = old.with_endpoints(Snapshot.build([], [web(0), web(1, "web-canary")]).endpoints, 2)
    v2 = Renderer(new, r1, diff(old, new)).resources_for(proxy())
    assert sans(v2) == ["spiffe://cluster.local/ns/default/sa/web", "spiffe://cluster.local/ns/default/sa/web-canary"]
    # a sidecar-less replica has no identity to add, and gets no tlsMode (plaintext from callers)
    new2 = old.with_endpoints(Snapshot.build([], [web(0), web(1, "legacy", sidecar=False)]).endpoints, 3)
    v3 = Renderer(new2, r1, diff(old, new2)).resources_for(proxy())
    assert sans(v3) == ["spiffe://cluster.local/ns/default/sa/web"]
    cla = v3[ENDPOINT]["outbound|8080||web.default.svc.cluster.local"].message
    tls = {lb.endpoint.address.socket_address.address: dict(lb.metadata.filter_metadata).get(
        "envoy.transport_socket_match") is not None for e in cla.endpoints for lb in e.lb_endpoints}
    assert tls == {"10.244.0.2": True, "10.244.0.3": False}


def test_trust_domain_is_in_every_identity_a_proxy_checks():
    view = Renderer(Snapshot.build(resources(SVC), [web(0)])).resources_for(proxy(td="example.org"))
    assert sans(view) == ["spiffe://example.org/ns/default/sa/web"]
    assert b"spiffe://example.org/" in view[LISTENER]["virtualInbound"].payload
