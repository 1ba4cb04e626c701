"""Istio series from access-log entries: labels on each side, cardinality, exposition, windows."""
from __future__ import annotations

from envoy.data.accesslog.v3 import accesslog_pb2
from prometheus_client.parser import text_string_to_metric_families

from mizzen.telemetry import exposition, istio
from mizzen.telemetry.aggregate import Aggregator, SelfInfo, Window
from mizzen.telemetry.peers import Directory, WorkloadInfo, parse_cluster, principal_of
from mizzen.telemetry.records import INBOUND, OUTBOUND, from_http_entry, from_tcp_entry, response_flags
from tests.telemetry.entries import A_IP, B_IP, INSTANCES, REVIEWS, SERVICES, http_entry, tcp_entry

DIR = Directory(INSTANCES, SERVICES)
PRODUCTPAGE = SelfInfo(WorkloadInfo.from_labels("productpage-v1", "default", {"app": "productpage", "version": "v1"}))
REVIEWS_V1 = SelfInfo(WorkloadInfo.from_labels("reviews-v1", "default", {"app": "reviews", "version": "v1"}),
                      {9080: REVIEWS})
NOW = 1_700_000_000.0


def labels(agg: Aggregator) -> list[dict[str, str]]:
    return [dict(zip(istio.HTTP_LABELS, k)) for k in agg.http]


def test_source_side_names_the_callee_from_the_cluster_and_the_upstream_address():
    agg = Aggregator(PRODUCTPAGE, DIR)
    agg.add_request(from_http_entry(http_entry(), OUTBOUND), NOW)
    [l] = labels(agg)
    assert l["reporter"] == "source"
    assert (l["source_workload"], l["source_app"], l["source_version"]) == ("productpage-v1", "productpage", "v1")
    assert l["destination_service"] == REVIEWS
    assert (l["destination_service_name"], l["destination_service_namespace"]) == ("reviews", "default")
    assert (l["destination_workload"], l["destination_version"]) == ("reviews-v1", "v1")
    assert (l["request_protocol"], l["response_code"], l["response_flags"]) == ("http", "200", "-")
    assert l["source_principal"] == l["destination_principal"] == "unknown"  # no mTLS: nothing proves it
    assert l["connection_security_policy"] == "unknown"


def test_destination_side_names_the_caller_from_its_address_and_the_service_from_the_authority():
    agg = Aggregator(REVIEWS_V1, DIR)
    agg.add_request(from_http_entry(http_entry(downstream=A_IP, upstream="127.0.0.4:9080", cluster="inbound|9080||"),
                                    INBOUND), NOW)
    [l] = labels(agg)
    assert l["reporter"] == "destination"
    assert (l["source_workload"], l["source_workload_namespace"]) == ("productpage-v1", "default")
    assert (l["destination_workload"], l["destination_service"]) == ("reviews-v1", REVIEWS)
    assert l["connection_security_policy"] == "none"


def test_destination_side_falls_back_to_the_port_service_and_knows_principals_only_from_a_certificate():
    agg = Aggregator(REVIEWS_V1, DIR)
    san = principal_of("default", "bookinfo-productpage")
    agg.add_request(from_http_entry(http_entry(downstream="10.9.9.9", authority="10.244.0.3:9080",
                                               cluster="inbound|9080||", san=san), INBOUND), NOW)
    [l] = labels(agg)
    assert l["destination_service"] == REVIEWS  # the authority is a pod IP: the port's service
    assert l["source_workload"] == "unknown"  # an address the directory does not know
    assert l["source_principal"] == san and l["connection_security_policy"] == "mutual_tls"
    assert agg.unknown_peers == 1


def test_grpc_status_protocol_and_response_flags():
    e = http_entry(code=200, grpc="14", content_type="application/grpc")
    rec = from_http_entry(e, OUTBOUND)
    assert (rec.protocol, rec.grpc_status) == ("grpc", "14")
    assert not istio.is_success(rec.response_code, rec.grpc_status)
    rec = from_http_entry(http_entry(code=503, flags=("no_healthy_upstream", "upstream_retry_limit_exceeded")),
                          OUTBOUND)
    assert rec.response_flags == "UH,URX"
    assert response_flags(accesslog_pb2.ResponseFlags()) == "-"
    assert from_http_entry(http_entry(code=None, flags=("upstream_connection_failure",)), OUTBOUND).response_code == 0


