"""Telemetry resolved per proxy (model/telemetry.py): the mesh default, Istio's hierarchy (root namespace,
namespace, workload) with per-side `match.mode`, providers, and push scoping on the resolved value."""
from __future__ import annotations

import pytest

from mizzen.api import InvalidConfig, load_text
from mizzen.model import ConfigIndex, Proxy, Snapshot, affected, diff
from mizzen.model.dependencies import dependencies

SVC = """---
apiVersion: v1
kind: Service
metadata: {name: collector, namespace: observability}
spec: {ports: [{port: 4317, name: grpc}], selector: {app: collector}}
"""
REVIEWS = Proxy(id="r", namespace="default", labels=(("app", "reviews"), ("version", "v1")))
RATINGS = Proxy(id="t", namespace="default", labels=(("app", "ratings"),))
SHOP = Proxy(id="s", namespace="shop", labels=(("app", "cart"),))


def tel(name: str, ns: str, spec: str) -> str:
    return f"---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {ns}}}\n" \
           f"spec: {spec}\n"


def provider(name: str, ns: str, spec: str) -> str:
    return f"---\napiVersion: mizzen.dev/v1\nkind: ExtensionProvider\nmetadata: {{name: {name}, namespace: {ns}}}\n" \
           f"spec: {spec}\n"


def index(text: str) -> ConfigIndex:
    return ConfigIndex([r.with_revision(1 + i) for i, r in enumerate(load_text(text).resources)])


def resolved(text: str, proxy: Proxy):
    return index(text).resolved.telemetry_for(proxy)


def test_the_mesh_default_is_metrics_on_both_sides_and_embedded_tracing_at_one_percent() -> None:
    t = resolved(SVC, REVIEWS)
    assert t.metrics(True) and t.metrics(False) and not t.access_logging
    for side in (True, False):
        tr = t.tracing(side)
        assert tr is not None and tr.provider.kind == "embedded" and tr.sampling == 1.0
    assert t.sources == ()


def test_each_level_overrides_what_it_sets() -> None:
    text = SVC + tel("mesh", "istio-system", "{tracing: [{randomSamplingPercentage: 10}]}") \
        + tel("ns", "default", "{tracing: [{randomSamplingPercentage: 50, customTags: {a: {literal: {value: x}}}}]}") \
        + tel("wl", "default", "{selector: {matchLabels: {app: reviews}}, tracing: [{match: {mode: CLIENT}, "
                               "randomSamplingPercentage: 100, customTags: {b: {header: {name: end-user}}}}]}")
    r = resolved(text, REVIEWS)
    assert r.tracing(True).sampling == 100 and r.tracing(False).sampling == 50  # CLIENT only at the workload
    assert [t[0] for t in r.tracing(True).custom_tags] == ["a", "b"]  # tags merge across levels
    assert [t[0] for t in r.tracing(False).custom_tags] == ["a"]
    assert resolved(text, RATINGS).tracing(True).sampling == 50  # the selector does not pick ratings
    assert resolved(text, SHOP).tracing(True).sampling == 10  # another namespace: the mesh level only
    assert [k.name for k in r.sources] == ["mesh", "ns", "wl"]


def test_metrics_per_side_reporting_interval_and_access_logs_per_aspect() -> None:
    text = SVC + tel("mesh", "istio-system", "{metrics: [{reportingInterval: 5s, overrides: [{disabled: true}]}]}") \
        + tel("ns", "default", "{metrics: [{overrides: [{match: {mode: SERVER}, disabled: false}]}], "
                               "accessLogging: [{providers: [{name: envoy}]}]}") \
        + tel("wl", "default", "{selector: {matchLabels: {app: reviews}}, tracing: [{disableSpanReporting: true}]}")
    r = resolved(text, REVIEWS)
    assert not r.metrics(True) and r.metrics(False) and r.reporting_interval == "5s"
    assert r.access_logging  # a workload Telemetry about tracing only leaves the namespace's access logs on
    assert r.tracing(True) is None and r.tracing(False) is None  # no spans reported
    assert not resolved(text, SHOP).metrics(False)


def test_metrics_are_counted_in_envoy_by_default_and_access_log_stream_is_chosen_per_level() -> None:
    assert resolved(SVC, REVIEWS).metrics_native  # the default: counted inside Envoy
    text = SVC + tel("mesh", "istio-system", "{metrics: [{providers: [{name: access-log-stream}]}]}") \
        + tel("wl", "default", "{selector: {matchLabels: {app: ratings}}, metrics: [{providers: [{name: prometheus}]}]}") \
        + tel("ns", "shop", "{metrics: [{reportingInterval: 5s}]}")
    assert not resolved(text, REVIEWS).metrics_native
    assert resolved(text, RATINGS).metrics_native  # its workload level names prometheus: Istio's name, in Envoy
    shop = resolved(text, SHOP)
    assert not shop.metrics_native and shop.reporting_interval == "5s"  # a metrics entry without providers keeps it
    envoy_stats = SVC + tel("mesh", "istio-system", "{metrics: [{providers: [{name: access-log-stream}]}]}") \
        + tel("wl", "default", "{selector: {matchLabels: {app: ratings}}, metrics: [{providers: [{name: envoy-stats}]}]}")
    assert resolved(envoy_stats, RATINGS).metrics_native and not resolved(envoy_stats, REVIEWS).metrics_native


