"""DestinationRule traffic policies and ServiceEntry on a real mesh (real Envoy, real traffic).

One small mesh for the module: `hello` (3 replicas: hello-a-0 in locality r1/z1, hello-b-0/1 in r1/z2, each
serving HTTP on 8080 and gRPC on 50051), `ext` (no sidecar, reached only through a ServiceEntry) and the
`sleep` client in r1/z1. Requests come from inside `sleep` through its sidecar; assertions are on status
codes and the `x-served-by` header (the replica's pod name). Loads are bounded by count.
"""
from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from .mesh import Mesh, can_run_netns, running_mesh, hello_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

APPS = Path(__file__).with_name("apps")
APP = APPS / "policy_app.py"
GRPC_CLIENT = APPS / "grpc_client.py"
HELLO = "http://hello:8080/"
PODS = ("hello-a-0", "hello-b-0", "hello-b-1")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    with running_mesh(tmp_path_factory.mktemp("drpol"), text=hello_mesh(APP, grpc=True, ext=True)) as m:
        yield m


def switch(mesh: Mesh, pod: str, what: str, on: bool) -> None:
    p = mesh.exec(pod, "curl", "-s", "-m", "5", f"http://127.0.0.1:8080/{what}?on={int(on)}")
    assert p.returncode == 0 and f"{what}={on}" in p.stdout, p


@pytest.fixture(autouse=True)
def clean(mesh: Mesh):
    for pod in PODS:
        switch(mesh, pod, "fail", False)
        switch(mesh, pod, "sick", False)
        switch(mesh, pod, "grpcfail", False)
    mesh.reset_routing()
    yield


def apply(mesh: Mesh, text: str) -> None:
    mesh.apply_text(textwrap.dedent(text))
    mesh.wait_synced()


def test_default_and_least_request_reach_every_replica(mesh: Mesh) -> None:
    r = mesh.load("sleep", HELLO, count=90)
    assert r["status"] == {"200": 90} and all(r["served_by"].get(p, 0) > 5 for p in PODS), r
    apply(mesh, """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: hello}
        spec: {host: hello, trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}}
        """)
    r = mesh.load("sleep", HELLO, count=90)
    assert r["status"] == {"200": 90} and all(r["served_by"].get(p, 0) > 5 for p in PODS), r


def test_consistent_hash_on_header_pins_each_user_to_one_replica(mesh: Mesh) -> None:
    apply(mesh, """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: hello}
        spec:
          host: hello
          trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 1024}}}}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: hello}
        spec:
          hosts: [hello]
          http: [{route: [{destination: {host: hello, port: {number: 8080}}}]}]
        """)
    seen = set()
    for i in range(8):
        r = mesh.load("sleep", HELLO, count=15, headers={"x-user": f"user-{i}"})
        assert r["status"] == {"200": 15} and len(r["served_by"]) == 1, r
        seen |= set(r["served_by"])
    assert len(seen) >= 2, seen  # different users land on different replicas


def test_outlier_detection_ejects_the_failing_replica(mesh: Mesh) -> None:
    switch(mesh, "hello-b-1", "fail", True)
    before = mesh.load("sleep", HELLO, count=60, concurrency=2)
    assert before["status"].get("500", 0) > 5, before  # no DestinationRule: the failures reach the caller
    apply(mesh, """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: hello}
        spec:
          host: hello
          trafficPolicy:
            outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 5m, maxEjectionPercent: 100}
            loadBalancer: {localityLbSetting: {enabled: false}}   # spread over both localities
        """)
    first = mesh.load("sleep", HELLO, count=60, concurrency=2)
    assert first["status"].get("500", 0) <= 6, first  # ejected after a few consecutive 5xx
    after = mesh.load("sleep", HELLO, count=90, concurrency=2)
    assert after["status"] == {"200": 90}, after  # the error count stops growing
    assert set(after["served_by"]) == {"hello-a-0", "hello-b-0"}, after


def test_locality_failover_prefers_the_callers_zone_then_fails_over(mesh: Mesh) -> None:
    apply(mesh, """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: hello}
        spec:
          host: hello
          trafficPolicy:
            outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 5m, maxEjectionPercent: 100}
        """)
    local = mesh.load("sleep", HELLO, count=40)
    assert local["served_by"] == {"hello-a-0": 40}, local  # sleep is in r1/z1, like hello-a-0 only
    switch(mesh, "hello-a-0", "fail", True)
    mesh.load("sleep", HELLO, count=20, concurrency=1)
    after = mesh.load("sleep", HELLO, count=60)
    assert after["status"] == {"200": 60}, after
    assert set(after["served_by"]) == {"hello-b-0", "hello-b-1"}, after  # failed over to r1/z2


