"""Envoy-native request metrics (Envoy's stats access logger) renamed to Istio's series at scrape time: the same
labels and values as the access-log path gives for the same requests, one family each in the merged scrape."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections import defaultdict

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from envoy.service.accesslog.v3 import als_pb2
from prometheus_client.parser import text_string_to_metric_families

from mizzen.agent.telemetry import Telemetry, http_get
from mizzen.telemetry import exposition, golden, istio, native
from mizzen.telemetry.aggregate import Aggregator, SelfInfo
from mizzen.telemetry.envoy import NATIVE_KEY_TAG, NATIVE_OWN_TAGS, NATIVE_PACKED, NATIVE_SEP, als_log_name
from mizzen.telemetry.peers import Directory, WorkloadInfo, principal_of
from mizzen.telemetry.records import INBOUND, OUTBOUND, from_http_entry
from tests.telemetry.entries import A_IP, B_IP, INSTANCES, REVIEWS, SERVICES, http_entry

PP_P, RV_P = principal_of("default", "bookinfo-productpage"), principal_of("default", "bookinfo-reviews")
PRODUCTPAGE = SelfInfo(WorkloadInfo.from_labels("productpage-v1", "default", {"app": "productpage", "version": "v1"}),
                       principal=PP_P)
REVIEWS_V1 = SelfInfo(WorkloadInfo.from_labels("reviews-v1", "default", {"app": "reviews", "version": "v1"}),
                      {9080: REVIEWS}, principal=RV_P)
B2_IP = "127.0.0.5"  # a second reviews-v1 pod
INSTANCES2 = INSTANCES + [dict(INSTANCES[1], id="default.reviews-v1-1", address=B2_IP)]
DIR = Directory(INSTANCES2, SERVICES)
NOW = 1_700_000_000.0
OUT_CLUSTER = f"outbound|9080|v1|{REVIEWS}"
FAMILIES = ("envoy_mizzen_request_duration_milliseconds", "envoy_mizzen_request_bytes", "envoy_mizzen_response_bytes")
OTHER_ENVOY = ("# TYPE envoy_cluster_upstream_cx_total counter\n"
               'envoy_cluster_upstream_cx_total{envoy_cluster_name="b"} 10\n'
               "# TYPE envoy_server_live gauge\nenvoy_server_live 1\n")


def _le(b: float) -> str:
    return "+Inf" if b == float("inf") else (str(int(b)) if float(b).is_integer() else repr(float(b)))


def packed_labels(tags: dict) -> str:
    """Envoy's label text for these tag values, in the layout telemetry/envoy._native_tags configures (the fields
    Mizzen controls in one `key` tag, :authority last on the outbound side; peer and grpc a tag each)."""
    fields = [tags.get(f, "") for f in NATIVE_PACKED[:-1]]
    if tags.get("direction") == "outbound":
        fields.append(tags.get("authority", ""))
    esc = lambda v: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")  # noqa: E731
    return ",".join(f'{n}="{esc(v)}"' for n, v in [(NATIVE_KEY_TAG, NATIVE_SEP.join(fields)),
                                                     *((t, tags.get(t, "")) for t in NATIVE_OWN_TAGS)])


def envoy_text(requests: list[tuple[dict, float, int, int]], *, histograms: bool = True) -> str:
    """Envoy's /stats/prometheus for these requests ((tags, duration ms, request bytes, response bytes)), as the
    stats access logger counts them, between other Envoy stats (cumulative buckets: value <= le)."""
    by_tags: dict[tuple, list] = defaultdict(list)
    for tags, ms, rq, rs in requests:
        by_tags[tuple(tags.get(t, "") for t in native.TAGS)].append((ms, rq, rs))

    def labels(key: tuple, extra: str = "") -> str:
        return "{" + packed_labels(dict(zip(native.TAGS, key))) + ("," + extra if extra else "") + "}"
    out = [OTHER_ENVOY, "# TYPE envoy_mizzen_requests_total counter\n"]
    out += [f"envoy_mizzen_requests_total{labels(k)} {len(v)}\n" for k, v in by_tags.items()]
    out.append('envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="in"} 7\n')
    for i, fam in enumerate(FAMILIES if histograms else ()):
        bounds = istio.DURATION_BUCKETS_MS if i == 0 else istio.BYTES_BUCKETS
        out.append(f"# TYPE {fam} histogram\n")
        for k, rows in by_tags.items():
            values = [r[i] for r in rows]
            for b in bounds + (float("inf"),):
                out.append(f'{fam}_bucket{labels(k, "le=" + chr(34) + _le(b) + chr(34))} '
                           f"{sum(1 for v in values if v <= b)}\n")
            out.append(f"{fam}_sum{labels(k)} {sum(values)}\n")
            out.append(f"{fam}_count{labels(k)} {len(values)}\n")
    return "".join(out)


def table(http: dict) -> dict:
    return {k: (s.requests, tuple(s.duration.counts), round(s.duration.sum, 6), s.duration.count,
                tuple(s.request_bytes.counts), s.request_bytes.sum, tuple(s.response_bytes.counts),
                s.response_bytes.sum) for k, s in http.items()}


def convert(text: str, me: SelfInfo, directory: Directory = DIR, **kw) -> native.Converted:
    rest, series = native.split_envoy_text(text)
    assert rest == OTHER_ENVOY + 'envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="in"} 7\n'
    return native.Converter().convert(series, me, directory, **kw)


def same_requests(cases: list, direction: str, me: SelfInfo) -> tuple[Aggregator, native.Converted]:
    """The access-log path (the real Aggregator, request by request) and the native one for the same requests:
    (Envoy's tags, the access-log entry); the Envoy side counts the entry's duration and sizes."""
    agg = Aggregator(me, DIR)
    reqs = []
    for tags, entry in cases:
        rec = from_http_entry(entry, direction)
        agg.add_request(rec, NOW)
        reqs.append((tags, rec.duration_ms, rec.request_bytes, rec.response_bytes))
    return agg, convert(envoy_text(reqs), me)


def out_tags(host: str = f"{B_IP}:9080", code: str = "200", grpc: str = "-", flags: str = "-", peer: str = "-",
             cluster: str = OUT_CLUSTER, authority: str = "reviews:9080") -> dict:
    return dict(direction="outbound", peer=peer, host=host, cluster=cluster, code=code, grpc=grpc, flags=flags,
                authority=authority)


def in_tags(host: str = A_IP, code: str = "200", peer: str = "-", grpc: str = "-", flags: str = "-") -> dict:
    return dict(direction="inbound", peer=peer, host=host, cluster="inbound|9080||", code=code, grpc=grpc,
                flags=flags)


def test_outbound_series_get_the_labels_and_values_the_access_log_path_gives_the_same_requests():
    # (Envoy's tags, the access-log entry of the same request): durations in whole ms, as %DURATION% gives them
    cases = [
        (out_tags(), http_entry(duration_ms=0)),
        (out_tags(), http_entry(duration_ms=5)),  # on a bound: le is inclusive on both paths
        (out_tags(), http_entry(duration_ms=70)),
        (out_tags(), http_entry(duration_ms=70000, req_bytes=(100, 9000), resp_bytes=(80, 0))),
        # a second pod of the same workload: another Envoy series, the same Istio series
        (out_tags(host=f"{B2_IP}:9080"), http_entry(upstream=f"{B2_IP}:9080", duration_ms=3)),
        # no endpoint: no host, Envoy's flags
        (out_tags(host="-", code="503", flags="UH"),
         http_entry(upstream="", code=503, flags=("no_healthy_upstream",), duration_ms=0)),
        (out_tags(code="0", flags="UF,URX"), http_entry(code=None, duration_ms=1,
                                                        flags=("upstream_connection_failure",
                                                               "upstream_retry_limit_exceeded"))),
        # mutual TLS: the server certificate's SANs (a DNS one first), our own identity as the source principal
        (out_tags(peer=f"reviews.example,{RV_P}"), http_entry(upstream_sans=(f"reviews.example,{RV_P}", PP_P),
                                                              duration_ms=12)),
        # gRPC: the status number, protocol grpc
        (out_tags(grpc="14"), http_entry(grpc="14", content_type="application/grpc", duration_ms=2)),
        # another spelling of the same service: another Envoy series, the same Istio series (named by the cluster)
        (out_tags(authority="reviews.default.svc.cluster.local:9080"),
         http_entry(authority="reviews.default.svc.cluster.local:9080", duration_ms=7)),
        # a passthrough call out of the mesh: named by the Host the app asked for, as Istio
        (out_tags(host="192.0.2.80:80", cluster="PassthroughCluster", authority="example.org"),
         http_entry(upstream="192.0.2.80:80", cluster="PassthroughCluster", authority="example.org", duration_ms=30)),
    ]
    agg, out = same_requests(cases, OUTBOUND, PRODUCTPAGE)
    assert table(out.http) == table(agg.http)
    assert len(out.http) == 6  # 11 requests, 8 Envoy series, 6 Istio series
    by = {(l["response_code"], l["grpc_response_status"], l["destination_principal"]): (l, s) for l, s in
          ((dict(zip(istio.HTTP_LABELS, k)), s) for k, s in out.http.items()) if l["destination_service"] == REVIEWS}
    plain, s = by[("200", "", "unknown")]
    assert (plain["destination_workload"], s.requests) == ("reviews-v1", 6)  # both pods' and spellings' series
    out_of_mesh = [l for l in (dict(zip(istio.HTTP_LABELS, k)) for k in out.http) if l["destination_service"] ==
                   "example.org"]
    assert [(l["destination_workload"], l["destination_service_name"]) for l in out_of_mesh] == \
        [("unknown", "example.org")]
    assert (by[("200", "", RV_P)][0]["source_principal"], by[("200", "14", "unknown")][0]["request_protocol"]) == \
        (PP_P, "grpc")
    uh = by[("503", "", "unknown")][0]
    assert (uh["destination_workload"], uh["destination_service"], uh["response_flags"]) == ("unknown", REVIEWS, "UH")
    assert by[("0", "", "unknown")][0]["response_flags"] == "UF,URX"
    # the passthrough call's peer (an address out of the mesh) is the one unknown
    assert out.unknown_requests == 1 and out.held == () and out.dropped_series == 0


def test_inbound_series_name_the_caller_from_its_ip_and_the_service_from_the_inbound_port():
    outsider = "192.0.2.7"
    cases = [
        (in_tags(peer=PP_P), http_entry(downstream=A_IP, cluster="inbound|9080||", san=PP_P, local_san=RV_P,
                                        duration_ms=4)),
        (in_tags(peer=PP_P), http_entry(downstream=A_IP, cluster="inbound|9080||", san=PP_P, local_san=RV_P,
                                        duration_ms=40)),
        (in_tags(), http_entry(downstream=A_IP, cluster="inbound|9080||", duration_ms=1)),
        (in_tags(code="500", grpc="13"), http_entry(downstream=A_IP, cluster="inbound|9080||", code=500, grpc="13",
                                                    duration_ms=9)),
        (in_tags(host=outsider, flags="DC", code="0"),
         http_entry(downstream=outsider, cluster="inbound|9080||", code=None,
                    flags=("downstream_connection_termination",), duration_ms=600)),
    ]
    agg, out = same_requests(cases, INBOUND, REVIEWS_V1)
    assert table(out.http) == table(agg.http)
    by = {l["response_code"] + l["connection_security_policy"]: l
          for l in (dict(zip(istio.HTTP_LABELS, k)) for k in out.http)}
    mtls = by["200mutual_tls"]
    assert (mtls["source_workload"], mtls["source_principal"], mtls["destination_principal"],
            mtls["destination_service"]) == ("productpage-v1", PP_P, RV_P, REVIEWS)
    assert by["200none"]["source_principal"] == by["200none"]["destination_principal"] == "unknown"
    assert (by["500none"]["grpc_response_status"], by["500none"]["request_protocol"]) == ("13", "grpc")
    assert by["0none"]["source_workload"] == "unknown"
    assert out.unknown_requests == 1  # the outsider: no hold policy given, shown as unknown at once


def test_histograms_lagging_the_counter_and_the_real_envoy_format():
    # Envoy flushes histograms every 5 s: a series may have its counter and no histogram yet
    text = envoy_text([(out_tags(), 3, 10, 10)], histograms=False)
    out = convert(text, PRODUCTPAGE)
    [s] = out.http.values()
    assert (s.requests, s.duration.count, sum(s.duration.counts)) == (1, 0, 0)
    # lines as Envoy 1.40 prints them (the sums are approximations of its own)
    real = """# TYPE envoy_mizzen_requests_total counter
envoy_mizzen_requests_total{direction="outbound",peer="",host="127.0.0.1:17006",cluster="b",code="0",grpc="",flags="DC"} 3
# TYPE envoy_mizzen_request_duration_milliseconds histogram
""" + "".join(
        f'envoy_mizzen_request_duration_milliseconds_bucket{{direction="outbound",peer="",host="127.0.0.1:17006",'
        f'cluster="b",code="0",grpc="",flags="DC",le="{_le(b)}"}} {0 if b < 5 else 3}\n'
        for b in istio.DURATION_BUCKETS_MS + (float("inf"),)) + """\
envoy_mizzen_request_duration_milliseconds_sum{direction="outbound",peer="",host="127.0.0.1:17006",cluster="b",code="0",grpc="",flags="DC"} 9.4819277108433652756502851843
envoy_mizzen_request_duration_milliseconds_count{direction="outbound",peer="",host="127.0.0.1:17006",cluster="b",code="0",grpc="",flags="DC"} 3
# TYPE envoy_mizzen_future_stat counter
envoy_mizzen_future_stat 4
"""
    rest, series = native.split_envoy_text(real)
    assert rest == "# TYPE envoy_mizzen_future_stat counter\nenvoy_mizzen_future_stat 4\n"  # not ours: kept
    [(key, s)] = series.items()
    assert key == ("outbound", "", "127.0.0.1:17006", "b", "0", "", "DC", "")  # no authority tag: ""
    assert (s.requests, s.duration.counts[2], sum(s.duration.counts), s.duration.count) == (3, 3, 3, 3)
    assert abs(s.duration.sum - 9.48192771) < 1e-6
    # a tag value with an escaped quote, and Envoy bounds other than Istio's (projected, never over-counted)
    odd = ('envoy_mizzen_request_bytes_bucket{direction="inbound",peer="a\\"b",host="h",cluster="",code="200",'
           'grpc="",flags="-",le="50"} 2\n'
           'envoy_mizzen_request_bytes_bucket{direction="inbound",peer="a\\"b",host="h",cluster="",code="200",'
           'grpc="",flags="-",le="+Inf"} 5\n')
    [(key, s)] = native.split_envoy_text(odd)[1].items()
    assert key[1] == 'a"b'
    assert s.request_bytes.counts == [0, 0, 2, 0, 0, 0, 0, 0, 0, 3] and s.request_bytes.count == 5


def test_a_crafted_authority_cannot_forge_another_label():
    # the caller's app chooses the :authority, any byte but NUL, CR and LF: the separator, quotes, characters
    # str.splitlines() takes for line ends, a whole fake series; it stays the authority of its own series
    fake = (NATIVE_SEP.join(["inbound", A_IP, "inbound|9080||", "500", "UF"]) + '"} 99\x0benvoy_mizzen_requests_total{'
            + packed_labels(in_tags(code="503")) + "} 1000\x1c\x85")
    text = envoy_text([(out_tags(), 3, 10, 10), (out_tags(authority=fake), 4, 11, 12)])
    rest, series = native.split_envoy_text(text)
    assert len(series) == 2
    forged = series[tuple(out_tags(authority=fake)[t] for t in native.TAGS)]
    assert forged.requests == 1 and forged.duration.count == 1 and forged.response_bytes.sum == 12
    assert {k[0] for k in series} == {"outbound"} and {k[4] for k in series} == {"200"}
    # a `key` tag with too few fields is not ours: left out, not misread
    bad = 'envoy_mizzen_requests_total{key="outbound' + NATIVE_SEP + 'x",peer="",grpc=""} 5\n'
    assert native.split_envoy_text(bad)[1] == {}


def test_series_cap_admits_in_a_stable_order_and_counts_what_it_left_out():
    reqs = [(out_tags(code=str(c)), 1, 1, 1) for c in (200, 201, 202, 203, 204) for _ in range(c - 199)]
    _, series = native.split_envoy_text(envoy_text(reqs))
    conv = native.Converter(max_series=4)
    out = conv.convert(series, PRODUCTPAGE, DIR, taken=1)
    assert sorted(k[-4] for k in out.http) == ["200", "201", "202"]
    assert (out.dropped_series, out.dropped_requests) == (2, 4 + 5)
    # a new label set sorting first does not push out one already shown; keys held by the caller cost nothing
    _, series = native.split_envoy_text(envoy_text(reqs + [(out_tags(code="100"), 1, 1, 1)]))
    agg = Aggregator(PRODUCTPAGE, DIR)
    agg.add_request(from_http_entry(http_entry(code=203), OUTBOUND), NOW)
    out = conv.convert(series, PRODUCTPAGE, DIR, existing=agg.http, taken=agg.series_count)
    assert sorted(k[-4] for k in out.http) == ["200", "201", "202", "203"]
    assert (out.dropped_series, out.dropped_requests) == (2, 1 + 5)


def _scrape_setup(envoy: str) -> tuple[web.Application, list]:
    texts = [envoy]

    async def stats(request: web.Request) -> web.Response:
        return web.Response(text=texts[0])
    app = web.Application()
    app.router.add_get("/stats/prometheus", stats)
    return app, texts


@contextlib.asynccontextmanager
async def _served(app: web.Application):
    """(the started test server, a work dir for the Telemetry's socket), both gone afterwards."""
    d = tempfile.mkdtemp(prefix="mznat-", dir="/tmp")
    srv = TestServer(app)
    await srv.start_server()
    try:
        yield srv, d
    finally:
        await srv.close()
        shutil.rmtree(d, ignore_errors=True)


def _native_telemetry(srv: TestServer, d: str, **kw) -> Telemetry:
    """A Telemetry reading the served Envoy text as the agent reads its Envoy: all of it, and the native
    series alone (native.STATS_PATH)."""
    url = str(srv.make_url("/stats/prometheus"))
    t = Telemetry(REVIEWS_V1, os.path.join(d, "als.sock"), envoy_stats=http_get(url),
                  envoy_native=http_get(url + native.STATS_PATH[len("/stats/prometheus"):]), **kw)
    t.agg.set_directory(DIR)
    return t


@contextlib.asynccontextmanager
async def _window_of(t: Telemetry):
    """(t, read()): the Telemetry's HTTP routes served, read() GETs its /telemetry/window."""
    app = web.Application()
    app.router.add_routes(t.routes())
    wsrv = TestServer(app)
    await wsrv.start_server()

    async def read() -> dict:
        async with aiohttp.ClientSession() as s:
            async with s.get(wsrv.make_url("/telemetry/window")) as r:
                return await r.json()
    try:
        yield t, read
    finally:
        await wsrv.close()


def _inbound_message(*entries) -> als_pb2.StreamAccessLogsMessage:
    m = als_pb2.StreamAccessLogsMessage()
    m.identifier.log_name = als_log_name("inbound")
    m.http_logs.log_entry.extend(entries)
    return m


def test_the_merged_scrape_has_each_istio_family_once_summed_with_the_access_log_series():
    async def run() -> None:
        reqs = [(in_tags(), 3, 10, 10), (in_tags(), 30, 10, 10), (in_tags(code="404"), 1, 10, 10),
                (in_tags(host="192.0.2.9"), 1, 10, 10)]
        app, _ = _scrape_setup(envoy_text(reqs))
        async with _served(app) as (srv, d):
            t = Telemetry(REVIEWS_V1, os.path.join(d, "als.sock"),
                          envoy_stats=http_get(str(srv.make_url("/stats/prometheus"))))
            t.agg.set_directory(DIR)
            # a proxy still on the access-log path: one request of the same label set as the native 200s, and TCP
            t.ingest(_inbound_message(http_entry(downstream=A_IP, cluster="inbound|9080||", duration_ms=7)), INBOUND)
            assert not t._wake.is_set()
            text = await t.prometheus_text()
            assert "envoy_mizzen" not in text and 'envoy_cluster_upstream_cx_total{envoy_cluster_name="b"} 10' in text
            assert t._wake.is_set()  # the native series of 192.0.2.9: the directory does not know it
            for fam in istio.HTTP_FAMILIES:
                name = fam.name + ("_total" if fam.kind == "counter" else "")
                assert text.count(f"# TYPE {name} ") == 1
            fams = {f.name: f for f in text_string_to_metric_families(text)}
            by = {(s.labels["source_workload"], s.labels["response_code"]): s.value
                  for s in fams["istio_requests"].samples}
            assert by == {("productpage-v1", "200"): 3, ("productpage-v1", "404"): 1, ("unknown", "200"): 1}
            count = {(s.labels["source_workload"], s.labels["response_code"]): s.value
                     for s in fams["istio_request_duration_milliseconds"].samples if s.name.endswith("_count")}
            assert count[("productpage-v1", "200")] == 3
            le10 = [s.value for s in fams["istio_request_duration_milliseconds"].samples
                    if s.name.endswith("_bucket") and s.labels["le"] == "10" and s.labels["response_code"] == "200"
                    and s.labels["source_workload"] == "productpage-v1"]
            assert le10 == [2]  # 3 (native) + 7 (access log) under 10 ms, 30 above
            assert fams["mizzen_agent_telemetry_series"].samples[0].value == 3
            assert t.agg.http[next(iter(t.agg.http))].requests == 1  # the aggregator's own series is untouched

    asyncio.run(run())


def test_without_native_series_the_scrape_is_unchanged():
    async def run() -> None:
        app, _ = _scrape_setup(OTHER_ENVOY)
        async with _served(app) as (srv, d):
            t = Telemetry(REVIEWS_V1, os.path.join(d, "als.sock"),
                          envoy_stats=http_get(str(srv.make_url("/stats/prometheus"))))
            t.agg.set_directory(DIR)
            t.ingest(_inbound_message(http_entry(downstream=A_IP, cluster="inbound|9080||"),
                                      http_entry(downstream="192.0.2.1", cluster="inbound|9080||", code=503)), INBOUND)
            text = await t.prometheus_text()
            assert text == exposition.merge(OTHER_ENVOY, exposition.render(t.agg), t.self_metrics())
            assert native.split_envoy_text(OTHER_ENVOY)[0] is OTHER_ENVOY
            assert exposition.render(t.agg, {}) == exposition.render(t.agg) == \
                exposition.render_series(t.agg.http, t.agg.tcp)

    asyncio.run(run())


def test_a_new_peer_waits_for_the_refresh_and_a_named_series_keeps_its_labels():
    async def run() -> None:
        outsider = "192.0.2.7"
        directories = [Directory(INSTANCES2[1:], SERVICES), DIR, Directory(INSTANCES2[1:], SERVICES)]

        async def fetch() -> Directory:
            return directories.pop(0)
        app, texts = _scrape_setup(envoy_text([(in_tags(), 1, 1, 1)]))
        async with _served(app) as (srv, d):
            t = Telemetry(REVIEWS_V1, os.path.join(d, "als.sock"), fetch_directory=fetch,
                          envoy_stats=http_get(str(srv.make_url("/stats/prometheus"))))

            async def requests() -> dict:
                fams = {f.name: f for f in text_string_to_metric_families(await t.prometheus_text())}
                return {s.labels["source_workload"]: s.value for s in fams["istio_requests"].samples} \
                    if "istio_requests" in fams else {}
            assert await t.refresh_directory()  # the first directory does not know the caller (productpage)
            assert await requests() == {}  # its series waits for the refresh it wakes
            assert t._wake.is_set()
            t._wake.clear()
            assert await t.refresh_directory()  # now it does
            assert await requests() == {"productpage-v1": 1}
            # productpage's pod leaves the directory: its past requests are not moved to `unknown`
            assert await t.refresh_directory()
            texts[0] = envoy_text([(in_tags(), 1, 1, 1)] * 4 + [(in_tags(host=outsider), 1, 1, 1)])
            assert await requests() == {"productpage-v1": 4}  # the outsider's new series waits once
            assert t._wake.is_set()
            directories.append(Directory(INSTANCES2[1:], SERVICES))
            assert await t.refresh_directory()
            assert await requests() == {"productpage-v1": 4, "unknown": 1}  # the refresh did not name it: unknown

    asyncio.run(run())


# ---------------------------------------------------------------------- the golden window (native.WindowFeed)
def _series(reqs: list) -> dict:
    return native.split_envoy_text(envoy_text(reqs))[1]


def _lagging(counted: list, flushed: list) -> str:
    """Envoy's text when its counter has `counted` and its histograms (flushed every 5 s) only `flushed`."""
    return envoy_text(counted, histograms=False) + envoy_text(flushed)[len(envoy_text(flushed, histograms=False)):]


def _buckets(*ms: float) -> list[int]:
    out = [0] * (len(istio.DURATION_BUCKETS_MS) + 1)
    for v in ms:
        out[next((i for i, b in enumerate(istio.DURATION_BUCKETS_MS) if v <= b), len(istio.DURATION_BUCKETS_MS))] += 1
    return out


def test_window_feed_takes_the_increase_per_envoy_series_from_the_histograms():
    conv, feed = native.Converter(), native.WindowFeed(since=NOW, max_gap=60)

    def update(series: dict, now: float) -> dict:
        return feed.update(series, conv.convert(series, REVIEWS_V1, DIR).labels, now)
    first = [(in_tags(), 3, 1, 1), (in_tags(code="503"), 700, 1, 1), (in_tags(host=B2_IP), 1, 1, 1)]
    # the first reading, within max_gap of the agent's start: all of it (Envoy counted nothing before)
    got = update(_series(first), NOW + 20)
    assert {k[1]: (i.requests, i.successes) for k, i in got.items()} == {"productpage-v1": (2, 1), "reviews-v1": (1, 1)}
    pp = ("destination", "productpage-v1", "default", "reviews-v1", "default", REVIEWS, "v1")
    assert got[pp].counts == _buckets(3, 700) and got[pp].sum == 703
    assert update(_series(first), NOW + 25) == {}  # nothing new
    more = first + [(in_tags(peer=PP_P), 4, 1, 1), (in_tags(), 40, 1, 1), (in_tags(code="500", grpc="13"), 2, 1, 1)]
    [(key, inc)] = update(_series(more), NOW + 30).items()  # a new series (mutual TLS) counts from its first request
    assert (key, inc.requests, inc.successes, inc.counts, inc.sum) == (pp, 3, 2, _buckets(4, 40, 2), 46)
    # the counter runs ahead of the histograms (Envoy flushes them every 5 s): the window follows the histograms
    later = more + [(in_tags(), 9, 1, 1)]
    assert update(native.split_envoy_text(_lagging(later, more))[1], NOW + 32) == {}
    assert update(_series(later), NOW + 35)[pp].counts == _buckets(9)
    # Envoy restarted: a count that went down is a new count, as Prometheus' rate takes it
    restarted = [(in_tags(), 12, 1, 1), (in_tags(), 12, 1, 1)]
    [(key, inc)] = update(_series(restarted), NOW + 40).items()
    assert (inc.requests, inc.successes, inc.counts) == (2, 2, _buckets(12, 12))
    # a series absent from a reading keeps its last one: when it is back, only what it grew by
    assert update({}, NOW + 45) == {}
    assert update(_series(restarted + [(in_tags(), 1, 1, 1)]), NOW + 50)[pp].requests == 1
    # a reading long after the previous one: a baseline (when those requests were made is unknown)
    assert update(_series(restarted + [(in_tags(), 1, 1, 1)] * 50), NOW + 200) == {}
    assert update(_series(restarted + [(in_tags(), 1, 1, 1)] * 51), NOW + 205)[pp].requests == 1


def test_window_feed_first_reading_long_after_the_start_is_a_baseline_and_held_series_wait():
    conv, feed = native.Converter(), native.WindowFeed(since=NOW, max_gap=60)
    reqs = [(in_tags(), 3, 1, 1)] * 5
    assert feed.update(_series(reqs), conv.convert(_series(reqs), REVIEWS_V1, DIR).labels, NOW + 600) == {}
    # a series held (its peer is new) is not counted until it is named, then all of it
    outsider = [(in_tags(host="192.0.2.7"), 3, 1, 1)] * 2
    s = _series(reqs + outsider)
    out = conv.convert(s, REVIEWS_V1, DIR, hold=lambda addr: True)
    assert out.held == ("192.0.2.7",) and feed.update(s, out.labels, NOW + 605) == {}
    out = conv.convert(s, REVIEWS_V1, DIR, hold=lambda addr: False)
    [(key, inc)] = feed.update(s, out.labels, NOW + 610).items()
    assert (key[1], inc.requests) == ("unknown", 2)


def _native_setup(full: str) -> tuple[web.Application, list, dict]:
    """Envoy's admin (all stats, and the native series alone as its filter gives them), counting the fetches."""
    texts, hits = [full], {"full": 0, "native": 0}

    async def stats(request: web.Request) -> web.Response:
        which = "native" if request.query.get("filter") == "^mizzen\\." else "full"
        hits[which] += 1
        text = texts[0]
        if which == "native":
            text = "".join(line for line in text.splitlines(keepends=True)
                           if line.startswith(native.PREFIX) or line.startswith("# TYPE envoy_mizzen"))
        return web.Response(text=text)
    app = web.Application()
    app.router.add_get("/stats/prometheus", stats)
    return app, texts, hits


def test_the_window_gets_the_native_requests_at_scrapes_and_window_reads():
    async def run() -> None:
        clock = [NOW - 600]
        app, texts, hits = _native_setup(envoy_text([(in_tags(), 3, 1, 1)] * 10))
        async with _served(app) as (srv, d), _window_of(_native_telemetry(srv, d, clock=lambda: clock[0])) as (
                t, window):
            async def rows() -> list:
                return (await window())["rows"]
            clock[0] = NOW
            await t.prometheus_text()  # the first reading, 10 min after the start: a baseline
            assert await rows() == [] and hits == {"full": 1, "native": 1}
            texts[0] = envoy_text([(in_tags(), 3, 1, 1)] * 10 + [(in_tags(), 4, 1, 1), (in_tags(), 40, 1, 1),
                                                                 (in_tags(code="503"), 700, 1, 1)])
            clock[0] = NOW + 5
            [row] = await rows()  # the window read reads Envoy's native series (filtered)
            assert hits == {"full": 1, "native": 2}
            assert (row["source_workload"], row["destination_workload"], row["requests"], row["success"]) == \
                ("productpage-v1", "reviews-v1", 3, 2)
            assert (row["durationCounts"], row["durationSum"]) == (_buckets(4, 40, 700), 744)
            [stat_row] = golden.stat([{"rows": [row], "seconds": 60}])
            assert (stat_row["name"], stat_row["requests"], stat_row["success_rate"]) == ("reviews-v1", 3, 0.6667)
            # the same values read again (a scrape): nothing added; the scrape's Istio series are Envoy's totals
            text = await t.prometheus_text()
            assert (await rows())[0]["requests"] == 3
            fams = {f.name: f for f in text_string_to_metric_families(text)}
            assert sum(s.value for s in fams["istio_requests"].samples) == 13
            # Envoy restarted (its counts went down): its new counts are new requests
            texts[0] = envoy_text([(in_tags(code="503"), 2, 1, 1)] * 2)
            clock[0] = NOW + 10
            await t.prometheus_text()
            [row] = await rows()
            assert (row["requests"], row["success"]) == (5, 2)
            # a reading older than one already fed (overlapping fetches) is not fed
            t._native_applied += 5
            texts[0] = envoy_text([(in_tags(code="503"), 2, 1, 1)] * 9)
            await t.prometheus_text()
            assert t._native_applied == t._native_fetches + 4 and (await rows())[0]["requests"] == 5

    asyncio.run(run())


def test_without_native_series_the_window_is_untouched_and_envoy_is_not_read_again():
    async def run() -> None:
        app, texts, hits = _native_setup(OTHER_ENVOY)
        async with _served(app) as (srv, d), _window_of(_native_telemetry(
                srv, d, native_seconds=0.05, native_probe_seconds=30)) as (t, window):
            async def snapshot() -> dict:
                return {k: v for k, v in (await window()).items() if k != "seconds"}
            await t.start()
            try:
                t.ingest(_inbound_message(http_entry(downstream=A_IP, cluster="inbound|9080||", duration_ms=7)), INBOUND)
                for _ in range(3):
                    await t.prometheus_text()
                await asyncio.sleep(0.3)  # the feed loop waits: no native series
                assert hits == {"full": 3, "native": 0}
                before = await snapshot()
                assert [r["requests"] for r in before["rows"]] == [1]  # the access-log request only
                assert hits["native"] == 0  # a scrape read Envoy moments ago: no probe
                t._native_read_at -= 60
                assert await snapshot() == before and hits["native"] == 1  # a probe, at most every 30 s
                assert await snapshot() == before and hits["native"] == 1
                await asyncio.sleep(0.3)
                assert hits == {"full": 3, "native": 1}
                # native series appear: the loop reads them every native_seconds, and stops when they are gone
                texts[0] = envoy_text([(in_tags(), 3, 1, 1)])
                await t.prometheus_text()
                await asyncio.sleep(0.5)
                assert hits["native"] >= 4
                texts[0] = OTHER_ENVOY
                await asyncio.sleep(0.2)
                n = hits["native"]
                await asyncio.sleep(0.3)
                assert hits["native"] == n and not t._native_on.is_set()
            finally:
                await t.stop()
            assert t._native_task is None

    asyncio.run(run())


def _hs(requests: int, durations: tuple[float, ...] = ()) -> "native.HttpSeries":
    s = native.HttpSeries()
    s.requests = requests
    for d in durations:
        s.duration.counts[0 if d <= 1 else -1] += 1
        s.duration.count += 1
        s.duration.sum += d
    return s


def test_cumulative_keeps_series_envoy_freed_and_adds_up_across_resets():
    """A listener update frees the series no new request touched (or an Envoy restart resets all): Istio's
    counters must not go down, or Prometheus counts the other series of the same labels twice."""
    a, b = ("outbound", "a"), ("outbound", "b")
    c = native.Cumulative()
    out = c.update({a: _hs(5, (1, 1, 9, 9, 9)), b: _hs(2, (1, 1))})
    assert (out[a].requests, out[b].requests) == (5, 2) and c.resets == 0
    out = c.update({b: _hs(3, (1, 1, 1))})  # a was freed: it keeps its last values
    assert (out[a].requests, out[a].duration.count, out[b].requests) == (5, 5, 3)
    out = c.update({a: _hs(1, (9,)), b: _hs(4, (1, 1, 1, 1))})  # a created again, from zero: a reset
    assert (out[a].requests, out[a].duration.count, out[a].duration.sum, c.resets) == (6, 6, 38.0, 1)
    assert out[a].duration.counts[0] == 2 and out[a].duration.counts[-1] == 4
    out = c.update({a: _hs(2, (9, 9)), b: _hs(4, (1, 1, 1, 1))})
    assert (out[a].requests, out[b].requests, c.resets) == (7, 4, 1)
    assert c.view().keys() == out.keys() and c.view()[a].requests == 7
    # a histogram that lags its counter (Envoy flushes histograms every 5 s) is not a reset
    c2 = native.Cumulative()
    c2.update({a: _hs(1)})
    assert c2.update({a: _hs(3, (1, 1))})[a].requests == 3 and c2.resets == 0


def test_a_bounded_cumulative_forgets_absent_series_first():
    c = native.Cumulative(max_kept=2)
    c.update({("x", str(i)): _hs(1) for i in range(2)})
    out = c.update({("x", "2"): _hs(1), ("x", "0"): _hs(2)})
    assert sorted(out) == [("x", "0"), ("x", "2")]