def test_a_thousand_distinct_paths_do_not_add_series():
    agg = Aggregator(PRODUCTPAGE, DIR)
    agg.add_request(from_http_entry(http_entry(path="/reviews/0"), OUTBOUND), NOW)
    before = agg.series_count
    for i in range(1000):
        agg.add_request(from_http_entry(http_entry(path=f"/reviews/{i}?user={i}"), OUTBOUND), NOW)
    assert agg.series_count == before == 1
    assert "reviews/5" not in exposition.render(agg)


def test_series_cap_drops_and_counts():
    agg = Aggregator(PRODUCTPAGE, DIR, max_series=3)
    for i in range(5):  # passthrough calls to 5 different hosts: 5 label sets
        agg.add_request(from_http_entry(http_entry(cluster="PassthroughCluster", authority=f"ext{i}.example:80",
                                                   upstream=f"192.0.2.{i}:80"), OUTBOUND), NOW)
    assert agg.series_count == 3 and agg.dropped_records == 2
    assert {l["destination_service"] for l in labels(agg)} == {"ext0.example", "ext1.example", "ext2.example"}


def test_exposition_is_valid_prometheus_text_with_cumulative_buckets():
    agg = Aggregator(PRODUCTPAGE, DIR)
    for ms in (0.3, 3, 3, 70, 70000):
        agg.add_request(from_http_entry(http_entry(duration_ms=ms), OUTBOUND), NOW)
    agg.add_request(from_http_entry(http_entry(code=503), OUTBOUND), NOW)
    agg.add_tcp(from_tcp_entry(tcp_entry(kind=accesslog_pb2.TcpUpstreamConnected), OUTBOUND))
    fams = {f.name: f for f in text_string_to_metric_families(exposition.render(agg))}
    assert set(fams) == {"istio_requests", "istio_request_duration_milliseconds", "istio_request_bytes",
                         "istio_response_bytes", "istio_tcp_sent_bytes", "istio_tcp_received_bytes",
                         "istio_tcp_connections_opened", "istio_tcp_connections_closed"}
    total = {s.labels["response_code"]: s.value for s in fams["istio_requests"].samples}
    assert total == {"200": 5, "503": 1}
    buckets = {s.labels["le"]: s.value for s in fams["istio_request_duration_milliseconds"].samples
               if s.name.endswith("_bucket") and s.labels["response_code"] == "200"}
    assert (buckets["0.5"], buckets["5"], buckets["100"], buckets["60000"], buckets["300000"], buckets["+Inf"]) == \
        (1, 3, 4, 4, 5, 5)
    assert len(buckets) == len(istio.DURATION_BUCKETS_MS) + 1


def test_tcp_bytes_are_deltas_of_cumulative_counts_and_connections_open_and_close():
    agg = Aggregator(PRODUCTPAGE, DIR)
    for kind, rx, tx in ((accesslog_pb2.TcpUpstreamConnected, 0, 0), (accesslog_pb2.TcpPeriodic, 100, 40),
                         (accesslog_pb2.TcpPeriodic, 150, 90), (accesslog_pb2.TcpConnectionEnd, 200, 100)):
        agg.add_tcp(from_tcp_entry(tcp_entry(kind=kind, received=rx, sent=tx), OUTBOUND))
    [s] = agg.tcp.values()
    assert (s.opened, s.closed, s.received, s.sent) == (1, 1, 200, 100)
    # an end with no earlier entry (agent restarted meanwhile) still opens and closes once
    agg.add_tcp(from_tcp_entry(tcp_entry(kind=accesslog_pb2.TcpConnectionEnd, stream="s2", received=7, sent=3),
                               OUTBOUND))
    assert (s.opened, s.closed, s.received, s.sent) == (2, 2, 207, 103)
    [key] = agg.tcp
    assert dict(zip(istio.TCP_LABELS, key))["request_protocol"] == "tcp"


def test_window_forgets_old_slots_and_reports_covered_time():
    w = Window(slots=6, slot_seconds=10, started=NOW)
    for i in range(100):
        w.observe(("k",), ok=i % 10 != 0, duration_ms=5, now=NOW + 1)
    snap = w.snapshot(NOW + 21)
    [row] = snap["rows"]
    assert (row["requests"], row["success"]) == (100, 90)
    assert snap["seconds"] == 21
    assert w.snapshot(NOW + 75)["rows"] == []  # the slot of NOW+1 is older than the 60 s window
    assert w.snapshot(NOW + 500)["seconds"] <= 60


