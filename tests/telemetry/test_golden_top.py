"""Golden metrics math (`mizzen stat`), topology edges, and the bounded top-paths summary (`mizzen top`)."""
from __future__ import annotations

import json
import random

import pytest

from mizzen.telemetry.aggregate import Aggregator, SelfInfo, Window
from mizzen.telemetry.golden import edges, quantile, stat, table
from mizzen.telemetry.istio import DURATION_BUCKETS_MS
from mizzen.telemetry.peers import Directory, WorkloadInfo
from mizzen.telemetry.records import INBOUND, OUTBOUND, from_http_entry
from mizzen.telemetry.top import TopPaths, merge_snapshots
from tests.telemetry.entries import A_IP, INSTANCES, REVIEWS, SERVICES, http_entry

NOW = 1_700_000_000.0
V2_IP = "127.0.0.5"
INST = INSTANCES + [{"id": "default.reviews-v2-0", "namespace": "default", "workload": "reviews-v2", "address": V2_IP,
                     "ports": [9080], "labels": {"app": "reviews", "version": "v2"}}]
DIR = Directory(INST, SERVICES)


def me(workload: str, version: str, app: str) -> SelfInfo:
    return SelfInfo(WorkloadInfo.from_labels(workload, "default", {"app": app, "version": version}), {9080: REVIEWS})


def test_quantile_interpolates_like_prometheus():
    bounds = (10, 20, 40)
    assert quantile(0.5, bounds, [0, 10, 0, 0]) == 15.0  # all in (10, 20]: the middle
    assert quantile(0.99, bounds, [0, 0, 0, 5]) == 40.0  # +Inf bucket: the highest bound
    assert quantile(0.5, bounds, [10, 0, 0, 0]) == 5.0  # first bucket starts at 0
    assert quantile(0.5, bounds, [0, 0, 0, 0]) is None
    assert quantile(0.25, bounds, [1, 1, 1, 1]) == 10.0


def test_quantiles_of_a_known_distribution_fall_in_the_right_bucket():
    rng = random.Random(7)
    agg = Aggregator(me("reviews-v1", "v1", "reviews"), DIR)
    for _ in range(2000):
        agg.add_request(from_http_entry(http_entry(downstream=A_IP, cluster="inbound|9080||",
                                                   duration_ms=rng.uniform(30, 45)), INBOUND), NOW)
    [row] = stat([agg.window.snapshot(NOW + 10)])
    assert 25 <= row["p50_ms"] <= 50 and 25 <= row["p99_ms"] <= 50 and row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]


def _mesh_windows() -> list[dict]:
    """productpage calls reviews 90/10 across v1/v2; v2 fails 20 %. Reported on both sides."""
    pp = Aggregator(me("productpage-v1", "v1", "productpage"), DIR)
    v1 = Aggregator(me("reviews-v1", "v1", "reviews"), DIR)
    v2 = Aggregator(me("reviews-v2", "v2", "reviews"), DIR)
    for ag in (pp, v1, v2):
        ag.window.started = NOW - 100
    for i in range(1000):
        to_v2 = i % 10 == 0
        code = 503 if to_v2 and i % 50 == 0 else 200
        ip = V2_IP if to_v2 else "127.0.0.3"
        pp.add_request(from_http_entry(http_entry(upstream=f"{ip}:9080", code=code, duration_ms=8), OUTBOUND), NOW)
        (v2 if to_v2 else v1).add_request(from_http_entry(
            http_entry(downstream=A_IP, cluster="inbound|9080||", code=code, duration_ms=5), INBOUND), NOW)
    # a caller without a sidecar (its address is known, it reports nothing itself)
    v1.add_request(from_http_entry(http_entry(downstream="127.0.0.9", cluster="inbound|9080||"), INBOUND), NOW)
    return [json.loads(json.dumps(a.window.snapshot(NOW + 20))) for a in (pp, v1, v2)]  # as the agents send it


def test_stat_json_contract_workloads():
    ws = _mesh_windows()
    seconds = ws[0]["seconds"]
    assert 50 <= seconds <= 60  # five whole 10 s slots and the current part of one
    rows = stat(ws)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"reviews-v1", "reviews-v2"}  # productpage served nothing
    for r in rows:
        assert {"name", "namespace", "requests", "rps", "success_rate", "p50_ms", "p99_ms"} <= set(r)
        assert 0 <= r["success_rate"] <= 1
    assert by_name["reviews-v1"]["requests"] == 901
    assert by_name["reviews-v2"]["requests"] == 100 and by_name["reviews-v2"]["success_rate"] == 0.8
    assert by_name["reviews-v1"]["rps"] == pytest.approx(901 / seconds, rel=0.001)


