"""The goals table's pure logic (bench/goals.py, bench/sidecar.py, bench/xds_extra.py): no processes."""
from envoy.config.route.v3 import route_pb2

from mizzen.bench import goals, sidecar, xds_common, xds_extra
from mizzen.bench.xds_load import MARKER, BenchOptions, BenchResult


def test_row_met_and_table_ratio():
    r = goals.Row("2. x", "< 200", [150.0, 250.0, 180.0], [100.0, 100.0, 90.0], ".0f", 200, "floor")
    assert r.met() == "yes"  # the median (180) is within the limit
    assert goals.Row("g", "-", [3.0], [], limit=2).met() == "no"
    assert goals.Row("g", "-", [3.0], [1.0]).met() == "-"  # no target
    line = goals.table([r]).splitlines()[-1]
    assert line == "| 2. x | < 200 | 180 (150–250) | 100 (90–100) | floor | 2.00 (1.50–2.50) | yes |"
    # a missing figure (nan) is left out, not averaged in
    assert "| - |" in goals.table([goals.Row("g", "-", [float("nan")], [1.0])])


def _result(proxies: int, lat: list[float], peak: float, before: float, **kw) -> BenchResult:
    r = BenchResult(BenchOptions(proxies=proxies, changes=1), latencies_ms=lat, cp_peak_rss_mb=peak,
                    cp_rss_before_mb=before, initial_sync_s=1.0, all_ms=[max(lat)], **kw)
    r.floor = BenchResult(BenchOptions(proxies=proxies, changes=1), latencies_ms=[x / 2 for x in lat],
                          cp_peak_rss_mb=peak / 2, cp_rss_before_mb=before / 2, initial_sync_s=0.5, all_ms=[1.0])
    return r


def test_rows_name_their_baselines_and_the_scenarios():
    run = _result(100, [50.0, 100.0], 130.0, 100.0, route_latencies_ms=[80.0, 120.0], restart_ready_s=3.0,
                  restart_push_s=1.5, restart_serve_max_s=0.7, restart_last_open_s=1.2)
    scoped = _result(100, [50.0], 110.0, 100.0)
    costs = [sidecar.ProxyCost("scoped", {"CDS": 8}, 0, 66.0, 15.0),
             sidecar.ProxyCost("everything", {"CDS": 1008}, 0, 123.0, 75.0),
             sidecar.ProxyCost("everything-eager", {"CDS": 1008}, 0, 155.0, 105.0),
             sidecar.ProxyCost("empty bootstrap (baseline)", {"CDS": 0}, 0, 63.0, 13.0),
             sidecar.ProxyCost("bare static, same clusters (baseline)", {"CDS": 1000}, 0, 131.0, 81.0)]
    rows = {r.goal: r for r in goals.rows(goals.Results(runs={100: [run]}, scoped=[scoped], sidecar=costs))}
    route = next(r for g, r in rows.items() if "VirtualService" in g)
    assert route.figure == [120.0] and route.baseline == [100.0] and "endpoint change" in route.note
    assert not any("floor sending its bytes" in g for g in rows)  # the floor did no route change in this run
    run.floor.route_latencies_ms = [30.0, 60.0]
    wire = next(r for r in goals.rows(goals.Results(runs={100: [run]})) if "floor sending its bytes" in r.goal)
    assert wire.figure == [120.0] and wire.baseline == [60.0] and wire.ratios() == [2.0]
    restart = next(r for g, r in rows.items() if "restart" in g)
    assert restart.figure == [1.5] and restart.met() == "yes"
    assert next(r for g, r in rows.items() if "server's part" in g).figure == [0.7]
    assert next(r for g, r in rows.items() if "retry back-off" in g).figure == [1.2]
    marginal = next(r for g, r in rows.items() if "half scoped" in g and "marginal" in g)
    assert marginal.figure == [0.1] and marginal.met() == "no" and marginal.baseline == [0.05]
    full = next(r for g, r in rows.items() if "per 1000 services" in g)
    assert full.figure == [60.0] and full.baseline == [68.0]  # (75-15)/1000 clusters; (81-13)/1000
    scoped_rss = next(r for g, r in rows.items() if g.startswith("6. Envoy RSS"))
    assert scoped_rss.met() == "no" and scoped_rss.baseline == [63.0]


def test_route_marker_is_found_in_a_route_configuration():
    rc = route_pb2.RouteConfiguration(name="8080")
    vh = rc.virtual_hosts.add(name="svc-0", domains=["svc-0"])
    vh.request_headers_to_add.add().header.value = "mzbench-12"
    assert MARKER.findall(rc.SerializeToString()) == [b"mzbench-12"]
    assert "x-mizzen-bench: mzbench-3" in xds_extra.route_yaml("mzbench-3")
    assert "app: bench-scoped" in xds_extra.SIDECAR and "./svc-0.default.svc.cluster.local" in xds_extra.SIDECAR


def test_instance_addresses_are_distinct_for_100k_endpoints():
    addrs = {xds_common._addr(n) for n in range(100_000)}
    assert len(addrs) == 100_000
    assert all(0 <= int(p) < 256 for a in addrs for p in a.split(".")) and all(not a.endswith(".0") for a in addrs)
    assert xds_common._addr(0) == "127.0.0.1" and xds_common._addr(250) == "127.0.1.1"


def test_the_floor_route_change_sets_the_marker_on_the_watched_host_only():
    import json
    import os
    import tempfile

    from google.protobuf import json_format

    from mizzen.bench.xds_floor import RDS, Floor

    rc = route_pb2.RouteConfiguration(name="8080")
    for h in ("svc-0.default.svc.cluster.local", "svc-1.default.svc.cluster.local"):
        vh = rc.virtual_hosts.add(name=f"{h}:8080", domains=[h])
        vh.routes.add(name="default").match.prefix = "/"
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "r.json")
        with open(path, "w") as f:
            json.dump({RDS: [{"name": "8080", "resource": json_format.MessageToDict(rc)}]}, f)
        with open(path) as f:
            floor = Floor(True, json.load(f))
    for marker in ("mzbench-100", "mzbench-101"):
        b = floor.route("svc-0.default.svc.cluster.local", marker)
        assert MARKER.findall(b) == [marker.encode()]  # replaced, not added twice
    (m,) = [m for _, m in floor.items[RDS]]
    assert [len(vh.routes[0].request_headers_to_add) for vh in m.virtual_hosts] == [1, 0]
