"""mizzen.sdk against a real control plane process and real servers on loopback: the httpx transport and
the grpcio channel apply VirtualService/DestinationRule rules (split, header routes, retries with failover,
outlier ejection, timeouts, local rate limits); an SDK service registers itself with its health; a 30 s
control-plane outage under bounded load fails no call, and an SDK process started during the outage serves
from the snapshot file."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import httpx
import pytest

from mizzen.model.types import Instance
from mizzen.sdk import Mesh
from tests.proxyless.harness import ControlPlaneProc, grpc_who

from .backends import Backend

SDK_CLIENT = Path(__file__).with_name("sdk_client.py")
BASE = """\
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 8080, name: http}]
---
apiVersion: v1
kind: Service
metadata: {name: who}
spec:
  selector: {app: who}
  ports: [{port: 50051, name: grpc}]
---
apiVersion: v1
kind: Service
metadata: {name: sdkapp}
spec:
  selector: {app: sdkapp}
  ports: [{port: 8080, name: http}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 2, baseEjectionTime: 30s, maxEjectionPercent: 50}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: who}
spec:
  host: who
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""
ECHO_VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo]
  http:
  - match: [{headers: {x-canary: {exact: "yes"}}}]
    route: [{destination: {host: echo, subset: v2}}]
  - match: [{uri: {prefix: /slow}}]
    timeout: 300ms
    route: [{destination: {host: echo, subset: v2}}]
  - retries: {attempts: 3, retryOn: 5xx}
    route:
    - {destination: {host: echo, subset: v1}, weight: 90}
    - {destination: {host: echo, subset: v2}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: who}
spec:
  hosts: [who]
  http:
  - match: [{headers: {x-canary: {exact: "yes"}}}]
    route: [{destination: {host: who, subset: v2}}]
  - retries: {attempts: 2, retryOn: unavailable}
    route:
    - {destination: {host: who, subset: v1}, weight: 90}
    - {destination: {host: who, subset: v2}, weight: 10}
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: echo-limited}
spec:
  host: echo
  mode: local
  limits: [{name: limited, requestsPerUnit: 5, unit: minute, match: {uri: {prefix: /limited}}}]