def test_stat_service_by_version_and_by_caller():
    ws = _mesh_windows()
    rows = stat(ws, kind="service", by="version", name="reviews")
    split = {r["version"]: r["requests"] for r in rows}
    assert split == {"v1": 901, "v2": 100}  # 900 source-reported + 1 from the sidecar-less caller
    callers = {(r["caller"], r["requests"]) for r in stat(ws, kind="workload", by="caller", name="reviews-v1")}
    assert callers == {("productpage-v1", 900), ("unknown", 1)}
    assert table(rows, by="version")[0] == ["NAMESPACE", "NAME", "VERSION", "REQUESTS", "RPS", "SUCCESS", "P50",
                                            "P95", "P99"]
    with pytest.raises(ValueError):
        stat(ws, by="path")


def test_edges_count_each_request_once():
    es = edges(_mesh_windows())
    got = {(e["source"], e["destination"], e["version"]): e["requests"] for e in es}
    assert got == {("productpage-v1", "reviews-v1", "v1"): 900, ("productpage-v1", "reviews-v2", "v2"): 100,
                   ("unknown", "reviews-v1", "v1"): 1}
    assert sum(got.values()) == 1001


def test_window_observe_many_is_the_same_as_observing_each_request():
    key = ("destination", "productpage-v1", "default", "reviews-v1", "default", REVIEWS, "v1")
    durations = [(0.2, True), (3, True), (3, False), (40, True), (7000, False)]
    one, many = Window(started=NOW - 100), Window(started=NOW - 100)
    for ms, ok in durations:
        one.observe(key, ok, ms, NOW)
    counts = [0] * (len(DURATION_BUCKETS_MS) + 1)
    for ms, _ in durations:
        counts[next((i for i, b in enumerate(DURATION_BUCKETS_MS) if ms <= b), len(DURATION_BUCKETS_MS))] += 1
    many.observe_many(key, 3, 2, counts[:3] + [0] * (len(counts) - 3), 6.2, NOW)
    many.observe_many(key, 2, 1, [0] * 3 + counts[3:], 7040, NOW + 1)  # the same 10 s slot
    many.observe_many(key, 0, 0, [0] * len(counts), 0.0, NOW)  # nothing: no row of its own
    assert many.snapshot(NOW + 20) == one.snapshot(NOW + 20)
    [row] = many.snapshot(NOW + 20)["rows"]
    assert (row["requests"], row["success"], row["durationCounts"][2], row["durationSum"]) == (5, 3, 2, 7046.2)
    [row] = stat([many.snapshot(NOW + 20)])
    assert row["requests"] == 5 and row["success_rate"] == 0.6
    # a slot later than the window: gone, as for single observations
    assert many.snapshot(NOW + 70)["rows"] == []
    with pytest.raises(ValueError):
        many.observe_many(key, 1, 1, [1], 1.0, NOW)


def test_top_paths_keeps_the_heavy_hitters_in_bounded_memory():
    top = TopPaths(capacity=50)
    rng = random.Random(1)
    true = {f"/hot/{k}": 0 for k in range(3)}
    for i in range(20000):
        if i % 4 == 0:
            path = f"/hot/{i % 3}"  # 3 hot paths: 5000 requests together
            true[path] += 1
        else:
            path = f"/cold/{rng.randrange(100000)}"  # a flood of distinct paths
        top.add(("inbound", "productpage-v1", "GET", path), 3.0, ok=not path.endswith("/2"), now=NOW + i)
        assert len(top) <= 50
    hot = {p.key[3]: p for p in top.top(3)}
    assert set(hot) == {"/hot/0", "/hot/1", "/hot/2"}
    for p in hot.values():  # space-saving: count - error <= true count <= count
        assert p.count - p.error <= true[p.key[3]] <= p.count
    assert hot["/hot/2"].failures >= 1600 and hot["/hot/0"].failures == 0
    assert len(top._heap) <= 4 * 50 + 1


def test_top_snapshots_merge_across_replicas():
    a, b = TopPaths(10), TopPaths(10)
    for t, ms in ((a, 2.0), (b, 9.0)):
        for _ in range(3):
            t.add(("inbound", "x", "GET", "/p"), ms, ok=True, now=NOW)
    b.add(("inbound", "x", "GET", "/q"), 1.0, ok=False, now=NOW + 1)
    rows = merge_snapshots([a.snapshot(), b.snapshot()])
    assert [(r["path"], r["count"]) for r in rows] == [("/p", 6), ("/q", 1)]
    assert (rows[0]["minMs"], rows[0]["maxMs"]) == (2.0, 9.0)
    assert rows[1]["successRate"] == 0.0


def test_duration_buckets_are_istios():
    assert DURATION_BUCKETS_MS[:4] == (0.5, 1, 5, 10) and DURATION_BUCKETS_MS[-1] == 3600000
