"""Proxyless gRPC: real grpcio xDS clients (`xds:///` targets, GRPC_XDS_BOOTSTRAP from `mizzen
proxyless-bootstrap`) served by a real control plane process, calling three real gRPC servers on loopback.
(`tests/e2e/test_proxyless_e2e.py` does the same from a pod without a sidecar in a `mizzen up` mesh.)"""
from __future__ import annotations

import time

import pytest

from .harness import Rig, grpc_who, totals

BASE = """\
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 50051, name: grpc}]
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: client, labels: {app: client}}
spec: {command: [sleep, "1"], sidecar: false}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def split(v1: int, v2: int, extra_routes: str = "") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: [echo]
  http:
{extra_routes}  - route:
    - {{destination: {{host: echo, subset: v1}}, weight: {v1}}}
    - {{destination: {{host: echo, subset: v2}}, weight: {v2}}}
"""


@pytest.fixture(scope="module")
def rig():
    r = Rig({"echo-v1-0": {"app": "echo", "version": "v1"}, "echo-v1-1": {"app": "echo", "version": "v1"},
             "echo-v2-0": {"app": "echo", "version": "v2"}})
    try:
        yield r.start(BASE)
    finally:
        r.close()


def _v2_share(ws: list[dict]) -> tuple[float, int]:
    served, _ = totals(ws)
    n = sum(served.values())
    return (served.get("echo-v2-0", 0) / n if n else 0.0), n


@pytest.mark.e2e  # kills and restarts a control plane process: with the end-to-end tests (needs no root)
def test_split_follows_changes_and_survives_control_plane_loss(rig: Rig) -> None:
    rig.apply(split(90, 10))
    c = rig.client("xds:///echo:50051", seconds=60, rps=200)
    first = c.wait_until(lambda w: sum(w["served"].values()) > 0, 20, "first answers")
    time.sleep(4)
    share, n = _v2_share(c.since(first + 0.5))
    served, errors = totals(c.since(first))
    assert n > 400 and 0.05 <= share <= 0.16, (share, served)
    assert not errors, errors
    assert set(served) == {"echo-v1-0", "echo-v1-1", "echo-v2-0"}, served  # every replica gets traffic

    # a change is followed: all to v2
    rig.apply(split(0, 100))
    t0 = time.monotonic()  # the apply is committed (the CLI process's own start-up is not counted)
    at = c.wait_until(lambda w: w["at"] > t0 and w["served"] and set(w["served"]) == {"echo-v2-0"}, 10,
                      "all traffic on v2")
    # how fast is reported, not judged (timing goals belong in `make bench`); 0.16–0.22 s measured here
    print(f"proxyless client: only v2 within {at - t0:.2f}s of the apply (0.25 s windows)")

    # the control plane goes away: the client keeps its last config and keeps calling with no error
    rig.cp.kill()
    killed = time.monotonic()
    time.sleep(5)
    ws = c.since(killed + 0.3)
    served, errors = totals(ws)
    assert not errors and set(served) == {"echo-v2-0"} and sum(served.values()) > 500, (served, errors)

    # back again: the client reconnects by itself and follows the next change
    rig.cp.start()
    t1 = time.monotonic()
    rig.apply(split(100, 0))
    c.wait_until(lambda w: w["at"] > t1 and w["served"] and "echo-v2-0" not in w["served"], 30,
                 "back to v1 after the control plane's restart")
    c.stop()
    _, errors = totals(c.windows)
    assert not errors, errors


def test_header_match_ring_hash_and_fault(rig: Rig) -> None:
    rig.apply(split(100, 0, extra_routes="""\
  - match: [{headers: {x-canary: {exact: "yes"}}}]
    route: [{destination: {host: echo, subset: v2}}]
  - match: [{headers: {x-fault: {exact: "abort"}}}]
    fault: {abort: {grpcStatus: RESOURCE_EXHAUSTED, percentage: {value: 100}}}
    route: [{destination: {host: echo, subset: v1}}]
"""))
    rig.apply("""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
""")
    time.sleep(0.5)
    canary = rig.client("xds:///echo.default.svc.cluster.local:50051", seconds=3, rps=100,
                        headers={"x-canary": "yes"})
    fault = rig.client("xds:///echo:50051", seconds=3, rps=50, headers={"x-fault": "abort"})
    alice = rig.client("xds:///echo:50051", seconds=3, rps=100, headers={"x-user": "alice"})
    for c in (canary, fault, alice):
        c.proc.wait(60)
    served, errors = totals(canary.windows)
    assert set(served) == {"echo-v2-0"} and not errors, (served, errors)
    served, errors = totals(fault.windows)
    assert not served and sum(errors.values()) > 50 and all(k.startswith("RESOURCE_EXHAUSTED") for k in errors), \
        (served, errors)
    served, errors = totals(alice.windows)
    assert len(served) == 1 and sum(served.values()) > 100 and not errors, (served, errors)  # one v1 replica


