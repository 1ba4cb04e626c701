"""Real Envoys (static bootstraps, tests/telemetry/rig.py) feeding the real receivers: Istio metrics from the
access-log stream, bounded cardinality, spans across two sidecars (OpenTelemetry: W3C; Zipkin: B3 + W3C),
and the tap filter driven from the admin endpoint."""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import shutil
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mizzen.agent.telemetry import tap_events
from mizzen.telemetry.tap import tap_request
from tests.telemetry.cost import Receivers
from tests.telemetry.rig import APP_IP, Options, Rig, free_port

pytestmark = pytest.mark.e2e


def wait_for(pred, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def work():
    d = tempfile.mkdtemp(prefix="mizzen-telemetry-e2e-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def series(text: str, family: str) -> list:
    return [s for f in text_string_to_metric_families(text) if f.name == family for s in f.samples]


def test_istio_metrics_from_the_access_log_stream_on_both_sides(work):
    recv = Receivers(work)
    try:
        with Rig(Options(metrics=True, telemetry_sockets=recv.socks), work=work) as rig:
            for path in ("/a", "/fail", "/grpcfail", "/b"):
                rig.get(path)
            want = {"200": 3, "503": 1}

            def counts(i: int) -> dict:
                out: dict[str, float] = {}
                for s in series(recv.metrics(i), "istio_requests"):
                    out[s.labels["response_code"]] = out.get(s.labels["response_code"], 0) + s.value
                return out
            for i, reporter in ((0, "source"), (1, "destination")):
                wait_for(lambda: counts(i) == want, what=f"{reporter} counts {want}")
                for s in series(recv.metrics(i), "istio_requests"):
                    assert s.labels["reporter"] == reporter
                    assert (s.labels["source_workload"], s.labels["destination_workload"]) == ("productpage-v1", "reviews-v1")
                    assert s.labels["destination_service"] == "reviews.default.svc.cluster.local"
                    assert s.labels["destination_version"] == "v1"
                grpc = [s for s in series(recv.metrics(i), "istio_requests") if s.labels["grpc_response_status"] == "14"]
                assert len(grpc) == 1 and grpc[0].labels["request_protocol"] == "grpc"
            dur = [s for s in series(recv.metrics(1), "istio_request_duration_milliseconds")
                   if s.name.endswith("_count")]
            assert sum(s.value for s in dur) == 4
    finally:
        recv.stop()


REQUESTS = ("/a", "/fail", "/grpcfail", "/b")


def _istio_series(text: str) -> dict:
    """{(family, labels without le): value} of the Istio request families (counters and histogram counts)."""
    out = {}
    for f in text_string_to_metric_families(text):
        if f.name in ("istio_requests", "istio_request_duration_milliseconds", "istio_request_bytes",
                      "istio_response_bytes"):
            for s in f.samples:
                if s.name.endswith("_total") or s.name.endswith("_count"):
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _metrics_of(work: str, opts: Options) -> tuple[dict, dict, str, tuple]:
    os.makedirs(work, exist_ok=True)
    rig = Rig(opts, work=work)
    recv = Receivers(work, admin=rig.admin)
    try:
        with rig:
            for path in REQUESTS:
                rig.get(path)
            want = len(REQUESTS)

            def complete() -> tuple[dict, dict] | None:  # both sides counted every request, histograms flushed
                got = tuple(_istio_series(recv.metrics(i)) for i in (0, 1))
                done = all(sum(v for (n, _), v in g.items() if n == fam) == want for g in got
                           for fam in ("istio_requests_total", "istio_request_duration_milliseconds_count"))
                return got if done else None
            a, b = wait_for(complete, timeout=30, what="every request counted on both sides")
            windows = tuple(sorted((tuple(sorted((k, v) for k, v in row.items() if isinstance(v, str))),
                                    row["requests"], row["success"]) for row in recv.window(i)["rows"])
                            for i in (0, 1))
            return a, b, recv.metrics(1), windows
    finally:
        recv.stop()


def test_envoy_native_metrics_give_the_same_istio_series_as_the_access_log_stream(work):
    """The envoy-stats provider: Envoy counts each request into `mizzen.*` stats (stats access logger), the agent
    renames them at scrape time; the label sets and counts equal the access-log stream's for the same requests,
    and so do the golden window's rows."""
    stream = _metrics_of(os.path.join(work, "s"), Options(metrics=True, telemetry_sockets=(
        os.path.join(work, "s", "a-als.sock"), os.path.join(work, "s", "b-als.sock"))))
    native = _metrics_of(os.path.join(work, "n"), Options(native_metrics=True))
    for side in (0, 1):
        assert native[side] == stream[side], (side, native[side], stream[side])
    assert "envoy_mizzen_" not in native[2]  # renamed, not duplicated
    # the golden window (`mizzen stat`, the console) gets the same rows, from the growth of Envoy's series
    assert native[3] == stream[3] and sum(r[1] for r in native[3][1]) == len(REQUESTS), (native[3], stream[3])
    assert any(dict(k[1]).get("grpc_response_status") == "14" and dict(k[1])["request_protocol"] == "grpc"
               for k in native[1])


def test_top_paths_of_an_envoy_stats_proxy_come_from_a_stream_sampled_only_while_top_is_read(work):
    """Envoy counts the metrics itself; the access-log stream next to it is sampled at 0 % (a runtime key) until
    a `top` read raises it for a while: paths then reach the top, and those entries are not counted twice."""
    rig = Rig(Options(native_metrics=True, metrics=True, telemetry_sockets=(
        os.path.join(work, "a-als.sock"), os.path.join(work, "b-als.sock"))), work=work)  # the Receivers' sockets
    recv = Receivers(work, admin=rig.admin, top_sampling_seconds=4)
    try:
        with rig:
            def requests_counted(i: int) -> float:
                return sum(v for (n, _), v in _istio_series(recv.metrics(i)).items() if n == "istio_requests_total")

            def runtime(who: str) -> str:
                return json.loads(rig.admin_get(who, "/runtime"))["entries"]["mizzen.top_sampling_percent"][
                    "final_value"]
            # B's top read before any request: its Envoy has no native series yet to tell it by, and the agent
            # turns the sampled stream on all the same
            zero = recv.top(1)
            assert zero["paths"] == [] and "sampling" not in zero and runtime("b") == "100", zero
            for _ in range(3):
                rig.get("/before")
            wait_for(lambda: requests_counted(1) == 3, what="3 requests counted by Envoy")
            wait_for(lambda: {p["path"]: p["count"] for p in recv.top(1)["paths"]} == {"/before": 3},
                     what="B's top has the requests after its first read")
            first = recv.top(0)  # A was not sampled before its first read; each agent samples its own Envoy
            assert first["paths"] == [] and first["sampling"]["percent"] == 100, first
            for _ in range(5):
                rig.get("/during")
            wait_for(lambda: [p for p in recv.top(1)["paths"] if p["path"] == "/during"], what="/during in top")
            paths = {p["path"]: p["count"] for p in recv.top(0)["paths"]}
            assert paths.get("/during") == 5 and "/before" not in paths, paths
            assert requests_counted(0) == requests_counted(1) == 8  # the sampled entries are not counted again
            time.sleep(4 + 1.5)  # the sampling ends with no read since; then a flush interval
            for _ in range(4):
                rig.get("/after")
            wait_for(lambda: requests_counted(1) == 12, what="12 requests counted")
            time.sleep(1.5)
            assert runtime("a") == runtime("b") == "0"  # each agent set the runtime key back
            snap = {p["path"] for p in recv.top(1)["paths"]}
            assert "/after" not in snap, snap
    finally:
        recv.stop()


def test_a_thousand_distinct_paths_keep_the_series_count_flat(work):
    recv = Receivers(work)
    try:
        with Rig(Options(metrics=True, telemetry_sockets=recv.socks), work=work) as rig:
            rig.get("/warm")

            def series_count() -> float:
                [s] = series(recv.metrics(1), "mizzen_agent_telemetry_series")
                return s.value
            wait_for(lambda: series_count() == 1, what="first series")
            for i in range(1000):
                rig.get(f"/items/{i}?q={i}")

            def total() -> float:
                return sum(s.value for s in series(recv.metrics(1), "istio_requests"))
            wait_for(lambda: total() == 1001, what="1001 requests counted")
            text = recv.metrics(1)
            assert series_count() == 1
            assert "/items/" not in text
            with urllib.request.urlopen(f"http://127.0.0.1:{recv.ports[1]}/telemetry/top?n=5", timeout=5) as r:
                top = json.loads(r.read())
            assert top["total"] == 1001 and len(top["paths"]) == 5  # paths live in `top`, bounded, not in labels
    finally:
        recv.stop()


class TraceServer:
    def __init__(self, work: str) -> None:
        self.sock = os.path.join(work, "otlp.sock")
        self.http = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "mizzen.telemetry.otlp_server", "--unix", self.sock,
                                      "--http", f"127.0.0.1:{self.http}"], stdout=subprocess.PIPE, text=True,
                                     stderr=open(os.path.join(work, "otlp.log"), "wb"))
        assert self.proc.stdout.readline().strip() == "ready"

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=5) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _one_trace(ts: TraceServer, spans: int) -> dict:
    def done():
        items = ts.get("/api/v1/traces")["items"]
        return items if items and items[0]["spans"] >= spans else None
    [summary] = wait_for(done, what=f"a trace with {spans} spans")
    return ts.get(f"/api/v1/traces/{summary['traceId']}")


