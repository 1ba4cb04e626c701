"""translate/proxyless.py, directly: the shapes grpcio's xDS client reads, and what it reports it leaves out."""
from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from mizzen.analyze import analyze
from mizzen.api import load_text
from mizzen.model.snapshot import Snapshot
from mizzen.model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, Instance, Proxy
from mizzen.translate import Renderer
from mizzen.translate.proxyless import gaps

CONFIG = """\
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 50051, name: grpc}, {port: 9000, name: tcp-raw}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    outlierDetection: {consecutive5xxErrors: 3}
    connectionPool: {http: {http2MaxRequests: 7}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo]
  http:
  - match: [{queryParams: {a: {exact: b}}}]
    route: [{destination: {host: echo, subset: v2}}]
  - match: [{headers: {x-canary: {exact: "yes"}}}]
    timeout: 2s
    retries: {attempts: 3, retryOn: "unavailable,5xx", perTryTimeout: 1s}
    route: [{destination: {host: echo, subset: v2}}]
  - redirect: {uri: /elsewhere}
    match: [{uri: {prefix: /redirect}}]
  - route:
    - {destination: {host: echo, subset: v1}, weight: 90}
    - {destination: {host: echo, subset: v2}, weight: 10}
"""
CLIENT = Proxy(id="proxyless~10.0.0.9~c-0.default~default.svc.cluster.local", kind="proxyless")


def _snap(text: str = CONFIG) -> Snapshot:
    insts = [Instance(id=f"default.echo-{i}", namespace="default", workload="echo", address=f"10.0.0.{i}",
                      ports=(50051, 9000), labels=(("app", "echo"), ("version", v)), locality=loc)
             for i, (v, loc) in enumerate([("v1", "r1/z1"), ("v1", "r1/z2"), ("v2", "r1/z1")])]
    return Snapshot.build(load_text(text).resources, insts)


def test_listeners_routes_clusters_endpoints() -> None:
    view = Renderer(_snap()).resources_for(CLIENT)
    # every name form of the gRPC port (not the TCP one), each an API listener with RDS, fault then router
    assert {"echo:50051", "echo.default:50051", "echo.default.svc:50051",
            "echo.default.svc.cluster.local:50051"} <= set(view[LISTENER])
    assert not any(n.endswith(":9000") for n in view[LISTENER])
    lst = view[LISTENER]["echo:50051"].message
    hcm = hcm_pb2.HttpConnectionManager()
    lst.api_listener.api_listener.Unpack(hcm)
    assert hcm.rds.route_config_name == "echo.default.svc.cluster.local:50051"
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.fault", "envoy.filters.http.router"]
    assert not lst.HasField("address")

    rcfg = view[ROUTE]["echo.default.svc.cluster.local:50051"].message
    routes = rcfg.virtual_hosts[0].routes
    assert len(routes) == 2  # the query-param match and the redirect are left out
    canary, split = routes
    assert canary.match.headers[0].name == "x-canary"
    assert canary.route.max_stream_duration.max_stream_duration.seconds == 2
    assert canary.route.retry_policy.retry_on == "unavailable" and canary.route.retry_policy.num_retries.value == 3
    assert [(c.name, c.weight.value) for c in split.route.weighted_clusters.clusters] == [
        ("outbound|50051|v1|echo.default.svc.cluster.local", 90), ("outbound|50051|v2|echo.default.svc.cluster.local", 10)]

    clusters = {n: r.message for n, r in view[CLUSTER].items()}
    assert set(clusters) == {f"outbound|50051|{s}|echo.default.svc.cluster.local" for s in ("", "v1", "v2")}
    v1, v2 = clusters["outbound|50051|v1|echo.default.svc.cluster.local"], \
        clusters["outbound|50051|v2|echo.default.svc.cluster.local"]
    assert v1.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN  # LEAST_REQUEST: not in grpcio
    assert v2.lb_policy == cluster_pb2.Cluster.RING_HASH
    assert v2.ring_hash_lb_config.hash_function == cluster_pb2.Cluster.RingHashLbConfig.XX_HASH
    assert v1.circuit_breakers.thresholds[0].max_requests.value == 7
    assert not v1.HasField("outlier_detection")

    cla = view[ENDPOINT]["outbound|50051|v1|echo.default.svc.cluster.local"].message
    assert [(e.locality.zone, e.load_balancing_weight.value, len(e.lb_endpoints)) for e in cla.endpoints] == [
        ("z1", 1, 1), ("z2", 1, 1)]  # gRPC needs a locality and a weight on each