"""


class Env:
    def __init__(self, tmp: Path):
        import tempfile
        self.home = Path(tempfile.mkdtemp(prefix="mz-sdk-"))
        self.state = self.home / "state"
        self.cp = ControlPlaneProc(self.state)
        self.backends: dict[str, Backend] = {}
        self.grpc: list = []
        self.who_state: dict[str, dict] = {}

    def cli(self, *args: str, input: str | None = None) -> None:
        p = subprocess.run([sys.executable, "-m", "mizzen.cli.main", args[0], "--state-dir", str(self.state),
                            *args[1:]], capture_output=True, text=True, timeout=60, input=input)
        assert p.returncode == 0, p.stdout + p.stderr

    def register(self, name: str, app: str, version: str, container: int, port: int) -> None:
        from mizzen.client import ApiClient
        ApiClient(str(self.state), timeout=10).put_instance(Instance(
            id=f"default.{name}", namespace="default", workload=name.rsplit("-", 1)[0], address="127.0.0.1",
            ports=(container,), labels=(("app", app), ("version", version)), sidecar=False, source="static",
            port_map=((container, port),)))

    def mesh(self, name: str = "web", **kw) -> Mesh:
        return Mesh(state_dir=str(self.state), workload=name, labels={"app": name}, interval=0.2, seed=7,
                    **kw).start()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env(tmp_path_factory.mktemp("sdk"))
    try:
        e.cp.start()
        e.cli("apply", "-f", "-", input=BASE + "---\n" + ECHO_VS)
        for name, version in (("echo-v1-0", "v1"), ("echo-v1-1", "v1"), ("echo-v2-0", "v2")):
            b = e.backends[name] = Backend(name)
            e.register(name, "echo", version, 8080, b.port)
        for name, version in (("who-v1-0", "v1"), ("who-v1-1", "v1"), ("who-v2-0", "v2")):
            e.who_state[name] = {"failing": False}
            server, port = grpc_who(name, state=e.who_state[name])
            e.grpc.append(server)
            e.register(name, "who", version, 50051, port)
        yield e
    finally:
        e.cp.stop()
        for b in e.backends.values():
            b.stop()
        for s in e.grpc:
            s.stop(0)
        import shutil
        shutil.rmtree(e.home, ignore_errors=True)


def _get_many(client: httpx.Client, url: str, n: int, headers: dict | None = None) -> tuple[Counter, Counter]:
    served, status = Counter(), Counter()
    for _ in range(n):
        r = client.get(url, headers=headers)
        status[r.status_code] += 1
        served[r.headers.get("x-served-by", r.headers.get("x-mizzen-sdk", "-"))] += 1
    return served, status


def test_http_split_headers_retries_outliers_timeout_ratelimit(env: Env) -> None:
    mesh = env.mesh()
    try:
        with httpx.Client(transport=mesh.httpx_transport(), timeout=5) as c:
            served, status = _get_many(c, "http://echo:8080/", 1000)
            assert status == {200: 1000}, status
            v2 = served["echo-v2-0"] / 1000
            assert 0.06 <= v2 <= 0.14 and served["echo-v1-0"] > 300 and served["echo-v1-1"] > 300, served
            served, _ = _get_many(c, "http://echo.default.svc.cluster.local:8080/", 50, {"x-canary": "yes"})
            assert served == {"echo-v2-0": 50}
            # v1-0 fails: retries on another host hide it, outlier detection ejects it (2 errors, max 50%)
            env.backends["echo-v1-0"].failing = True
            try:
                served, status = _get_many(c, "http://echo:8080/", 300)
                assert status == {200: 300}, status
                hits = env.backends["echo-v1-0"].hits
                _get_many(c, "http://echo:8080/", 100)
                assert env.backends["echo-v1-0"].hits == hits, "an ejected endpoint still got calls"
            finally:
                env.backends["echo-v1-0"].failing = False
            r = c.get("http://echo:8080/slow")  # the backend answers after 1 s; the route's timeout is 300 ms
            assert r.status_code == 504 and r.headers["x-mizzen-sdk"] == "UT"
            _, status = _get_many(c, "http://echo:8080/limited", 8)
            assert status == {200: 5, 429: 3}, status
            r = c.get("http://127.0.0.1:%d/" % env.backends["echo-v2-0"].port)  # not a mesh host: as is
            assert r.status_code == 200 and r.text == "echo-v2-0\n"
        assert mesh.stats["retries"] > 0
    finally:
        mesh.close()


def test_async_transport_split_retries_timeout(env: Env) -> None:
    import asyncio

    mesh = env.mesh("async-web")

    async def main() -> tuple[Counter, Counter, httpx.Response]:
        served, status = Counter(), Counter()
        async with httpx.AsyncClient(transport=mesh.httpx_async_transport(), timeout=5) as c:
            env.backends["echo-v1-1"].failing = True
            try:
                sem = asyncio.Semaphore(10)  # 10 calls in flight at a time

                async def one() -> httpx.Response:
                    async with sem:
                        return await c.get("http://echo:8080/")

                rs = await asyncio.gather(*(one() for _ in range(400)))
            finally:
                env.backends["echo-v1-1"].failing = False
            for r in rs:
                status[r.status_code] += 1
                served[r.headers.get("x-served-by")] += 1
            slow = await c.get("http://echo:8080/slow")
        return served, status, slow

    try:
        served, status, slow = asyncio.run(main())
    finally:
        mesh.close()
    assert status == {200: 400}, status  # v1-1 failing: retried elsewhere, then ejected
    assert 0.05 <= served["echo-v2-0"] / 400 <= 0.17, served
    assert slow.status_code == 504 and slow.headers["x-mizzen-sdk"] == "UT"


def test_grpc_channel_split_and_header_route(env: Env) -> None:
    mesh = env.mesh("grpc-caller")
    try:
        with mesh.grpc_channel("who:50051") as ch:
            call = ch.unary_unary("/mizzen.Who/Call")
            got = Counter(call(b"", timeout=5).decode() for _ in range(500))
            assert sum(got.values()) == 500 and 0.05 <= got["who-v2-0"] / 500 <= 0.16, got
            canary = Counter(call(b"", timeout=5, metadata=[("x-canary", "yes")]).decode() for _ in range(30))
            assert canary == {"who-v2-0": 30}
            env.who_state["who-v1-0"]["failing"] = True  # UNAVAILABLE: retried on another replica (retryOn)
            try:
                got = Counter(call(b"", timeout=5).decode() for _ in range(200))
            finally:
                env.who_state["who-v1-0"]["failing"] = False
            assert sum(got.values()) == 200 and "who-v1-0" not in got and mesh.stats["retries"] > 0, got
        with mesh.grpc_channel("127.0.0.1:1") as ch:  # not a mesh target: a plain channel, its own error
            with pytest.raises(grpc.RpcError):
                ch.unary_unary("/mizzen.Who/Call")(b"", timeout=1)
    finally:
        mesh.close()


def test_consistent_hash_by_header(env: Env) -> None:
    """A DestinationRule's consistentHash on a header, live: every call of one user goes to one replica, and the
    users are spread over the replicas."""
    env.cli("apply", "-f", "-", input="""\
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec: {selector: {app: echo}, ports: [{port: 8080, name: http}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: sticky}
spec:
  host: sticky
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
""")
    mesh = env.mesh()
    try:
        with httpx.Client(transport=mesh.httpx_transport(), timeout=5) as c:
            by_user = {}
            for i in range(12):
                served, status = _get_many(c, "http://sticky:8080/", 10, {"x-user": f"user-{i}"})
                assert status == {200: 10} and len(served) == 1, (i, served, status)
                by_user[i] = next(iter(served))
            assert len(set(by_user.values())) >= 2, by_user  # 12 users do not all hash to one of 3 replicas
            _, status = _get_many(c, "http://sticky:8080/", 30)  # no header, no hash: any replica (as Envoy)
            assert status == {200: 30}, status
    finally:
        mesh.close()


def test_least_request_keeps_calls_off_a_slow_replica(env: Env) -> None:
    """A DestinationRule's LEAST_REQUEST, live: with 8 concurrent callers and one replica of three answering in
    0.3 s, power of two choices on the SDK's in-flight counts sends it about 1/9 of the calls (both draws on it:
    sampled with replacement, as Envoy does), where round robin would send it 1/3."""
    backends = {name: Backend(name) for name in ("lr-fast-0", "lr-fast-1", "lr-slow-0")}
    backends["lr-slow-0"].delay = 0.3
    for name, b in backends.items():
        env.register(name, "lr", "v1", 8080, b.port)
    env.cli("apply", "-f", "-", input="""\