def test_retries_and_timeouts_are_applied_by_the_client(rig: Rig) -> None:
    """gRFC A44 retries and A31 timeouts, live: `flaky` has a replica that always answers UNAVAILABLE — calls on
    the route with `retries` (attempts 3, retryOn unavailable) all succeed (retried on the healthy one), calls on
    the route with `attempts: 0` fail about half the time; `slow` answers after 1 s — the route's 300 ms
    `timeout` ends its calls with DEADLINE_EXCEEDED, a route without one is served."""
    for name, app, state in (("flaky-0", "flaky", {"failing": True}), ("flaky-1", "flaky", None),
                             ("slow-0", "slow", {"delay": 1.0})):
        server, port = grpc_who(name, state=state)
        rig.servers[name] = (server, port)
        rig.register(name, {"app": app}, port)
    rig.apply("""\
apiVersion: v1
kind: Service
metadata: {name: flaky}
spec: {selector: {app: flaky}, ports: [{port: 50051, name: grpc}]}
---
apiVersion: v1
kind: Service
metadata: {name: slow}
spec: {selector: {app: slow}, ports: [{port: 50051, name: grpc}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky}
spec:
  hosts: [flaky]
  http:
  - match: [{headers: {x-retry: {exact: "yes"}}}]
    route: [{destination: {host: flaky}}]
    retries: {attempts: 3, retryOn: unavailable}
  - route: [{destination: {host: flaky}}]
    retries: {attempts: 0}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: slow}
spec:
  hosts: [slow]
  http:
  - match: [{headers: {x-patient: {exact: "yes"}}}]
    route: [{destination: {host: slow}}]
  - route: [{destination: {host: slow}}]
    timeout: 300ms
""")
    time.sleep(0.5)
    retried = rig.client("xds:///flaky:50051", seconds=3, rps=50, headers={"x-retry": "yes"})
    bare = rig.client("xds:///flaky:50051", seconds=3, rps=50)
    hurried = rig.client("xds:///slow:50051", seconds=2, rps=5)
    patient = rig.client("xds:///slow:50051", seconds=2, rps=5, headers={"x-patient": "yes"})
    for c in (retried, bare, hurried, patient):
        c.proc.wait(60)
    served, errors = totals(retried.windows)
    assert set(served) == {"flaky-1"} and sum(served.values()) > 50 and not errors, (served, errors)
    served, errors = totals(bare.windows)
    assert set(served) == {"flaky-1"} and any(k.startswith("UNAVAILABLE") for k in errors), (served, errors)
    served, errors = totals(hurried.windows)
    assert not served and errors and all(k.startswith("DEADLINE_EXCEEDED") for k in errors), (served, errors)
    served, errors = totals(patient.windows)
    assert set(served) == {"slow-0"} and not errors, (served, errors)


def test_bootstrap_names_the_workload(rig: Rig) -> None:
    import json
    b = json.loads(rig.bootstrap().read_text())
    assert b["node"]["metadata"]["PROXY_TYPE"] == "proxyless"
    assert b["node"]["metadata"]["LABELS"] == {"app": "client"}
    assert b["xds_servers"][0]["server_uri"] == f"unix://{rig.state / 'xds.sock'}"


def test_xds_enabled_server_gets_its_listener_and_serves(rig: Rig) -> None:
    import json as _json
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    import grpc

    from mizzen.client.layout import StateLayout
    from mizzen.proxyless.bootstrap import grpc_bootstrap

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    boot = rig.home / "server.bootstrap.json"
    boot.write_text(_json.dumps(grpc_bootstrap([StateLayout(str(rig.state)).xds_socket()], pod="xsrv-0",
                                               namespace="default", workload="xsrv", ports=[port])))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("xds_server.py")), str(port),
                             "--name", "xsrv-0", "--seconds", "60"],
                            env=dict(os.environ, GRPC_XDS_BOOTSTRAP=str(boot)), stderr=subprocess.PIPE, text=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.unary_unary("/mizzen.Who/Call")
            deadline = time.monotonic() + 20
            while True:  # an xDS server refuses until its Listener arrives (then it serves)
                try:
                    assert call(b"", timeout=2) == b"xsrv-0"
                    break
                except grpc.RpcError:
                    assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
                    time.sleep(0.2)
        lds = [p for p in rig.api.proxies() if p["id"].startswith("proxyless~127.0.0.1~xsrv-0.default")]
        assert lds and lds[0]["types"]["LDS"]["subscribed"] == [
            f"grpc/server?xds.resource.listening_address=127.0.0.1:{port}"], lds
        assert lds[0]["types"]["LDS"]["state"] == "SYNCED", lds
    finally:
        proc.terminate()
        proc.wait(10)