def test_opentelemetry_spans_across_two_sidecars_with_w3c_propagation(work):
    ts = TraceServer(work)
    try:
        opts = Options(tracing="otel", sampling=100.0, traces_address={"pipe": {"path": ts.sock}}, echo_app=True)
        with Rig(opts, work=work) as rig:
            status, _, body = rig.get("/reviews/1")
            assert status == 200
            seen = json.loads(body)
            trace = _one_trace(ts, 2)
            spans = trace["spans"]
            by_service = {s["service"]: s for s in spans}
            client, server = by_service["productpage.default"], by_service["reviews.default"]
            assert client["kind"] == "CLIENT" and server["kind"] == "SERVER"
            assert server["parentId"] == client["spanId"] and client["parentId"] == ""
            assert [s["depth"] for s in spans] == [0, 1]
            # the app got the W3C context of B's span: same trace, B's span as parent
            version, trace_id, parent, flags = seen["traceparent"].split("-")
            assert (trace_id, parent, flags) == (client["traceId"], server["spanId"], "01")

            # an incoming traceparent is continued, not replaced
            ts_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
            rig.get("/x", {"traceparent": f"00-{ts_id}-{caller_span}-01"})
            t2 = wait_for(lambda: (lambda r: r if r and len(r["spans"]) == 2 else None)(
                _maybe(ts, f"/api/v1/traces/{ts_id}")), what="the continued trace")
            assert {s["parentId"] for s in t2["spans"] if s["service"] == "productpage.default"} == {caller_span}
    finally:
        ts.stop()