apiVersion: v1
kind: Service
metadata: {name: lr}
spec: {selector: {app: lr}, ports: [{port: 8080, name: http}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: lr}
spec:
  host: lr
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
""")
    mesh = env.mesh()
    served: Counter = Counter()
    lock = threading.Lock()

    def caller() -> None:  # bounded: 30 calls
        with httpx.Client(transport=mesh.httpx_transport(), timeout=10) as c:
            for _ in range(30):
                r = c.get("http://lr:8080/")
                with lock:
                    served[(r.status_code, r.headers.get("x-served-by"))] += 1

    try:
        threads = [threading.Thread(target=caller) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sum(served.values()) == 240 and {s for s, _ in served} == {200}, served
        slow = served[(200, "lr-slow-0")]
        assert served[(200, "lr-fast-0")] > 0 and served[(200, "lr-fast-1")] > 0, served
        assert slow < 0.22 * 240, served  # expected ≈ 11 %; round robin: 33 %
    finally:
        mesh.close()
        from mizzen.client import ApiClient
        api = ApiClient(str(env.state), timeout=10)
        for name, b in backends.items():
            api.delete_instance(f"default.{name}")
            b.stop()


def test_registration_with_health(env: Env) -> None:
    app = Backend("sdkapp-0")
    healthy = {"ok": True}
    server = Mesh(state_dir=str(env.state), workload="sdkapp", labels={"app": "sdkapp"}, interval=0.2).start()
    caller = env.mesh("caller")
    try:
        server.register(pod="sdkapp-0", address="127.0.0.1", ports=[8080], port_map={8080: app.port},
                        health=lambda: healthy["ok"], interval=0.2)
        with httpx.Client(transport=caller.httpx_transport(), timeout=5) as c:
            deadline = time.monotonic() + 10
            while c.get("http://sdkapp:8080/").status_code != 200:
                assert time.monotonic() < deadline, "the SDK service never became reachable"
                time.sleep(0.1)
            healthy["ok"] = False
            deadline = time.monotonic() + 10
            while (r := c.get("http://sdkapp:8080/")).status_code == 200:
                assert time.monotonic() < deadline, "an unhealthy SDK instance kept its traffic"
                time.sleep(0.1)
            assert r.status_code == 503 and r.headers["x-mizzen-sdk"] == "UH"
    finally:
        server.close()
        caller.close()
        app.stop()
    from mizzen.client import ApiClient
    assert "default.sdkapp-0" not in {i["id"] for i in ApiClient(str(env.state)).instances()}


@pytest.mark.e2e  # a 30 s outage under load: with the end-to-end tests (needs no root)
def test_control_plane_down_30s_under_load(env: Env) -> None:
    snap_file = env.home / "web-snapshot.json"
    mesh = env.mesh("web", snapshot_file=str(snap_file))
    results: Counter = Counter()
    stop = threading.Event()

    def load() -> None:  # bounded: ≤ 50 calls/s, ≤ 60 s
        end = time.monotonic() + 60
        with httpx.Client(transport=mesh.httpx_transport(), timeout=5) as c:
            while not stop.is_set() and time.monotonic() < end:
                try:
                    results[c.get("http://echo:8080/").status_code] += 1
                except httpx.HTTPError as e:
                    results[type(e).__name__] += 1
                time.sleep(0.02)

    t = threading.Thread(target=load)
    t.start()
    try:
        time.sleep(2)
        assert snap_file.exists() and results[200] > 20
        env.cp.kill()
        down_at = time.monotonic()
        time.sleep(3)
        # a new SDK process, started while the control plane is down, serves from the snapshot file
        p = subprocess.run([sys.executable, str(SDK_CLIENT), "http://echo:8080/", "--state-dir", str(env.state),
                            "--snapshot-file", str(snap_file), "--calls", "200", "--wait", "1"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert out["status"] == {"200": 200} and not out["errors"], out
        assert out["feed"]["source"] == "file" and not out["feed"]["connected"], out
        assert set(out["served_by"]) == {"echo-v1-0", "echo-v1-1", "echo-v2-0"}, out
        assert not mesh.feed.connected
        time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
    finally:
        env.cp.start()
    deadline = time.monotonic() + 10
    while not mesh.feed.connected:
        assert time.monotonic() < deadline, "the SDK did not reconnect"
        time.sleep(0.1)
    assert mesh.feed.mode == "watch", mesh.feed.status()  # followed by the REST watch before and after
    stop.set()
    t.join(30)
    mesh.close()
    assert set(results) == {200} and results[200] > 30 * 25, results  # every call of ≥ 30 s of load