def test_directory_shared_loopback_address_resolves_by_port_only():
    d = Directory([{"address": "127.0.0.1", "workload": "a", "namespace": "x", "ports": [80], "portMap": {"80": 18080}},
                   {"address": "127.0.0.1", "workload": "b", "namespace": "x", "ports": [80], "portMap": {"80": 18081}}],
                  SERVICES)
    assert d.workload_at("127.0.0.1", 18081).workload == "b"
    assert d.workload_at("127.0.0.1").workload == "unknown"  # several workloads there: nobody in particular
    assert d.service_for_authority("reviews:9080", "default") == REVIEWS
    assert d.service_for_authority("reviews", "other") == ""  # short names only inside their namespace
    assert d.service_for_authority("reviews.default:9080", "other") == REVIEWS
    assert d.service_for_authority("10.96.0.11:9080", "other") == REVIEWS
    assert parse_cluster(f"outbound|9080|v2|{REVIEWS}") == ("outbound", 9080, "v2", REVIEWS)
    assert parse_cluster("PassthroughCluster") is None
    assert DIR.workload_at(B_IP).version == "v1"


def test_destination_side_names_its_own_principal_only_for_a_request_that_came_over_mutual_tls():
    me = principal_of("default", "bookinfo-reviews")
    reviews = SelfInfo(REVIEWS_V1.workload, REVIEWS_V1.port_services, principal=me)
    agg = Aggregator(reviews, DIR)
    san = principal_of("default", "bookinfo-productpage")
    agg.add_request(from_http_entry(http_entry(downstream=A_IP, upstream="127.0.0.4:9080", cluster="inbound|9080||",
                                               san=san), INBOUND), NOW)
    agg.add_request(from_http_entry(http_entry(downstream=A_IP, upstream="127.0.0.4:9080", cluster="inbound|9080||"),
                                    INBOUND), NOW)
    by_policy = {l["connection_security_policy"]: l for l in labels(agg)}
    assert (by_policy["mutual_tls"]["source_principal"], by_policy["mutual_tls"]["destination_principal"]) == (san, me)
    # plain text: our certificate was not presented, nothing is proven on either side
    assert by_policy["none"]["source_principal"] == by_policy["none"]["destination_principal"] == "unknown"


def test_source_side_names_both_principals_from_the_certificates_of_a_mutual_tls_upstream():
    """Istio's semantics for reporter=source: source_principal is the caller's own identity (the client
    certificate it presented), destination_principal the server certificate's SAN; Envoy gives both through
    the outbound entry's custom tags (%UPSTREAM_LOCAL_URI_SAN% / %UPSTREAM_PEER_URI_SAN%)."""
    agg = Aggregator(PRODUCTPAGE, DIR)
    pp, rv = principal_of("default", "bookinfo-productpage"), principal_of("default", "bookinfo-reviews")
    agg.add_request(from_http_entry(http_entry(upstream_sans=(rv, pp)), OUTBOUND), NOW)
    agg.add_request(from_http_entry(http_entry(upstream_sans=("-", "-"), code=503), OUTBOUND), NOW)  # plain text
    # a certificate with a DNS SAN first and several SANs: the SPIFFE one is the identity
    agg.add_request(from_http_entry(http_entry(upstream_sans=(f"reviews.example,{rv}", pp), code=404), OUTBOUND), NOW)
    by_code = {l["response_code"]: l for l in labels(agg)}
    assert (by_code["200"]["source_principal"], by_code["200"]["destination_principal"]) == (pp, rv)
    assert by_code["404"]["destination_principal"] == rv
    assert by_code["503"]["source_principal"] == by_code["503"]["destination_principal"] == "unknown"
    assert {l["connection_security_policy"] for l in by_code.values()} == {"unknown"}  # as Istio, on this side
    # a server certificate without a SPIFFE SAN (e.g. DestinationRule SIMPLE TLS to an outside host): no identity
    agg2 = Aggregator(PRODUCTPAGE, DIR)
    agg2.add_request(from_http_entry(http_entry(upstream_sans=("api.example.com", pp)), OUTBOUND), NOW)
    [l] = labels(agg2)
    assert l["source_principal"] == l["destination_principal"] == "unknown"


def test_destination_side_takes_its_principal_from_the_certificate_it_presented():
    agg = Aggregator(REVIEWS_V1, DIR)  # SelfInfo without a principal: the certificate alone says it
    pp, rv = principal_of("default", "bookinfo-productpage"), principal_of("default", "bookinfo-reviews")
    agg.add_request(from_http_entry(http_entry(downstream=A_IP, cluster="inbound|9080||", san=pp, local_san=rv),
                                    INBOUND), NOW)
    [l] = labels(agg)
    assert (l["source_principal"], l["destination_principal"], l["connection_security_policy"]) == (pp, rv, "mutual_tls")