def _maybe(ts: TraceServer, path: str) -> dict | None:
    try:
        return ts.get(path)
    except urllib.error.HTTPError:
        return None


def test_zipkin_mode_propagates_b3_and_w3c_and_reports_spans(work):
    ts = TraceServer(work)
    try:
        opts = Options(tracing="zipkin", sampling=100.0, echo_app=True,
                       traces_address={"socket_address": {"address": "127.0.0.1", "port_value": ts.http}})
        with Rig(opts, work=work) as rig:
            status, _, body = rig.get("/reviews/2")
            seen = json.loads(body)
            assert status == 200
            trace = _one_trace(ts, 2)
            by_kind = {s["kind"]: s for s in trace["spans"]}
            client, server = by_kind["CLIENT"], by_kind["SERVER"]
            assert server["parentId"] == client["spanId"]
            assert seen["x-b3-traceid"].rjust(32, "0") == client["traceId"]
            assert seen["x-b3-spanid"] == server["spanId"]
            assert seen["traceparent"].split("-")[1:3] == [client["traceId"], server["spanId"]]

            # a B3-only caller is continued
            tid, sid = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"
            rig.get("/y", {"x-b3-traceid": tid, "x-b3-spanid": sid, "x-b3-sampled": "1"})
            t2 = wait_for(lambda: _maybe(ts, f"/api/v1/traces/{tid}"), what="the B3 trace")
            assert sid in {s["parentId"] for s in t2["spans"]}
    finally:
        ts.stop()


def test_tap_streams_matching_requests_only_while_someone_watches(work):
    with Rig(Options(tap=True, echo_app=True), work=work) as rig:
        url = f"http://127.0.0.1:{rig.admin['b']}/tap"

        async def watch() -> list[dict]:
            async def traffic():
                await asyncio.sleep(0.5)
                for p in ("/other", "/api/1", "/api/2", "/api/3"):
                    await asyncio.to_thread(rig.get, p)
            t = asyncio.create_task(traffic())
            events = [e async for e in tap_events(url, tap_request("/api"), max_events=2, max_seconds=10)]
            await t
            return events
        events = asyncio.run(watch())
        assert [e["path"] for e in events] == ["/api/1", "/api/2"]  # bounded by max_events; /other not matched
        assert events[0]["status"] == 200 and events[0]["source"].startswith("127.0.0.2:")
        assert events[0]["destination"].startswith(f"{APP_IP}:")
        # nobody watching: the filter taps nothing (Envoy's counter of tapped requests stays put)
        def tapped() -> int:
            return int(re.search(r"tap\.rq_tapped: (\d+)", rig.admin_get("b", "/stats?filter=tap")).group(1))
        before = tapped()
        assert before >= 2
        for _ in range(3):
            rig.get("/api/9")
        assert tapped() == before
