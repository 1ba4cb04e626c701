"""Explaining failed requests from the caller sidecar's access log (the real format of translate/filters/accesslog.py),
and the verdict's checks (pure)."""
from __future__ import annotations

import datetime as dt

from mizzen.chaos.explain import APP_KILL, ENVOY_KILL, NETWORK, access_entries, classify, fault_windows, kill_events
from mizzen.chaos.scenario import SteadyState
from mizzen.chaos.verdict import checks, render, summary_rows
from mizzen.translate.filters.accesslog import HTTP_FORMAT

T0 = 1_800_000_000.0


def line(rid: str, t: float, code: int, flags: str, ms: int, upstream: str) -> str:
    start = dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return (HTTP_FORMAT.replace("%START_TIME%", start).replace("%REQ(:METHOD)%", "GET")
            .replace("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "/details/0").replace("%PROTOCOL%", "HTTP/1.1")
            .replace("%RESPONSE_CODE%", str(code)).replace("%RESPONSE_FLAGS%", flags)
            .replace("%BYTES_RECEIVED%", "0").replace("%BYTES_SENT%", "95").replace("%DURATION%", str(ms))
            .replace("%REQ(:AUTHORITY)%", "web:9080").replace("%UPSTREAM_HOST%", upstream)
            .replace("%UPSTREAM_CLUSTER%", "outbound|9080||web.default.svc.cluster.local")
            .replace("%ROUTE_NAME%", "default").replace("%REQ(X-REQUEST-ID)%", rid)
            .replace("%REQ(USER-AGENT)%", "-"))


def test_access_log_entries_of_one_run():
    text = line("run1-5", T0, 503, "UC", 12, "10.244.0.3:9080") + line("other-1", T0, 200, "-", 1, "x:1") + \
        "garbage\n"
    e = access_entries(text, "run1")
    assert list(e) == ["run1-5"]
    assert e["run1-5"]["code"] == 503 and e["run1-5"]["flags"] == "UC" and e["run1-5"]["ms"] == 12
    assert abs(e["run1-5"]["start"] - T0) < 0.002


def test_failures_are_explained_by_kills_in_flight_or_left_unexplained():
    kills = kill_events([{"id": "k1", "kind": "kill", "targets": [
        {"pod": "web-1", "kind": "app", "at": T0 + 1.0},
        {"pod": "web-2", "kind": "agent", "at": T0 + 5.0, "envoyDiedAt": T0 + 5.04}]}])
    log = (line("r-1", T0 + 0.99, 503, "-", 20, "10.244.0.3:9080")      # in flight at the app kill
           + line("r-2", T0 + 1.2, 503, "-", 2, "10.244.0.3:9080")      # sent after it: should have been retried
           + line("r-3", T0 + 5.02, 503, "UC", 30, "10.244.0.4:9080")   # in flight when the agent's Envoy died
           + line("r-4", T0 + 5.06, 503, "UC", 1, "10.244.0.4:9080")    # raced the Envoy's death on a pooled conn
           + line("r-5", T0 + 7.0, 503, "UC", 1, "10.244.0.4:9080")     # nothing happened then
           # the same race when the caller's sidecar is slow to read the reset (a loaded machine): 0.3 s after
           + line("r-6", T0 + 5.34, 503, "UC", 1, "10.244.0.4:9080")
           + line("r-7", T0 + 5.64, 503, "UC", 1, "10.244.0.4:9080"))   # 0.6 s after: past RACE, unexplained
    failures = [{"id": f"r-{i}", "t": T0, "ms": 1, "status": 503, "error": None} for i in range(1, 8)]
    out = classify(failures, access_entries(log, "r"), kills, {"10.244.0.3": "web-1", "10.244.0.4": "web-2"}, "sleep-0")
    assert out["categories"] == {APP_KILL: 1, ENVOY_KILL: 3}
    assert [u["id"] for u in out["unexplained"]] == ["r-2", "r-5", "r-7"]
    assert out["unexplained"][0]["upstreamPod"] == "web-1"


def test_a_failure_through_a_network_fault_is_what_the_drill_asked_for():
    windows = fault_windows([{"kind": "network", "started": T0, "ended": T0 + 10, "targets": [{"name": "web-1"}]}])
    log = line("r-1", T0 + 3, 504, "UT", 3000, "10.244.0.3:9080")
    out = classify([{"id": "r-1", "t": T0 + 3, "ms": 3000, "status": 504, "error": None}], access_entries(log, "r"),
                   [], {"10.244.0.3": "web-1"}, "sleep-0", windows)
    assert out["categories"] == {NETWORK: 1} and not out["unexplained"]


def test_checks_and_rendering():
    load = {"total": 1000, "failed": 3, "ok": 997, "rps": 200, "latencyMs": {"p50": 2, "p99": 40, "max": 90},
            "status": {"200": 997, "503": 3}, "errors": {}}
    explained = {"categories": {APP_KILL: 3}, "explained": 3, "unexplained": []}
    steady = SteadyState(max_error_ratio=0.01, max_unexplained=0, p99=0.05, synced_within=30)
    cs = checks(steady, load, explained, 4.2, True)
    assert [c["ok"] for c in cs] == [True, True, True, True]
    assert not checks(SteadyState(max_error_ratio=0.001), load, explained, None, True)[0]["ok"]
    assert not checks(SteadyState(synced_within=3), load, explained, 4.2, True)[0]["ok"]
    assert not checks(SteadyState(max_unexplained=0), load, None, None, False)[0]["ok"]  # nothing to explain with
    rows = summary_rows([[0, 100, 0, 1, 5, 0], [1, 90, 3, 1, 9, 0], [2, 100, 0, 1, 4, 0]], 2)
    assert rows == [{"from": 0, "to": 2, "ok": 190, "failed": 3, "p99": 9},
                    {"from": 2, "to": 4, "ok": 100, "failed": 0, "p99": 4}]
    text = render({"scenario": "s", "file": "f", "seed": 1, "pass": True, "checks": cs, "load": load,
                   "timeline": [{"t": 1.0, "kind": "fault", "text": "kill-1 kill app"}], "loadRows": rows,
                   "explained": explained})
    assert "verdict: PASS" in text and "kill-1 kill app" in text and "3 in-flight at a killed app" in text
