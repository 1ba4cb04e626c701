"""The control plane's metric definitions: names, labels, and a scrape that Prometheus' parser accepts."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from mizzen.telemetry.cpmetrics import ControlPlaneMetrics


def test_calls_become_series_in_a_valid_exposition():
    m = ControlPlaneMetrics()
    m.stream_opened("sidecar", "delta")
    m.stream_opened("sidecar", "delta")
    m.stream_closed("sidecar", "delta")
    m.pushed("CDS", 1200)
    m.acked("CDS", 0.042)
    m.acked("EDS", None)
    m.nacked("LDS")
    m.debounce_merges.inc(3)
    m.applied("rejected", 0.004, ("VirtualService",))
    m.registry_size(5, 1, 4)
    m.store_changed(17, {"VirtualService": 2})
    m.api_request("GET", "/api/v1/resources/{kind}", 404, 0.002)
    body, ctype = m.exposition()
    assert ctype.startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    val = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert val[("mizzen_xds_connected_proxies", (("kind", "sidecar"), ("protocol", "delta")))] == 1
    assert val[("mizzen_xds_push_latency_seconds_count", (("type", "CDS"),))] == 1
    assert val[("mizzen_xds_push_latency_seconds_bucket", (("le", "0.05"), ("type", "CDS")))] == 1
    assert val[("mizzen_xds_push_latency_seconds_bucket", (("le", "0.025"), ("type", "CDS")))] == 0
    assert ("mizzen_xds_push_latency_seconds_count", (("type", "EDS"),)) not in val  # an ACK of no change
    assert val[("mizzen_xds_nacks_total", (("type", "LDS"),))] == 1
    assert val[("mizzen_push_debounce_merges_total", ())] == 3
    assert val[("mizzen_config_rejections_total", (("kind", "VirtualService"),))] == 1
    assert val[("mizzen_store_revision", ())] == 17
    assert val[("mizzen_registry_instances", (("healthy", "false"),))] == 1
    assert val[("mizzen_api_request_duration_seconds_count",
                (("code", "4xx"), ("method", "GET"), ("route", "/api/v1/resources/{kind}")))] == 1


def test_two_instances_do_not_share_a_registry():
    a, b = ControlPlaneMetrics(), ControlPlaneMetrics()
    a.nacked("CDS")
    assert b"mizzen_xds_nacks_total{" not in b.exposition()[0]