def test_active_health_check_takes_a_sick_replica_out_and_back(mesh: Mesh) -> None:
    apply(mesh, """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: hello}
        spec:
          host: hello
          trafficPolicy:
            portLevelSettings:
            - port: {number: 8080}
              healthCheck: {http: {path: /healthz, expectedStatuses: [200]}, interval: 1s, timeout: 1s,
                            unhealthyThreshold: 1, healthyThreshold: 1}
        """)
    switch(mesh, "hello-b-0", "sick", True)  # /healthz → 503, but it still answers traffic with 200

    def served(count: int = 45) -> dict:
        r = mesh.load("sleep", HELLO, count=count)
        assert r["status"] == {"200": count}, r
        return r["served_by"]

    deadline = time.monotonic() + 30
    while "hello-b-0" in served() and time.monotonic() < deadline:
        time.sleep(1)
    s = served(90)
    assert "hello-b-0" not in s and {"hello-a-0", "hello-b-1"} <= set(s), s
    switch(mesh, "hello-b-0", "sick", False)
    deadline = time.monotonic() + 30
    while "hello-b-0" not in (s := served()) and time.monotonic() < deadline:
        time.sleep(1)
    assert "hello-b-0" in s, s


def test_connection_pool_limits_overflow_with_503(mesh: Mesh) -> None:
    apply(mesh, """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: hello}
        spec:
          host: hello
          trafficPolicy:
            connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1, http2MaxRequests: 1}}
        """)
    r = mesh.load("sleep", "http://hello:8080/slow?ms=300", count=40, concurrency=8)
    assert r["status"].get("200", 0) > 0 and r["status"].get("503", 0) > 0, r
    assert r["served_by"].get("-", 0) == r["status"]["503"], r  # the 503s come from the sidecar, not an app


def test_grpc_calls_on_one_channel_spread_over_replicas(mesh: Mesh) -> None:
    p = mesh.exec("sleep", sys.executable, str(GRPC_CLIENT), "hello:50051", "150")
    assert p.returncode == 0, p
    import json

    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert not r["errors"], r
    assert set(r["served_by"]) == set(PODS) and all(n >= 20 for n in r["served_by"].values()), r


def _grpc_calls(mesh: Mesh, n: int) -> dict:
    """n unary calls on one grpcio channel from `sleep` through its sidecar: {served_by, errors}."""
    import json

    p = mesh.exec("sleep", sys.executable, str(GRPC_CLIENT), "hello:50051", str(n))
    assert p.returncode == 0, p
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_grpc_retry_on_unavailable_goes_to_another_replica(mesh: Mesh) -> None:
    switch(mesh, "hello-a-0", "grpcfail", True)
    # the default retry policy retries connection failures only, never a status the app returned
    r = _grpc_calls(mesh, 90)
    assert r["errors"].get("StatusCode.UNAVAILABLE", 0) >= 10 and "hello-a-0" not in r["served_by"], r
    apply(mesh, """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: hello}
        spec:
          hosts: [hello]
          http:
          - retries: {attempts: 2, retryOn: unavailable}
            route: [{destination: {host: hello}}]
        """)
    r = _grpc_calls(mesh, 90)
    assert not r["errors"] and set(r["served_by"]) == {"hello-b-0", "hello-b-1"}, r


def test_grpc_fault_abort_with_a_grpc_status(mesh: Mesh) -> None:
    apply(mesh, """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: hello}
        spec:
          hosts: [hello]
          http:
          - match: [{port: 50051}]
            fault: {abort: {grpcStatus: RESOURCE_EXHAUSTED, percentage: {value: 100}}}
            route: [{destination: {host: hello}}]
          - route: [{destination: {host: hello}}]
        """)
    r = _grpc_calls(mesh, 30)
    assert r["errors"] == {"StatusCode.RESOURCE_EXHAUSTED": 30} and not r["served_by"], r
    # the HTTP port of the same host is not aborted
    assert mesh.load("sleep", HELLO, count=20)["status"] == {"200": 20}


def test_service_entry_static_endpoint_reached_by_name(mesh: Mesh) -> None:
    ext = next(p for p in mesh.status()["pods"] if p["name"] == "ext-0")
    apply(mesh, f"""
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: legacy}}
        spec:
          hosts: [legacy.corp.internal]
          ports: [{{number: 8080, name: http, protocol: HTTP}}]
          location: MESH_EXTERNAL
          resolution: STATIC
          endpoints: [{{address: {ext['ip']}}}]
        """)
    try:
        deadline = time.monotonic() + 30
        while True:  # the runner rewrites pods' hosts files from the services list
            g = mesh.exec("sleep", "getent", "hosts", "legacy.corp.internal")
            if g.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert g.returncode == 0 and g.stdout.startswith("10.96."), g
        r = mesh.load("sleep", "http://legacy.corp.internal:8080/", count=20)
        assert r["status"] == {"200": 20} and r["served_by"] == {"ext-0": 20}, r
    finally:
        mesh.cli("delete", "serviceentries", "legacy", "-n", "default", check=False)
