"""Observability of a real mesh (Bookinfo, `mizzen up`, netns mode): traces across three sidecars, golden
metrics / top / tap from the proxies themselves, a real Prometheus (Debian's) scraping with the config
`mizzen prometheus-config` writes, bounded cardinality, and the console in headless Chromium."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mizzen.client import EnvoyAdmin, StateLayout
from tests.e2e.mesh import ROOT, Mesh, can_run_netns, running_mesh
from tests.telemetry.rig import free_port

pytestmark = pytest.mark.e2e
NET = ROOT / "examples" / "bookinfo" / "networking"
TRACE_ALL = """apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{randomSamplingPercentage: 100}]
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    reason = can_run_netns()
    if reason:
        pytest.skip(reason)
    with running_mesh(tmp_path_factory.mktemp("observability")) as m:
        yield m


def cli_json(mesh: Mesh, *args: str):
    return json.loads(mesh.cli(*args, "-o", "json").stdout)


def until(fn, timeout: float = 30, every: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what} not met within {timeout}s (last: {str(last)[:2000]})")


def endpoints(mesh: Mesh) -> dict:
    return json.loads(Path(StateLayout(str(mesh.state_dir)).controlplane_endpoints(0)).read_text())


def scrape(mesh: Mesh, pod: str) -> str:
    url = f"http://{endpoints(mesh)['monitoring']}/pods/{pod}/stats/prometheus"
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


# ---------------------------------------------------------------------------------------------- Istio's labels

SPIFFE = "spiffe://cluster.local/ns/default/sa/"


def istio_requests(text: str) -> list:
    return [s for f in text_string_to_metric_families(text) if f.name == "istio_requests" for s in f.samples
            if s.name == "istio_requests_total"]


