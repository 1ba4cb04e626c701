"""The one duration parser (Go/Istio syntax) and its use by every kind: each duration field accepts the same
syntax, rejects the same mistakes, and the translator renders the value the parser computed."""
from __future__ import annotations

import textwrap

import pytest

from mizzen.api import InvalidConfig, load_text
from mizzen.api.duration import MAX_NS, check_duration, duration_ns, duration_seconds


@pytest.mark.parametrize("text,ns", [
    ("1m30s", 90 * 10**9), ("1.5s", 1_500_000_000), ("100ms", 100_000_000), ("1h2m", 3720 * 10**9),
    ("300us", 300_000), ("300µs", 300_000), ("300μs", 300_000), ("10ns", 10), ("0", 0), (".5s", 500_000_000),
    ("1.s", 10**9), ("1h1h", 7200 * 10**9), ("+2s", 2 * 10**9), ("-1.5s", -1_500_000_000),
    ("0.000000001s", 1), ("1.0000000009s", 10**9),  # Go truncates below a nanosecond
    ("2562047h", 2562047 * 3600 * 10**9),
])
def test_go_duration_syntax(text: str, ns: int) -> None:
    assert duration_ns(text) == ns


@pytest.mark.parametrize("text,why", [
    ("1", "missing unit"), ("1.5", "missing unit"), ("", "use a number with a unit"), ("s", "use a number"),
    ("1x", "use a number"), ("1e3s", "use a number"), (" 1s", "use a number"), ("1s ", "use a number"),
    ("1 s", "use a number"), ("--1s", "use a number"), (".s", "use a number"),
    ("2562048h", "out of range"), ("999999999999h", "out of range"), ("9" * 60 + "s", "out of range"),
    ("9" * 310 + "s", "too long"),
])
def test_bad_durations_say_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        duration_ns(text)


def test_non_string_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="a string with a unit"):
        duration_ns(30)  # type: ignore[arg-type]


def test_bounds_of_a_field() -> None:
    assert check_duration("1ms") == "1ms"
    with pytest.raises(ValueError, match="at least 1ms"):
        check_duration("999us")
    assert check_duration("0s", minimum_ns=0) == "0s"
    with pytest.raises(ValueError, match="must not be negative"):
        check_duration("-1s", minimum_ns=0)
    with pytest.raises(ValueError, match="at most 1h"):
        check_duration("61m", maximum_ns=3600 * 10**9)
    assert duration_seconds("2562047h") * 1e9 <= MAX_NS


def _load(doc: str):
    return load_text(textwrap.dedent(doc)).resources[0]


DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: hello
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: %s}}
"""
VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v}
spec:
  hosts: [hello]
  http:
  - route: [{destination: {host: hello}}]
    timeout: %s
    retries: {attempts: 2, perTryTimeout: %s}
"""


@pytest.mark.parametrize("text", ["1m30s", "1h2m", "1.5s", "250ms", "1500000us"])
def test_every_kind_takes_go_syntax(text: str) -> None:
    assert _load(DR % text).spec.traffic_policy.connection_pool.tcp.connect_timeout == text
    vs = _load(VS % (text, text))
    assert vs.spec.http[0].timeout == text and vs.spec.http[0].retries.per_try_timeout == text


@pytest.mark.parametrize("doc,path", [
    (DR % "999999999999h", "spec.trafficPolicy.connectionPool.tcp.connectTimeout"),
    (DR % "1.5", "spec.trafficPolicy.connectionPool.tcp.connectTimeout"),
    (VS % ("10s", "1x"), "spec.http[0].retries.perTryTimeout"),
    (VS % ("999999999999h", "1s"), "spec.http[0].timeout"),
])
def test_every_kind_rejects_the_same_mistakes_naming_the_field(doc: str, path: str) -> None:
    with pytest.raises(InvalidConfig) as e:
        _load(doc)
    assert [i.path for i in e.value.issues] == [path]
    assert "invalid duration" in e.value.issues[0].message


def test_translation_uses_the_parsed_value() -> None:
    from mizzen.model import Instance, Proxy, Snapshot
    from mizzen.model.types import CLUSTER
    from mizzen.translate import Renderer
    from envoy.config.cluster.v3 import cluster_pb2

    svc = textwrap.dedent("""
        apiVersion: v1
        kind: Service
        metadata: {name: hello}
        spec: {ports: [{port: 80, name: http}], selector: {app: hello}}
        """)
    res = load_text(svc + "---\n" + textwrap.dedent(DR % "1m30s")).resources
    snap = Snapshot.build(res, [Instance(id="default.h", namespace="default", workload="hello", address="10.0.0.1",
                                         ports=(80,), labels=(("app", "hello"),))])
    out = Renderer(snap).resources_for(Proxy(id="p", namespace="default"))
    c = cluster_pb2.Cluster.FromString(out[CLUSTER]["outbound|80||hello.default.svc.cluster.local"].payload)
    assert c.connect_timeout.seconds == 90


def test_the_cli_chaos_and_consul_parsers_are_the_one_parser_plus_their_number_forms() -> None:
    """`mizzen chaos`, the Consul API and the CA TTL options read Go syntax through api.duration (so `1m30s`
    works everywhere), each adding only its own number form: seconds (chaos, Consul), days (TTLs)."""
    from mizzen.chaos.spec import SpecError, parse_duration as chaos
    from mizzen.consulapi.agent import BadRequest
    from mizzen.consulapi.agent import parse_duration as _consul
    from mizzen.server.commands import seconds

    def consul(v, what="ttl"):
        return _consul(v, what)

    for parse in (chaos, consul, seconds):
        assert parse("1m30s") == 90.0
        assert parse("1.5s") == 1.5
    assert chaos(20) == chaos("20") == 20.0 and chaos("250ms") == 0.25
    assert consul(15) == 15.0 and consul(2_000_000_000) == 2.0  # Consul JSON nanoseconds
    assert seconds("90d") == 90 * 86400 and seconds("3600") == 3600.0
    with pytest.raises(SpecError, match="--duration"):
        chaos("10 parsecs", "--duration")
    with pytest.raises(SpecError, match="negative"):
        chaos("-5s")
    with pytest.raises(BadRequest, match="TTL"):
        consul("1x", "check c TTL")
    with pytest.raises(ValueError, match="--cert-ttl"):
        seconds("soon", "--cert-ttl")
