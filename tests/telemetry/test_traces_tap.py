"""The trace store (bounded, waterfalls), span decoding from OTLP and Zipkin, and tap parsing."""
from __future__ import annotations

import json

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from mizzen.telemetry.peers import Directory
from mizzen.telemetry.tap import TapError, TapStream, event_of, tap_request
from mizzen.telemetry.traces import scope_spans, Span, TraceStore, spans_from_otlp, spans_from_zipkin
from tests.telemetry.entries import A_IP, INSTANCES, SERVICES

T = "0af7651916cd43dd8448eb211c80319c"


def span(sid: str, parent: str = "", start: int = 0, end: int = 10, trace: str = T, service: str = "s") -> Span:
    return Span(trace, sid, parent, f"op-{sid}", service, "SERVER", start * 1_000_000, end * 1_000_000)


def test_otlp_export_request_becomes_spans():
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "productpage.default"
    s = scope_spans(rs).add().spans.add()
    s.trace_id, s.span_id, s.parent_span_id = bytes.fromhex(T), bytes.fromhex("b7ad6b7169203331"), b""
    s.name, s.kind = "reviews:9080/*", 3
    s.start_time_unix_nano, s.end_time_unix_nano = 1_000_000, 5_000_000
    s.attributes.add(key="http.status_code").value.string_value = "503"
    [sp] = spans_from_otlp(req)
    assert (sp.trace_id, sp.span_id, sp.parent_id, sp.service, sp.kind) == \
        (T, "b7ad6b7169203331", "", "productpage.default", "CLIENT")
    assert sp.duration_ms == 4.0 and sp.error


def test_zipkin_json_becomes_spans_and_bad_input_is_rejected():
    [sp] = spans_from_zipkin([{"traceId": T[16:], "id": "00f067aa0ba902b7", "parentId": "b7ad6b7169203331",
                               "name": "GET", "kind": "SERVER", "timestamp": 1000, "duration": 2500,
                               "localEndpoint": {"serviceName": "reviews"}, "tags": {"http.status_code": "200"}}])
    assert sp.trace_id == T[16:].rjust(32, "0") and sp.parent_id == "b7ad6b7169203331"
    assert (sp.start_ns, sp.end_ns, sp.service, sp.error) == (1_000_000, 3_500_000, "reviews", False)
    with pytest.raises(ValueError, match="span 0"):
        spans_from_zipkin([{"id": "x"}])


def test_waterfall_is_depth_first_in_start_order_with_offsets():
    st = TraceStore()
    st.add([span("c", "b", 3, 6), span("a", "", 0, 10), span("b", "a", 1, 8), span("d", "a", 8, 9),
            span("e", "missing", 2, 4)])
    rows = st.waterfall(T)
    assert [(r["spanId"], r["depth"], r["offsetMs"]) for r in rows] == \
        [("a", 0, 0.0), ("b", 1, 1.0), ("c", 2, 3.0), ("d", 1, 8.0), ("e", 0, 2.0)]
    sm = st.recent()[0]
    assert (sm["root"], sm["spans"], sm["durationMs"]) == ("op-a", 5, 10.0)


def test_store_is_bounded_in_traces_and_spans():
    st = TraceStore(max_traces=3, max_spans=2)
    for i in range(5):
        st.add([span("a", trace=f"{i:032x}", start=i)])
    assert len(st) == 3 and st.evicted == 2 and st.get(f"{0:032x}") is None
    st.add([span("b", trace=f"{4:032x}", start=4), span("c", trace=f"{4:032x}", start=4)])
    t = st.get(f"{4:032x}")
    assert len(t.spans) == 2 and t.dropped == 1
    assert [s["traceId"] for s in st.recent(2)] == [f"{4:032x}", f"{3:032x}"]
    assert st.recent(service="nope") == []


def test_tap_request_matches_and_validates():
    body = tap_request("/api", "get")
    rules = body["tap_config"]["match"]["and_match"]["rules"]
    assert rules[0]["http_request_headers_match"]["headers"][0] == {"name": ":path", "string_match": {"prefix": "/api"}}
    assert rules[1]["http_request_headers_match"]["headers"][0]["string_match"] == {"exact": "GET"}
    assert tap_request()["tap_config"]["match"] == {"any_match": True}
    with pytest.raises(TapError, match="--path"):
        tap_request("api")
    with pytest.raises(TapError, match="--method"):
        tap_request(method="FETCH")


def test_tap_stream_splits_concatenated_documents_across_chunks():
    docs = [{"http_buffered_trace": {"request": {"headers": [{"key": ":path", "value": f"/{i}"}]}}} for i in range(3)]
    raw = "".join(json.dumps(d, indent=1) for d in docs).encode()
    ts = TapStream()
    got = []
    for i in range(0, len(raw), 7):
        got.extend(ts.feed(raw[i:i + 7]))
    assert got == docs


def test_tap_event_names_peers_and_latency():
    trace = {"http_buffered_trace": {
        "request": {"headers": [{"key": ":method", "value": "GET"}, {"key": ":path", "value": "/reviews/1"},
                                {"key": ":authority", "value": "reviews:9080"}],
                    "headers_received_time": "2026-01-01T00:00:00.100Z"},
        "response": {"headers": [{"key": ":status", "value": "200"}],
                     "headers_received_time": "2026-01-01T00:00:00.112500Z"},
        "downstream_connection": {"remote_address": {"socket_address": {"address": A_IP, "port_value": 5555}}},
        "upstream_connection": {"remote_address": {"socket_address": {"address": "127.0.0.4", "port_value": 9080}}}}}
    ev = event_of(trace, Directory(INSTANCES, SERVICES), reporter="reviews-v1")
    assert (ev["method"], ev["path"], ev["status"], ev["source"]) == ("GET", "/reviews/1", 200, "productpage-v1.default")
    assert ev["destination"] == "127.0.0.4:9080" and ev["latencyMs"] == pytest.approx(12.5)
    assert event_of({"socket_buffered_trace": {}}) is None


def test_a_receiver_fills_the_store_it_was_given_even_an_empty_one():
    """The control plane hands one TraceStore to its receiver and to its console: an empty store is falsy (it
    has a length), so `store or TraceStore()` gave the receiver a store of its own and the console showed no
    trace ever."""
    from mizzen.telemetry.otlp_server import TraceReceiver
    store = TraceStore()
    assert TraceReceiver(store).store is store