def test_first_requests_after_up_carry_workloads_and_both_reporters_name_the_spiffe_identities(mesh: Mesh) -> None:
    """The module's first traffic (this test runs first): pods start together, so a caller's first requests
    often reach a callee whose agent has not heard of it yet — the agent holds those records until its directory
    refresh names the peer, so no series says `unknown` for a workload of the mesh. The mesh runs with auto
    mTLS (PERMISSIVE, no security config): the callee's sidecar reads the caller's SPIFFE ID from the client
    certificate, the caller's sidecar reads the callee's from the server certificate, and each names itself."""
    # all of reviews to v3, which calls ratings (and later tests' windows see only v3 from this traffic)
    mesh.apply(NET / "destination-rule-all.yaml", NET / "virtual-service-reviews-v3.yaml")
    mesh.wait_synced()
    n = 6
    for _ in range(n):
        p = mesh.exec("sleep", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://productpage:9080/productpage")
        assert p.stdout.strip() == "200", p.stdout + p.stderr
    pods = ("sleep-0", "productpage-v1-0", "reviews-v3-0", "ratings-v1-0", "details-v1-0")
    seen: dict = {}

    def counted():
        seen.clear()
        seen.update({pod: istio_requests(scrape(mesh, pod)) for pod in pods})

        def total(pod: str, reporter: str, **labels: str) -> float:
            return sum(s.value for s in seen[pod] if s.labels["reporter"] == reporter
                       and all(s.labels[k] == v for k, v in labels.items()))
        # every request of ours counted on both sides (with whatever labels: held records count late, not never)
        return (total("sleep-0", "source") >= n and total("productpage-v1-0", "destination") >= n
                and total("productpage-v1-0", "source", destination_service_name="reviews") >= n
                and total("reviews-v3-0", "destination") >= n and total("ratings-v1-0", "destination") >= n
                and total("details-v1-0", "destination") >= n)
    until(counted, 30, 1.0, what=f"{n} requests on both sides of each edge")
    for pod, samples in seen.items():
        for s in samples:
            for side in ("source", "destination"):
                assert s.labels[f"{side}_workload"] != "unknown", (pod, s.labels)
                assert s.labels[f"{side}_principal"].startswith(SPIFFE), (pod, s.labels)
    want = {"source_workload": "sleep", "source_principal": SPIFFE + "sleep",
            "destination_workload": "productpage-v1", "destination_principal": SPIFFE + "bookinfo-productpage"}
    for pod, reporter in (("sleep-0", "source"), ("productpage-v1-0", "destination")):
        edge = [s.labels for s in seen[pod] if s.labels["reporter"] == reporter]
        assert edge and all({k: lb[k] for k in want} == want for lb in edge), (pod, edge)
    calls = [s.labels for s in seen["productpage-v1-0"] if s.labels["reporter"] == "source"]
    assert {(lb["destination_service_name"], lb["destination_principal"]) for lb in calls} == {
        ("reviews", SPIFFE + "bookinfo-reviews"), ("details", SPIFFE + "bookinfo-details")}, calls
    assert {lb["source_principal"] for lb in calls} == {SPIFFE + "bookinfo-productpage"}
    # Istio's semantics: only the destination knows the policy the connection was accepted under
    assert {s.labels["connection_security_policy"] for s in seen["productpage-v1-0"]
            if s.labels["reporter"] == "destination"} == {"mutual_tls"}
    assert {s.labels["connection_security_policy"] for s in seen["sleep-0"]} == {"unknown"}
    # the pod's own scrape port (:15020, as Istio), where a Prometheus inside the mesh's network reaches it: one
    # exposition with Envoy's stats, Istio's series and the agent's own metrics
    p = mesh.exec("productpage-v1", "curl", "-s", "--max-time", "10", "http://127.0.0.1:15020/stats/prometheus")
    families = {f.name for f in text_string_to_metric_families(p.stdout)}
    assert {"istio_requests", "istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes",
            "envoy_cluster_upstream_rq"} <= families, sorted(families)[:50]
    assert any(f.startswith("mizzen_agent_accesslog") for f in families), sorted(families)


RATINGS_TCP = """apiVersion: v1
kind: Service
metadata: {name: ratings-tcp}
spec:
  ports: [{port: 9000, name: tcp-ratings, targetPort: 9080}]
  selector: {app: ratings}
"""


def test_tcp_metrics_on_live_connections(mesh: Mesh) -> None:
    """A `tcp-` port: the caller's sidecar proxies bytes (tcp_proxy), and reports Istio's TCP families from the
    tcp_grpc stream — connections opened and closed, bytes each way — with the peers and their identities."""
    mesh.apply_text(RATINGS_TCP)
    try:
        mesh.wait_synced()
        # the runner writes a new Service's names into the pods' hosts files on its own reconcile pass, which
        # xDS sync does not wait for (curl said 000, "could not resolve host", in most runs of this test alone)
        until(lambda: mesh.exec("sleep", "getent", "hosts", "ratings-tcp").returncode == 0, 30, 0.3,
              what="the sleep pod resolves ratings-tcp")
        n = 4
        for _ in range(n):  # curl opens one connection per run and closes it at the end
            p = mesh.exec("sleep", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://ratings-tcp:9000/ratings/0")
            assert p.stdout.strip() == "200", p.stdout + p.stderr
        host = "ratings-tcp.default.svc.cluster.local"
        got: dict = {}

        def tcp_series():
            got.clear()
            for f in text_string_to_metric_families(scrape(mesh, "sleep-0")):
                for s in f.samples:
                    if s.name.startswith("istio_tcp_") and s.labels["destination_service"] == host:
                        got.setdefault(s.name, []).append(s)
            closed = sum(s.value for s in got.get("istio_tcp_connections_closed_total", ()))
            return closed >= n
        until(tcp_series, 20, 1.0, what=f"{n} TCP connections closed in sleep's scrape")
        total = {name: sum(s.value for s in samples) for name, samples in got.items()}
        assert total["istio_tcp_connections_opened_total"] == total["istio_tcp_connections_closed_total"] == n, total
        assert total["istio_tcp_sent_bytes_total"] > 0 and total["istio_tcp_received_bytes_total"] > 0, total
        for samples in got.values():
            for s in samples:
                lb = s.labels
                assert (lb["reporter"], lb["request_protocol"], lb["source_workload"], lb["destination_workload"]) == (
                    "source", "tcp", "sleep", "ratings-v1"), lb
                assert (lb["source_principal"], lb["destination_principal"]) == (
                    SPIFFE + "sleep", SPIFFE + "bookinfo-ratings"), lb
    finally:
        mesh.cli("delete", "service", "ratings-tcp")


# ---------------------------------------------------------------------------------------------- tracing

def test_one_trace_across_productpage_reviews_and_ratings(mesh: Mesh) -> None:
    mesh.apply_text(TRACE_ALL)
    mesh.apply(NET / "destination-rule-all.yaml", NET / "virtual-service-reviews-v3.yaml")  # v3 calls ratings
    mesh.wait_synced()
    p = mesh.exec("sleep", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://productpage:9080/productpage")
    assert p.stdout.strip() == "200", p.stdout + p.stderr

    def found():
        for t in cli_json(mesh, "traces", "--service", "ratings-v1"):
            if {"productpage-v1", "reviews-v3", "ratings-v1"} <= set(t["services"]):
                return t
        return None
    summary = until(found, 30, what="a trace through productpage, reviews and ratings")
    trace = cli_json(mesh, "traces", summary["traceId"])
    spans = {s["spanId"]: s for s in trace["spans"]}
    assert all(s["traceId"] == summary["traceId"] for s in spans.values())

    def server(service: str) -> dict:
        (s,) = [s for s in spans.values() if s["service"] == service and s["kind"] == "SERVER"]
        return s

    def parent(s: dict) -> dict:
        return spans[s["parentId"]]
    pp, rv, rt = server("productpage-v1"), server("reviews-v3"), server("ratings-v1")
    # each callee's server span is the child of its caller's client span, itself a child of the caller's
    # server span: the chain of parents crosses the three sidecars
    assert parent(rt)["service"] == "reviews-v3" and parent(rt)["kind"] == "CLIENT"
    assert parent(parent(rt)) == rv
    assert parent(rv)["service"] == "productpage-v1" and parent(rv)["kind"] == "CLIENT"
    assert parent(parent(rv)) == pp
    assert parent(pp)["service"] == "sleep" and parent(pp)["kind"] == "CLIENT"  # the caller's sidecar: the root
    table = mesh.cli("traces", summary["traceId"]).stdout
    assert "ratings-v1" in table and "SERVER" in table


# ---------------------------------------------------------------------------------------------- stat, top, tap

def test_stat_top_and_tap_on_live_traffic(mesh: Mesh) -> None:
    mesh.apply(NET / "destination-rule-all.yaml", NET / "virtual-service-reviews-v3.yaml")
    mesh.wait_synced()
    stop = mesh.state_dir.parent / "stop-load"
    load = mesh.load_background("sleep", "http://productpage:9080/productpage", rps=20, seconds=600, stop_file=stop)
    try:
        def stat_rows():
            rows = cli_json(mesh, "stat")
            pp = [r for r in rows if r["name"] == "productpage-v1"]
            return rows if pp and pp[0]["requests"] >= 40 else None
        rows = until(stat_rows, 40, 1.0, what="productpage-v1 in mizzen stat")
        for r in rows:  # the -o json contract
            assert {"name", "namespace", "requests", "rps", "success_rate", "p50_ms", "p99_ms"} <= set(r), r
        pp = next(r for r in rows if r["name"] == "productpage-v1")
        # the rate is over the last minute (the window), so below the load's 20 rps until it filled the window
        assert pp["namespace"] == "default" and pp["success_rate"] == 1.0 and 0.5 <= pp["rps"] <= 25, pp
        assert 0 < pp["p50_ms"] <= pp["p99_ms"], pp
        by_version = cli_json(mesh, "stat", "service", "reviews", "--by", "version")
        assert {r["version"] for r in by_version} == {"v3"}, by_version  # the VirtualService sends all to v3
        callers = cli_json(mesh, "stat", "service", "productpage", "--by", "caller")
        assert [(r["caller"], r["caller_namespace"]) for r in callers] == [("sleep", "default")], callers
        assert "SUCCESS" in mesh.cli("stat", "-n", "default").stdout

        # metrics are counted inside Envoy (the default): the first top read turns the sampled stream on, the
        # requests after it show their paths
        snaps = [json.loads(line) for line in mesh.cli("top", "productpage-v1", "--iterations", "2", "--interval", "1",
                                                       "-o", "json").stdout.splitlines()]
        assert len(snaps) == 2 and snaps[1]["replicas"] == 1

        def top_paths() -> set:
            snap = json.loads(mesh.cli("top", "productpage-v1", "--iterations", "1", "-o", "json").stdout.splitlines()[-1])
            return {(p["direction"], p["path"]) for p in snap["paths"]}
        want = {("inbound", "/productpage"), ("outbound", "/reviews/0"), ("outbound", "/details/0")}
        until(lambda: want <= top_paths(), 15, 1.0, what="mizzen top shows the paths of the requests since it began")
        assert "PATH" in mesh.cli("top", "productpage-v1", "--iterations", "1").stdout

        out = mesh.cli("tap", "productpage-v1", "--path", "/reviews", "--max", "3", "--seconds", "30", "-o", "json")
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        assert len(rows) == 3, out.stdout + out.stderr + f" (background load still running: {load.poll() is None})"
        for r in rows:
            assert r["method"] == "GET" and r["path"].startswith("/reviews") and r["status"] == 200, r
            assert r["source"] == "productpage-v1.default" and r["destination"].startswith("reviews-v3"), r
            assert r["authority"].startswith("reviews") and r["latencyMs"] is not None, r
        assert "stopped by count" in out.stderr
        table = mesh.cli("tap", "productpage-v1", "--path", "/productpage", "--max", "2", "--seconds", "30").stdout
        # an inbound request: from the caller's workload to this one's app
        assert "sleep.default" in table and "productpage-v1.default" in table, table
    finally:
        stop.touch()
        load.wait(120)
    bad = mesh.cli("tap", "no-such-workload", check=False)
    assert bad.returncode == 1 and "no running sidecar of workload default/no-such-workload" in bad.stderr, bad.stderr
    assert "--path must start with '/'" in mesh.cli("tap", "productpage-v1", "--path", "x", check=False).stderr

    # nothing is tapped while nobody watches: Envoy's tap counters stand still under traffic
    admin = EnvoyAdmin(StateLayout(str(mesh.state_dir)).pod("productpage-v1-0").admin_socket)

    def tapped() -> int:
        stats = admin.get_json("/stats?format=json&filter=tap.rq_tapped").get("stats", [])
        return sum(int(s.get("value") or 0) for s in stats if "value" in s)
    before = tapped()
    assert before > 0
    mesh.load("sleep", "http://productpage:9080/productpage", count=20)
    assert tapped() == before


def agent_tap(mesh: Mesh, pod: str, timeout: float = 60, **body) -> tuple[int, list[dict]]:
    """POST /tap on the pod's agent socket (what the control plane's fan-out calls): (status, JSON lines)."""
    from mizzen.client import unix_request
    status, raw = unix_request(StateLayout(str(mesh.state_dir)).pod(pod).agent_socket, "POST", "/tap",
                               json.dumps(body).encode(), {"Content-Type": "application/json"}, timeout=timeout)
    return status, [json.loads(ln) for ln in raw.decode().splitlines() if ln.strip()]


def test_tap_watchers_share_one_session_and_every_watch_is_bounded(mesh: Mesh) -> None:
    """Envoy allows one admin tap session per config id: the agent fans one session out to its watchers, each
    with its own filter and bounds (rows, seconds, bytes), at most 8 at once."""
    from concurrent.futures import ThreadPoolExecutor
    stop = mesh.state_dir.parent / "stop-load-tap"
    load = mesh.load_background("sleep", "http://productpage:9080/productpage", rps=20, seconds=300, stop_file=stop)
    try:
        with ThreadPoolExecutor(4) as pool:  # two watchers at once, different filters, one sidecar
            rv = pool.submit(agent_tap, mesh, "productpage-v1-0", path="/reviews", max=4, seconds=30)
            dt = pool.submit(agent_tap, mesh, "productpage-v1-0", path="/details", max=4, seconds=30)
            (s1, reviews), (s2, details) = rv.result(), dt.result()
        assert s1 == s2 == 200
        assert [r["path"][:8] for r in reviews[:-1]] == ["/reviews"] * 4 and reviews[-1]["reason"] == "count"
        assert [r["path"][:8] for r in details[:-1]] == ["/details"] * 4 and details[-1]["reason"] == "count"
        # bytes: rows stop before the watch has delivered more than it allows (1 KiB: a few rows)
        status, rows = agent_tap(mesh, "productpage-v1-0", max=1000, seconds=30, bytes=1024)
        assert status == 200 and rows[-1]["reason"] == "bytes" and 1 <= rows[-1]["rows"] < 10, rows[-1]
        assert sum(len(json.dumps(r)) for r in rows[:-1]) <= 1024
        # time: a filter nothing matches ends by the clock
        t0 = time.monotonic()
        status, rows = agent_tap(mesh, "productpage-v1-0", path="/nothing-here", max=5, seconds=2)
        assert status == 200 and rows == [{"event": "end", "reason": "time", "rows": 0, "dropped": 0}], rows
        assert time.monotonic() - t0 < 30  # a hang guard (the reason above says the clock ended it)
        # at most 8 watchers: a ninth is refused at once (429), the others run out their time
        with ThreadPoolExecutor(9) as pool:
            futs = [pool.submit(agent_tap, mesh, "productpage-v1-0", path="/nothing-here", seconds=6)
                    for _ in range(9)]
            statuses = sorted(f.result()[0] for f in futs)
        assert statuses == [200] * 8 + [429], statuses
    finally:
        stop.touch()
        load.wait(120)


# ---------------------------------------------------------------------------------------------- Prometheus

@pytest.fixture(scope="module")
def prometheus(mesh: Mesh):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("needs Debian's prometheus (make sysdeps)")
    work = Path(tempfile.mkdtemp(prefix="mizzen-e2e-prom-"))
    mesh.cli("prometheus-config", "-o", str(work / "prometheus.yml"), "--scrape-interval", "2s")
    port = free_port()
    log = open(work / "prometheus.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h",
                             "--web.enable-lifecycle"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready():
            try:
                with urllib.request.urlopen(base + "/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return proc.poll() is not None and pytest.fail((work / "prometheus.log").read_text()[-2000:])
        until(ready, 60, what="prometheus ready")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def query(base: str, promql: str) -> list[dict]:
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as r:
        data = json.loads(r.read())
    assert data["status"] == "success", data
    return data["data"]["result"]


def test_prometheus_sees_the_applied_split(mesh: Mesh, prometheus: str) -> None:
    mesh.apply(NET / "destination-rule-all.yaml", NET / "virtual-service-reviews-90-10.yaml")
    mesh.wait_synced()

    def targets_up():
        with urllib.request.urlopen(prometheus + "/api/v1/targets", timeout=10) as r:
            active = json.loads(r.read())["data"]["activeTargets"]
        up = {(t["labels"]["job"], t["labels"].get("instance")) for t in active if t["health"] == "up"}
        return up if ("mizzen-controlplane", "controlplane") in up and ("mizzen-sidecars", "reviews-v1-0") in up \
            and len([u for u in up if u[0] == "mizzen-sidecars"]) == 7 else None
    until(targets_up, 60, 1.0, what="every sidecar and the control plane scraped")
    stop = mesh.state_dir.parent / "stop-load-prometheus"
    load = mesh.load_background("sleep", "http://reviews:9080/reviews/0", rps=40, seconds=150, stop_file=stop)
    try:
        promql = 'sum(rate(istio_requests_total{destination_service=~"reviews.*"}[30s])) by (destination_version)'

        seen: list = []

        def split():
            # versions that got traffic earlier and none now stay in the result with a rate of 0
            res = {r["metric"].get("destination_version"): float(r["value"][1]) for r in query(prometheus, promql)
                   if float(r["value"][1]) > 0}
            seen[:] = [res, query(prometheus, "count(istio_requests_total)")]
            total = sum(res.values())
            return res if total > 0 and len(res) == 2 and time.monotonic() - t0 > 35 else None
        t0 = time.monotonic()
        try:
            res = until(split, 90, 2.0, what="a 90/10 split in Prometheus")
        except AssertionError:
            raise AssertionError(f"no 90/10 split in Prometheus within 90 s: {seen}") from None
    finally:
        stop.touch()
        load.wait(120)
    total = sum(res.values())
    shares = {v: x / total for v, x in res.items()}
    assert set(shares) == {"v1", "v2"}, res
    assert 0.84 <= shares["v1"] <= 0.96 and 0.04 <= shares["v2"] <= 0.16, shares
    # the control plane's own metrics are there too
    assert query(prometheus, 'mizzen_xds_connected_proxies{job="mizzen-controlplane"}')
    assert query(prometheus, "sum(mizzen_xds_push_latency_seconds_count) > 0")


def test_prometheus_targets_follow_sidecars_that_come_and_go(mesh: Mesh, prometheus: str) -> None:
    """The control plane keeps the file-based service discovery current: a Workload applied after `up` is
    scraped once its sidecar runs, and dropped when it is deleted."""
    from tests.e2e.mesh import SLEEP_COMMAND

    def targets() -> dict[str, str]:
        with urllib.request.urlopen(prometheus + "/api/v1/targets", timeout=10) as r:
            active = json.loads(r.read())["data"]["activeTargets"]
        return {t["labels"].get("instance"): t["health"] for t in active if t["labels"]["job"] == "mizzen-sidecars"}
    mesh.apply_text(f"""apiVersion: mizzen.dev/v1
kind: Workload
metadata: {{name: sleep2, labels: {{app: sleep2}}}}
spec:
  command: {SLEEP_COMMAND}
""")
    try:
        # a pod started after `up` is named <workload>-<hash>
        up = until(lambda: (t := targets()) and [h for i, h in t.items() if i.startswith("sleep2-")] == ["up"] and t,
                   90, 1.0, what="the new sidecar scraped by Prometheus")
        assert len(up) == 8, up
    finally:
        mesh.cli("delete", "workload", "sleep2", timeout=180)
    gone = until(lambda: (t := targets()) and not any(i.startswith("sleep2-") for i in t) and t, 90, 1.0,
                 what="the deleted sidecar dropped")
    assert len(gone) == 7 and set(gone.values()) == {"up"}, gone


# ---------------------------------------------------------------------------------------------- cardinality

def test_a_thousand_distinct_paths_keep_the_series_count_flat(mesh: Mesh) -> None:
    mesh.apply(NET / "destination-rule-all.yaml", NET / "virtual-service-all-v1.yaml")  # one edge: sleep -> v1
    mesh.wait_synced()
    mesh.load("sleep", "http://reviews:9080/reviews/0", count=20)
    time.sleep(2.5)  # Envoy flushes the access-log stream every second

    def series(pod: str) -> set[str]:
        return {ln.split(" ")[0] for ln in scrape(mesh, pod).splitlines() if ln.startswith("istio_")}
    before = {p: series(p) for p in ("sleep-0", "reviews-v1-0")}
    code = ("import urllib.request\n"
            "for i in range(1000):\n"
            "    urllib.request.urlopen(f'http://reviews:9080/reviews/{i}?q=p{i}', timeout=10).read()\n")
    p = mesh.exec("sleep", "python3", "-c", code, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    time.sleep(2.5)
    for pod, old in before.items():
        text = scrape(mesh, pod)
        now = {ln.split(" ")[0] for ln in text.splitlines() if ln.startswith("istio_")}
        assert now == old, (pod, sorted(now - old)[:5])
        assert "/reviews/999" not in text and "q=p" not in text  # no path ever becomes a label


STREAM_RATINGS = """apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ratings-stream, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  metrics: [{providers: [{name: access-log-stream}]}]
"""


def test_metrics_are_counted_inside_envoy_by_default_and_the_stream_provider_gives_the_same_labels(mesh: Mesh) -> None:
    """By default ratings' Envoy counts the requests itself (stats access logger, no access-log entry), and the
    agent's scrape shows them as Istio series with the caller named from the directory and both SPIFFE identities
    from the mTLS hop; `mizzen top` samples the stream only once it is read. A Telemetry naming
    `access-log-stream` moves the counting to the agent: Envoy's counter stops, the same labels keep growing, and
    top has paths without a first read."""
    admin = EnvoyAdmin(StateLayout(str(mesh.state_dir)).pod("ratings-v1-0").admin_socket)

    def envoy_count() -> int:
        stats = admin.get_json("/stats?format=json&filter=^mizzen\\.requests_total").get("stats", [])
        return sum(int(s.get("value") or 0) for s in stats if "value" in s)

    def from_sleep() -> float:
        return sum(s.value for s in istio_requests(scrape(mesh, "ratings-v1-0"))
                   if s.labels["reporter"] == "destination" and s.labels["source_workload"] == "sleep")

    def labels_from_sleep() -> list[dict]:
        return [s.labels for s in istio_requests(scrape(mesh, "ratings-v1-0"))
                if s.labels["reporter"] == "destination" and s.labels["source_workload"] == "sleep"]

    def top_paths() -> set:
        snap = json.loads(mesh.cli("top", "ratings-v1", "--iterations", "1", "-o", "json").stdout.splitlines()[-1])
        return {(p["direction"], p["path"]) for p in snap["paths"]}
    want = {"source_principal": SPIFFE + "sleep", "destination_workload": "ratings-v1",
            "destination_principal": SPIFFE + "bookinfo-ratings", "destination_service_name": "ratings",
            "connection_security_policy": "mutual_tls", "response_code": "200", "request_protocol": "http"}
    mesh.wait_synced()
    envoy0, before = envoy_count(), from_sleep()
    mesh.load("sleep", "http://ratings:9080/ratings/0", count=20)
    until(lambda: envoy_count() >= envoy0 + 20, 15, what="ratings' Envoy counted the requests itself")
    until(lambda: from_sleep() - before >= 20, 15, what="the agent's scrape shows them as Istio series")
    text = scrape(mesh, "ratings-v1-0")
    assert "envoy_mizzen_" not in text
    mine = labels_from_sleep()
    assert mine and all({k: lb[k] for k in want} == want for lb in mine), mine
    # the golden window has them (from the growth of Envoy's series), and `mizzen top` samples the stream
    # while it runs: the first read turns the sampling on, requests after it show their paths
    until(lambda: any(r["requests"] >= 20 for r in cli_json(mesh, "stat", "service", "ratings", "--by", "caller")
                      if r["caller"] == "sleep"), 30, what="mizzen stat counts the natively counted requests")
    assert ("inbound", "/ratings/7") not in top_paths()
    mesh.load("sleep", "http://ratings:9080/ratings/7", count=10)
    until(lambda: ("inbound", "/ratings/7") in top_paths(), 15, what="mizzen top shows the sampled paths")

    mesh.apply_text(STREAM_RATINGS)
    try:
        mesh.wait_synced()
        # requests on connections opened before the switch are still served (and counted) by the old filter
        # chain until it drains; once it has, Envoy frees its series (the agent keeps their last values)
        until(lambda: envoy_count() == 0, 60, what="ratings' old filter chain drained (Envoy freed its series)")
        envoy1, before = envoy_count(), from_sleep()
        mesh.load("sleep", "http://ratings:9080/ratings/8", count=20)
        until(lambda: from_sleep() - before >= 20, 15, what="the agent counts the stream's requests")
        # Envoy no longer counts them (it frees the old chain's series once that has drained: the agent keeps
        # counting from their last values, native.Cumulative — or the growth above would have been negative)
        assert envoy_count() <= envoy1
        mine = labels_from_sleep()
        assert mine and all({k: lb[k] for k in want} == want for lb in mine), mine
        assert ("inbound", "/ratings/8") in top_paths()  # the stream feeds top at all times
    finally:
        mesh.cli("delete", "telemetry", "ratings-stream", "-n", "default")
        mesh.wait_synced()


# ---------------------------------------------------------------------------------------------- control plane

def cp_metrics(mesh: Mesh, where: str = "monitoring") -> dict[tuple[str, tuple], float]:
    """The control plane's own metrics: from its monitoring port, or from `/metrics` on the API socket."""
    if where == "monitoring":
        with urllib.request.urlopen(f"http://{endpoints(mesh)['monitoring']}/metrics", timeout=10) as r:
            text = r.read().decode()
    else:
        from mizzen.client import unix_request
        token = (mesh.state_dir / "admin.token").read_text().strip()
        status, raw = unix_request(str(mesh.state_dir / "api.sock"), "GET", "/metrics",
                                   headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert status == 200, raw[:300]
        text = raw.decode() if isinstance(raw, bytes) else raw
    return {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
            for f in text_string_to_metric_families(text) for smp in f.samples}


def test_control_plane_metrics_record_applies_rejections_pushes_and_nacks(mesh: Mesh) -> None:
    """What the control plane records where things happen, read as Prometheus would (monitoring port and the
    API socket's /metrics): proxies, registry and store, applies and rejections by kind, pushes and ACK
    latency per type, a NACK with its type, REST latency by route pattern (never a raw path)."""
    def settled():  # Bookinfo's 7 sidecars (a workload or service an earlier test added is gone again)
        m = cp_metrics(mesh)
        sidecars = sum(v for (n, lb), v in m.items() if n == "mizzen_xds_connected_proxies" and ("kind", "sidecar") in lb)
        return m if (sidecars, m.get(("mizzen_registry_instances", (("healthy", "true"),))),
                     m.get(("mizzen_registry_services", ()))) == (7, 7, 4) else None  # 4: details ... productpage
    before = until(settled, 60, 1.0, what="7 connected sidecars, 7 healthy instances and 4 services")
    both = cp_metrics(mesh, "api")
    names = {n for n, _ in before}
    assert names == {n for n, _ in both}  # one registry, two doors
    assert before[("mizzen_store_revision", ())] > 0
    assert "mizzen_push_debounce_merges_total" in names

    def val(m: dict, name: str, **labels: str) -> float:
        return m.get((name, tuple(sorted(labels.items()))), 0.0)
    bad = mesh.apply_text(TRACE_ALL.replace("randomSamplingPercentage: 100", "randomSamplingPercentage: 250"),
                          check=False)
    assert bad.returncode != 0, bad.stdout
    # a route change every sidecar gets, whatever earlier tests left (a timeout no test uses elsewhere)
    mesh.apply(NET / "destination-rule-all.yaml")
    mesh.apply_text(f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http: [{{timeout: {100 + int(time.time()) % 800}s, route: [{{destination: {{host: reviews, subset: v1}}}}]}}]
""")
    mesh.wait_synced()
    after = cp_metrics(mesh)
    assert val(after, "mizzen_config_rejections_total", kind="Telemetry") == \
        val(before, "mizzen_config_rejections_total", kind="Telemetry") + 1
    assert val(after, "mizzen_config_applies_total", result="rejected") > val(before, "mizzen_config_applies_total",
                                                                            result="rejected")
    assert val(after, "mizzen_config_applies_total", result="applied") > val(before, "mizzen_config_applies_total",
                                                                           result="applied")
    assert after[("mizzen_store_revision", ())] > before[("mizzen_store_revision", ())]
    # the route change reached every sidecar and was ACKed: RDS pushes with a change -> ACK latency observed
    assert val(after, "mizzen_xds_push_latency_seconds_count", type="RDS") > \
        val(before, "mizzen_xds_push_latency_seconds_count", type="RDS")
    assert val(after, "mizzen_xds_pushes_total", type="RDS") > val(before, "mizzen_xds_pushes_total", type="RDS")
    routes = {dict(lb).get("route") for (n, lb) in after if n == "mizzen_api_request_duration_seconds_count"}
    assert "/api/v1/apply" in routes and not any("reviews" in (r or "") for r in routes), routes

    # a listener the sidecar cannot bind: Envoy NACKs it, counted by type
    mesh.apply_text(SQUAT)
    try:
        until(lambda: val(cp_metrics(mesh), "mizzen_xds_nacks_total", type="LDS")
              > val(before, "mizzen_xds_nacks_total", type="LDS"), 60, 1.0, what="an LDS NACK counted")
    finally:
        mesh.cli("delete", "envoypatch", "squat-9080")
    mesh.wait_synced()


# ---------------------------------------------------------------------------------------------- the console

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.console.conftest import browser, shot  # noqa: E402,F401  (the headless Chromium fixture)

SQUAT = """apiVersion: mizzen.dev/v1
kind: EnvoyPatch
metadata: {name: squat-9080, namespace: default}
spec:
  workloadSelector: {labels: {app: ratings}}
  patches:
  - applyTo: LISTENER
    operation: ADD
    value:
      name: squatter
      address: {socket_address: {address: 0.0.0.0, port_value: 9080}}
      filter_chains:
      - filters:
        - name: envoy.filters.network.tcp_proxy
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
            stat_prefix: squatter
            cluster: BlackHoleCluster
"""


def test_dashboard_prints_the_url_and_opens_a_browser_only_with_a_display(mesh: Mesh, tmp_path: Path) -> None:
    """The contract of `mizzen dashboard [--no-browser]`: the URL on stdout, and a browser (whatever $BROWSER
    names, as Python's webbrowser does; here a script that records the URL it was given) only when there is a
    display and --no-browser was not given."""
    marker = tmp_path / "opened"
    browser_cmd = tmp_path / "browser.sh"
    browser_cmd.write_text(f'#!/bin/sh\necho "$1" >> {marker}\n')
    browser_cmd.chmod(0o755)
    base_env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    base_env["BROWSER"] = f"{browser_cmd} %s"

    def dashboard(*args: str, display: bool) -> str:
        env = dict(base_env, **({"DISPLAY": ":99"} if display else {}))
        p = subprocess.run([sys.executable, "-m", "mizzen.cli.main", "dashboard", "--state-dir", str(mesh.state_dir),
                            *args], capture_output=True, text=True, timeout=60, env=env)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()
    url = dashboard(display=False)
    assert "/topology?token=" in url and not marker.exists()  # no display: the URL only
    assert dashboard("--no-browser", display=True) == url and not marker.exists()
    assert dashboard(display=True) == url
    assert marker.read_text().split() == [url]  # the browser was given the URL, once


def test_console_on_a_running_mesh(mesh: Mesh, browser, tmp_path: Path) -> None:  # noqa: F811
    mesh.apply(NET / "destination-rule-all.yaml", NET / "virtual-service-reviews-90-10.yaml")
    mesh.wait_synced()
    url = mesh.cli("dashboard", "--no-browser").stdout.strip()
    assert "/topology?token=" in url
    base = url.split("/topology")[0]
    browser.get(base + "/topology")
    assert "Not signed in" in browser.page_source  # no token, no console
    browser.get(url)  # sets the session cookie and drops the token from the address
    WebDriverWait(browser, 20).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#topology-graph canvas")))
    assert "token" not in browser.current_url
    # the console reads the REST API, which asks every caller for a token: no page shows an error banner
    for page in ("topology", "services", "proxies", "config"):
        browser.get(f"{base}/{page}")
        banners = [b.text for b in browser.find_elements(By.CSS_SELECTOR, ".banner.error")]
        assert not banners, (page, banners)

    stop = mesh.state_dir.parent / "stop-load-console"
    load = mesh.load_background("sleep", "http://productpage:9080/productpage", rps=20, seconds=600, stop_file=stop)
    try:
        seen: list = []

        def split(_):
            browser.get(base + "/topology")
            shares = browser.execute_script(
                "return window.mizzenGraph ? window.mizzenGraph.edges().filter(e => e.data('kind') == 'split' && "
                "e.data('source') == 's:reviews.default.svc.cluster.local').map(e => "
                "[e.data('version'), e.data('share'), e.data('requests')]) : [];")
            call = browser.execute_script(
                "var e = window.mizzenGraph.getElementById("
                "'w:default/productpage-v1->s:reviews.default.svc.cluster.local'); return e.length ? e.data() : null;")
            seen[:] = [shares, call]
            share = {v: s for v, s, _ in shares}
            # the split of the last minute's requests to reviews from every caller: wait until the traffic of
            # earlier tests (e.g. 1000 requests from sleep to v1 only) has left that window
            return call and sum(r for _, _, r in shares) >= 300 and set(share) == {"v1", "v2"} and \
                0.8 <= share["v1"] <= 0.97 and 0.03 <= share["v2"] <= 0.2
        try:
            WebDriverWait(browser, 180, 2).until(split)
        except Exception:
            raise AssertionError(f"no productpage -> reviews edge with the applied 90/10 split: {seen}") from None
        shares, call = seen
        share = {v: s for v, s, _ in shares}
        assert 0.8 <= share["v1"] <= 0.97 and 0.03 <= share["v2"] <= 0.2, shares  # the applied 90/10
        assert call["kind"] == "call" and call["success_rate"] == 1.0 and call["health"] == "ok", call
        rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#edges tbody tr")]
        assert any(r.startswith("productpage-v1.default reviews.default call") for r in rows), rows
        shot(browser, tmp_path, "topology")
    finally:
        stop.touch()
        load.wait(120)

    # a NACKed proxy shows Envoy's own error: a listener that cannot bind (the app holds port 9080); Envoy's
    # `--mode validate`, which checks an EnvoyPatch at apply, does not bind, so only the sidecar can refuse it
    mesh.apply_text(SQUAT)
    try:
        def nacked(_):
            browser.get(base + "/proxies")
            return "NACKED" in browser.find_element(By.ID, "proxies").text
        WebDriverWait(browser, 60, 1).until(nacked)
        table = browser.find_element(By.ID, "proxies")
        row = next(r for r in table.find_elements(By.CSS_SELECTOR, "tbody tr") if "ratings-v1-0" in r.text)
        err = row.find_element(By.CLASS_NAME, "nack-error").text
        assert "9080" in err and ("cannot bind" in err or "Address already in use" in err), err
        shot(browser, tmp_path, "proxies-nacked")
    finally:
        mesh.cli("delete", "envoypatch", "squat-9080")
    mesh.wait_synced()

    # an invalid VirtualService typed into the editor: the field error is shown and nothing changes
    before = mesh.api_get("/api/v1/resources/VirtualService/default/reviews")
    browser.get(base + "/config/VirtualService/default/reviews")
    editor = WebDriverWait(browser, 20).until(EC.presence_of_element_located((By.ID, "editor")))
    text = editor.get_attribute("value")
    assert "weight: 90" in text
    # a negative weight: Istio refuses it (95 + 10 would be valid: Istio takes weights as relative, not as
    # percentages that must sum to 100)
    browser.execute_script("arguments[0].value = arguments[1];", editor, text.replace("weight: 90", "weight: -5"))
    browser.find_element(By.ID, "apply").click()
    issues = WebDriverWait(browser, 20).until(EC.presence_of_element_located((By.ID, "issues")))
    assert "spec.http[0].route[0].weight" in issues.text and "greater than or equal to 0" in issues.text, issues.text
    shot(browser, tmp_path, "editor-invalid")
    assert mesh.api_get("/api/v1/resources/VirtualService/default/reviews") == before


RATINGS_ABORT = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault: {abort: {percentage: {value: 100}, httpStatus: 503}}
    route: [{destination: {host: ratings, subset: v1}}]
"""


def test_console_live_trace_failing_calls_node_details_and_tap(mesh: Mesh, browser,  # noqa: F811
                                                                tmp_path: Path) -> None:
    """The mesh's own console (the one `mizzen up` serves, reading the control plane's trace store and fanning
    out to the agents): the productpage -> reviews -> ratings trace as a waterfall, a failing edge drawn red, a
    click on a node, and the Tap page."""
    from selenium.webdriver.common.action_chains import ActionChains
    mesh.apply_text(TRACE_ALL)
    mesh.apply(NET / "destination-rule-all.yaml", NET / "virtual-service-reviews-v3.yaml")  # v3 calls ratings
    mesh.wait_synced()
    url = mesh.cli("dashboard", "--no-browser").stdout.strip()
    base = url.split("/topology")[0]
    browser.get(url)
    # the trace of one request through productpage -> reviews -> ratings, as a waterfall in the console
    mesh.load("sleep", "http://productpage:9080/productpage", count=3)

    def found():  # a complete trace: each sidecar ships its spans on its own schedule
        for t in cli_json(mesh, "traces", "--service", "ratings-v1"):
            if {"productpage-v1", "reviews-v3", "ratings-v1"} <= set(t["services"]):
                spans = cli_json(mesh, "traces", t["traceId"])["spans"]
                ids = {sp["spanId"] for sp in spans}
                if sum(1 for sp in spans if sp["parentId"] not in ids) == 1:
                    return t
        return None
    trace_id = until(found, 40, 1.0, what="a complete trace through productpage, reviews and ratings")["traceId"]
    browser.get(f"{base}/traces?service=ratings-v1")
    # (the embedded console once read a store the collector never filled: "No traces yet." forever)
    try:
        WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#traces tbody tr"))
    except Exception:
        raise AssertionError(f"the console lists no trace: {browser.find_element(By.TAG_NAME, 'main').text}") from None
    browser.find_element(By.CSS_SELECTOR, f"#traces a[href='/traces/{trace_id}']").click()
    fall = WebDriverWait(browser, 20).until(EC.presence_of_element_located((By.ID, "waterfall")))
    rows = fall.find_elements(By.CLASS_NAME, "span-row")
    ids = {r.get_attribute("data-span-id") for r in rows}
    assert all(r.get_attribute("data-parent-id") in ids for r in rows[1:]), "every span but the root has its parent"
    text = fall.text
    assert all(sv in text for sv in ("productpage-v1", "reviews-v3", "ratings-v1")), text
    shot(browser, tmp_path, "trace-three-sidecars")

    mesh.apply_text(RATINGS_ABORT)
    try:
        mesh.wait_synced()
        mesh.load("sleep", "http://productpage:9080/productpage", count=30)
        edge_id = "w:default/reviews-v3->s:ratings.default.svc.cluster.local"
        seen: list = []

        def red(_):
            browser.get(base + "/topology")
            WebDriverWait(browser, 20).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#topology-graph canvas")))
            got = browser.execute_script(
                "var e = window.mizzenGraph.getElementById(arguments[0]);"
                "return e.length ? [e.data('health'), e.data('success_rate'), e.style('line-color')] : null;", edge_id)
            seen[:] = [got]
            return got and got[0] == "fail"
        try:
            WebDriverWait(browser, 60, 2).until(red)
        except Exception:
            raise AssertionError(f"no red edge reviews-v3 -> ratings: {seen}") from None
        health, rate, color = seen[0]
        # every call since the abort fails (the window still holds the three traced ones): below 95 %, red
        assert rate < 0.95 and color in ("rgb(211,59,59)", "#d33b3b"), seen
        shot(browser, tmp_path, "topology-failing")
        # a real click on the productpage node (cytoscape draws on a canvas: click where it drew the node)
        canvas = browser.find_element(By.ID, "topology-graph")
        x, y = browser.execute_script(
            "var p = window.mizzenGraph.getElementById('w:default/productpage-v1').renderedPosition();"
            "return [p.x, p.y];")
        ActionChains(browser).move_to_element_with_offset(canvas, int(x - canvas.size["width"] / 2),
                                                          int(y - canvas.size["height"] / 2)).click().perform()
        details = WebDriverWait(browser, 10).until(
            lambda b: (t := b.find_element(By.ID, "node-details").text) and "productpage-v1" in t and t)
        assert "Workload productpage-v1" in details and "instances: 1 (1 healthy)" in details, details
        assert "s:reviews.default.svc.cluster.local" in details, details  # its edges, with their golden metrics
        shot(browser, tmp_path, "node-details")
    finally:
        mesh.cli("delete", "virtualservice", "ratings")

    # the Tap page: the live requests of a workload, through the control plane's fan-out to its agents
    from selenium.webdriver.support.ui import Select
    stop = mesh.state_dir.parent / "stop-load-console-tap"
    load = mesh.load_background("sleep", "http://productpage:9080/productpage", rps=10, seconds=120, stop_file=stop)
    try:
        browser.get(base + "/tap")
        WebDriverWait(browser, 20).until(EC.presence_of_element_located((By.ID, "tap-path"))).send_keys("/reviews")
        Select(browser.find_element(By.ID, "tap-workload")).select_by_value("default/productpage-v1")
        mx = browser.find_element(By.ID, "tap-max")
        mx.clear()
        mx.send_keys("3")
        browser.find_element(By.ID, "tap-start").click()
        WebDriverWait(browser, 30).until(lambda d: "Done" in d.find_element(By.ID, "tap-status").text)
        events = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#tap-events tr.tap-event")]
        assert len(events) == 3 and all("/reviews/" in e and "GET" in e and "200" in e for e in events), events
        assert all("productpage-v1.default" in e for e in events), events  # the source, named
        shot(browser, tmp_path, "tap")
    finally:
        stop.touch()
        load.wait(120)


# ---------------------------------------------------------------------------------------------- an external collector

PROVIDERS = {
    "opentelemetry": "opentelemetry: {{service: {name}.default.svc.cluster.local, port: 4317}}",
    "zipkin": "zipkin: {{service: {name}.default.svc.cluster.local, port: 9411}}",
}


def collector_name(kind: str) -> str:
    """One collector per case: after a Telemetry change, connections opened before it keep the old filter
    chain's tracer until they drain (Envoy's listener-update drain, as in Istio), so a collector of the same
    name in the next case would receive the previous case's spans (seen: OpenTelemetry-named spans at the
    Zipkin case's collector)."""
    return f"collector-{kind}"


def collector_mesh_text(kind: str) -> str:
    """A collector as a workload of the mesh (the project's receiver: OTLP/gRPC on 4317, Zipkin v2 on 9411; any
    OpenTelemetry Collector, Jaeger or Tempo takes its place the same way), the provider that names it, and
    a Telemetry that sends productpage's spans there: the other workloads keep the embedded collector."""
    name = collector_name(kind)
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 4317, name: grpc-otlp}}, {{port: 9411, name: http-zipkin}}]
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  command: [{sys.executable}, -m, mizzen.telemetry.otlp_server, --grpc, "0.0.0.0:4317", --http, "0.0.0.0:9411"]
  ports: [{{containerPort: 4317}}, {{containerPort: 9411}}]
---
apiVersion: mizzen.dev/v1
kind: ExtensionProvider
metadata: {{name: external, namespace: default}}
spec:
  {PROVIDERS[kind].format(name=name)}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: productpage-to-external, namespace: default}}
spec:
  selector: {{matchLabels: {{app: productpage}}}}
  tracing: [{{providers: [{{name: external}}], randomSamplingPercentage: 100}}]
"""


@pytest.mark.parametrize("kind", sorted(PROVIDERS))
def test_a_workloads_spans_go_to_an_external_collector_named_at_runtime(mesh: Mesh, kind: str) -> None:
    mesh.apply_text(TRACE_ALL)  # the mesh default: every request traced, to the embedded collector
    mesh.apply(NET / "destination-rule-all.yaml", NET / "virtual-service-reviews-v3.yaml")
    collector = collector_name(kind)
    mesh.apply_text(collector_mesh_text(kind))
    try:
        until(lambda: collector in json.dumps(mesh.proxy_status()), 120, 1.0, what="the collector's sidecar")
        mesh.wait_synced()

        def collected() -> list[dict]:
            p = mesh.exec(collector, "curl", "-s", "--max-time", "5", "http://127.0.0.1:9411/api/v1/traces")
            try:
                items = json.loads(p.stdout or "{}").get("items", [])
            except ValueError:
                return []
            return [t for t in items if any(sv.startswith("productpage") for sv in t.get("services", ()))]

        def request_and_collect():
            p = mesh.exec("sleep", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                          "http://productpage:9080/productpage")
            assert p.stdout.strip() == "200", p.stdout + p.stderr
            return collected()
        external = until(request_and_collect, 60, 2.0, what=f"productpage's spans at the external {kind} collector")
        # productpage's spans went there instead of to the embedded collector; its callers and callees still
        # report to the embedded one (one tracer per sidecar: the workload's Telemetry switched only its own)
        ids = {t["traceId"] for t in external}

        def joined_traces() -> list[dict]:  # the other sidecars ship their spans on their own flush schedule
            embedded = cli_json(mesh, "traces", "--service", "reviews-v3", "--limit", "200")
            return [t for t in embedded if t["traceId"] in ids]
        joined = until(joined_traces, 30, 1.0, what=f"reviews-v3's spans of trace {sorted(ids)} at the embedded store")
        for t in joined:
            assert "productpage-v1" not in t["services"] and "reviews-v3" in t["services"], t
        # (Envoy's OpenTelemetry tracer names the service as configured, <workload>.<namespace>; the Zipkin
        # tracer after the node's cluster, the workload)
        name = "productpage-v1.default" if kind == "opentelemetry" else "productpage-v1"
        assert all(set(t["services"]) == {name} for t in external), external
    finally:
        mesh.cli("delete", "telemetry", "productpage-to-external", check=False)
        mesh.cli("delete", "extensionprovider", "external", check=False)
        mesh.cli("delete", "workload", collector, check=False, timeout=180)
        mesh.cli("delete", "service", collector, check=False)