def test_providers_are_found_in_the_namespace_then_the_root_and_a_missing_one_traces_nowhere() -> None:
    text = SVC + provider("otel", "istio-system", "{opentelemetry: {service: collector.observability, port: 4317}}") \
        + provider("otel", "shop", "{zipkin: {service: observability/collector, port: 4317, path: /spans}}") \
        + tel("a", "default", "{tracing: [{providers: [{name: otel}]}]}") \
        + tel("b", "shop", "{tracing: [{providers: [{name: otel}]}]}") \
        + tel("c", "default", "{selector: {matchLabels: {app: ratings}}, tracing: [{providers: [{name: nope}]}]}")
    p = resolved(text, REVIEWS).tracing(True).provider
    assert (p.kind, p.host, p.port) == ("opentelemetry", "collector.observability.svc.cluster.local", 4317)
    p = resolved(text, SHOP).tracing(True).provider
    assert (p.kind, p.host, p.path) == ("zipkin", "collector.observability.svc.cluster.local", "/spans")
    assert p.context == "USE_B3"  # Istio's default traceContextOption; W3C too only when the provider asks
    both = SVC + provider("otel", "shop", "{zipkin: {service: observability/collector, port: 4317, "
                                          "traceContextOption: USE_B3_WITH_W3C_PROPAGATION}}") \
        + tel("b", "shop", "{tracing: [{providers: [{name: otel}]}]}")
    assert resolved(both, SHOP).tracing(True).provider.context == "USE_B3_WITH_W3C_PROPAGATION"
    assert resolved(text, RATINGS).tracing(True).provider.kind == "missing"


@pytest.mark.parametrize("spec, field", [
    ("{tracing: [{randomSamplingPercentage: 101}]}", "randomSamplingPercentage"),
    ("{metrics: [{reportingInterval: 5 parsecs}]}", "reportingInterval"),
    ("{tracing: [{customTags: {a: {literal: {value: x}, header: {name: y}}}}]}", "customTags"),
])
def test_bad_telemetry_is_refused_naming_the_field(spec: str, field: str) -> None:
    # valid Istio that Mizzen does not act on (several tracing providers, per-metric overrides) is accepted and
    # reported by `mizzen analyze` (MZ0110, api/effects.py)
    with pytest.raises(InvalidConfig) as e:
        load_text(tel("t", "default", spec), file="t.yaml")
    assert field in str(e.value), str(e.value)


def change(before: str, after: str):
    """Snapshots of two configs, revisions as the store gives them (an unchanged resource keeps its own)."""
    old = Snapshot(index(before), Snapshot.build([], []).endpoints)
    kept = {r.key: r for rs in old.config.by_kind.values() for r in rs}
    rs = []
    for i, r in enumerate(load_text(after).resources):
        prev = kept.get(r.key)
        rs.append(prev if prev is not None and prev.to_dict() == r.to_dict() else r.with_revision(100 + i))
    new = Snapshot(ConfigIndex(rs), old.endpoints)
    return diff(old, new), old, new


def test_a_telemetry_change_pushes_exactly_the_proxies_whose_telemetry_changes() -> None:
    base = SVC + tel("ns", "default", "{tracing: [{randomSamplingPercentage: 5}]}")
    ch, old, new = change(base, base.replace("randomSamplingPercentage: 5", "randomSamplingPercentage: 50"))
    assert ch.resources and affected(ch, REVIEWS, old, new) and not affected(ch, SHOP, old, new)
    # an edit that leaves every proxy's resolved telemetry as it was pushes nobody
    same = base.replace("{tracing: [{randomSamplingPercentage: 5}]}",
                        "{tracing: [{randomSamplingPercentage: 5, providers: [{name: mizzen}]}]}")
    ch, old, new = change(base, same)
    assert ch.resources and not affected(ch, REVIEWS, old, new)
    # a workload-level one reaches the workload it selects only
    wl = base + tel("wl", "default", "{selector: {matchLabels: {app: ratings}}, metrics: [{overrides: [{disabled: true}]}]}")
    ch, old, new = change(base, wl)
    assert affected(ch, RATINGS, old, new) and not affected(ch, REVIEWS, old, new)


def test_an_extension_provider_change_pushes_the_proxies_that_name_it() -> None:
    p = provider("otel", "istio-system", "{opentelemetry: {service: collector.observability, port: 4317}}")
    base = SVC + p + tel("wl", "default", "{selector: {matchLabels: {app: reviews}}, tracing: [{providers: [{name: otel}]}]}")
    ch, old, new = change(base, base.replace("port: 4317}}\n", "port: 4318}}\n", 1))
    assert [r.kind for r in ch.resources] == ["ExtensionProvider", "ExtensionProvider"]
    assert affected(ch, REVIEWS, old, new) and not affected(ch, RATINGS, old, new)
    deps = dependencies(new.config, REVIEWS)
    assert any(k.kind == "ExtensionProvider" and k.name == "otel" for k in deps.configs)