def test_short_names_only_in_the_own_namespace() -> None:
    other = Proxy(id="proxyless~x~c.other~other.svc.cluster.local", namespace="other", kind="proxyless")
    names = set(Renderer(_snap()).resources_for(other)[LISTENER])
    assert "echo:50051" not in names and "echo.default:50051" in names


def test_gaps_name_each_dropped_field_once() -> None:
    got = {(g.resource, g.path) for g in gaps(_snap(), CLIENT)}
    assert got == {
        ("VirtualService default/echo", "spec.http[0].match[0].queryParams"),
        ("VirtualService default/echo", "spec.http[1].retries.retryOn"),
        ("VirtualService default/echo", "spec.http[1].retries.perTryTimeout"),
        ("VirtualService default/echo", "spec.http[2].redirect"),
        ("DestinationRule default/echo", "spec.trafficPolicy.loadBalancer.simple"),
        ("DestinationRule default/echo", "spec.trafficPolicy.outlierDetection"),
    }


def test_analyze_reports_gaps_for_proxyless_workloads_only() -> None:
    wl = """\
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: client, annotations: {mizzen.dev/proxyless: "true"}}
spec: {command: [sleep, "1"], sidecar: false}
"""
    plain = [m for m in analyze(load_text(CONFIG).resources) if m.code == "MZ0120"]
    assert plain == []
    msgs = [m for m in analyze(load_text(CONFIG + wl).resources) if m.code == "MZ0120"]
    assert len(msgs) == 6 and all("Workload default/client" in m.message for m in msgs)
    assert any(m.path == "spec.http[1].retries.perTryTimeout" and m.resource == "VirtualService default/echo"
               for m in msgs)


def test_bootstrap_node_round_trips_to_a_proxyless_proxy() -> None:
    from mizzen.proxyless.bootstrap import grpc_bootstrap

    b = grpc_bootstrap(["/s/xds.sock", "/s/xds-1.sock"], pod="c-0", namespace="shop", workload="c",
                       labels={"app": "c"}, locality="r1/z2")
    assert [s["server_uri"] for s in b["xds_servers"]] == ["unix:///s/xds.sock", "unix:///s/xds-1.sock"]
    tcp = grpc_bootstrap(["10.0.0.1:15010"], pod="c-0", namespace="shop", workload="c")  # a joined host's pods
    assert tcp["xds_servers"][0]["server_uri"] == "10.0.0.1:15010"
    assert b["node"]["locality"] == {"region": "r1", "zone": "z2"}
    p = Proxy.from_node(b["node"]["id"], b["node"]["metadata"])
    assert (p.kind, p.namespace, p.workload, p.label_dict, p.locality) == ("proxyless", "shop", "c", {"app": "c"},
                                                                           "r1/z2")


def test_analyze_plaintext_callers_to_strict_servers() -> None:
    extra = """\
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: echo, labels: {app: echo}}
spec: {command: [sleep, "1"], ports: [{containerPort: 50051}]}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: pl, annotations: {mizzen.dev/proxyless: "true"}}
spec: {command: [sleep, "1"], sidecar: false}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: sdk, annotations: {mizzen.dev/sdk: "true"}}
spec: {command: [sleep, "1"], sidecar: false}
"""
    strict = """\
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: echo}
spec: {selector: {matchLabels: {app: echo}}, mtls: {mode: STRICT}}
"""
    assert not [m for m in analyze(load_text(CONFIG + extra).resources) if m.code == "MZ0121"]
    msgs = [m for m in analyze(load_text(CONFIG + extra + strict).resources) if m.code == "MZ0121"]
    assert {m.resource for m in msgs} == {"Workload default/pl", "Workload default/sdk"}, msgs
    assert all("echo.default.svc.cluster.local" in m.message and "50051" in m.message for m in msgs)
