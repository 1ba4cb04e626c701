"""Telemetry resolved for one proxy: which sides report metrics, how often, who traces and where spans go,
whether access logs are written. PURE (`Resolved.telemetry_for` memoizes it per namespace and labels).

Istio's hierarchy, most general first, each level overriding the fields it sets:
    the mesh default  ->  root namespace (istio-system), no selector  ->  root namespace, selector matching
    ->  the proxy's namespace, no selector  ->  its namespace, selector matching
Several Telemetries of one level apply oldest first (Istio uses only the oldest; merging lets the console's
namespace-wide access-log switch live next to a team's own Telemetry). Within a `tracing` or `metrics` entry,
`match.mode` says which side it sets: CLIENT (the caller's sidecar, outbound), SERVER (the callee's, inbound),
or both.

Metrics come from one of two ways of counting (`metrics[].providers[].name`, both sides). The default —
`prometheus` (Istio's name) or its alias `envoy-stats` — counts inside Envoy (its stats access logger) and the
agent renames the series at scrape time: no per-request work outside Envoy; `mizzen top` samples the stream only
while someone reads it. `access-log-stream` counts from a per-request access-log stream in the agent: the
callee's side names the service by each request's :authority, gRPC is told by content-type, durations in
microseconds, top paths always on — at ~1.5x the sidecar's CPU per request (docs/observability.md).

The mesh default: metrics on both sides, counted in Envoy; tracing with the embedded collector (`mizzen`, Zipkin B3+W3C) at 1 %
(Istio's default sampling); access logs off.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Protocol

from ..api.base import Resource, ResourceKey
from .labels import ROOT_NAMESPACE, labels_match
from .types import Proxy

EMBEDDED = "mizzen"  # the built-in provider: the control plane's own trace receiver
NATIVE_METRICS = "envoy-stats"  # counting inside Envoy (see the module docstring): the default, as `prometheus`
STREAM_METRICS = "access-log-stream"  # counting from the access-log stream in the agent
METRICS_PROVIDERS = ("prometheus", NATIVE_METRICS, STREAM_METRICS)
DEFAULT_SAMPLING = 1.0
SIDES = ("client", "server")


class Config(Protocol):
    by_kind: Mapping[str, tuple[Resource, ...]]

    def resolve(self, host: str, namespace: str) -> str: ...


@dataclass(frozen=True)
class Provider:
    """Where a proxy sends spans. `kind`: embedded | zipkin | opentelemetry | missing (named, not defined)."""

    name: str
    kind: str
    host: str = ""  # FQDN of the collector's service (zipkin, opentelemetry)
    port: int = 0
    path: str = "/api/v2/spans"
    context: str = "USE_B3"  # a zipkin ExtensionProvider's traceContextOption (Istio's default)
    max_tag_length: int | None = None
    key: ResourceKey | None = None  # the ExtensionProvider resource, if any


@dataclass(frozen=True)
class Tracing:
    """One side's tracing. `report` False: no spans from this side (context still flows through the app)."""

    provider: Provider
    sampling: float = DEFAULT_SAMPLING
    report: bool = True
    custom_tags: tuple[tuple[str, str, str, str], ...] = ()  # (tag, kind literal|environment|header|formatter, a, b)


@dataclass(frozen=True)
class TelemetryConfig:
    metrics_client: bool = True
    metrics_server: bool = True
    reporting_interval: str | None = None  # Go duration as written; None: the default
    tracing_client: Tracing | None = None
    tracing_server: Tracing | None = None
    access_logging: bool = False
    metrics_native: bool = True  # False: the `access-log-stream` metrics provider
    sources: tuple[ResourceKey, ...] = field(default=(), compare=False)

    def metrics(self, outbound: bool) -> bool:
        return self.metrics_client if outbound else self.metrics_server

    def tracing(self, outbound: bool) -> Tracing | None:
        t = self.tracing_client if outbound else self.tracing_server
        return t if t is not None and t.report else None


EMBEDDED_PROVIDER = Provider(EMBEDDED, "embedded")
DEFAULT = TelemetryConfig(tracing_client=Tracing(EMBEDDED_PROVIDER), tracing_server=Tracing(EMBEDDED_PROVIDER))


def _sel(t: Resource) -> dict[str, str]:
    return dict(t.spec.selector.match_labels) if t.spec.selector else {}


def levels(telemetries: Iterable[Resource], proxy: Proxy) -> list[list[Resource]]:
    """The Telemetries that apply to `proxy`, by level (most general first), oldest first in each."""
    labels = proxy.label_dict
    out: list[list[Resource]] = [[], [], [], []]
    for t in telemetries:
        sel = _sel(t)
        if t.namespace == ROOT_NAMESPACE:
            if not sel:
                out[0].append(t)
            elif labels_match(sel, labels):
                out[1].append(t)
        elif t.namespace == proxy.namespace:
            if not sel:
                out[2].append(t)
            elif labels_match(sel, labels):
                out[3].append(t)
    return [sorted(lv, key=lambda r: (r.revision, r.name)) for lv in out]


def provider(config: Config, name: str, namespace: str) -> Provider:
    """A provider name as a Telemetry in `namespace` means it: an ExtensionProvider of that name in the same
    namespace, else in the root namespace, else the built-in `mizzen`, else missing."""
    found = {(r.namespace, r.name): r for r in config.by_kind.get("ExtensionProvider", ())}
    r = found.get((namespace, name)) or found.get((ROOT_NAMESPACE, name))
    if r is None:
        return EMBEDDED_PROVIDER if name == EMBEDDED else Provider(name, "missing")
    z, o = r.spec.zipkin, r.spec.opentelemetry
    spec = z or o
    service = spec.service
    ns = r.namespace
    if "/" in service:
        ns, service = service.split("/", 1)
    host = config.resolve(service, ns)
    if z is not None:
        return Provider(name, "zipkin", host, z.port, z.path, z.trace_context_option, z.max_tag_length, r.key)
    return Provider(name, "opentelemetry", host, o.port, max_tag_length=o.max_tag_length, key=r.key)


def _sides(mode: str | None) -> tuple[str, ...]:
    return {"CLIENT": ("client",), "SERVER": ("server",)}.get(mode or "CLIENT_AND_SERVER", SIDES)


def _tags(spec_tags) -> dict[str, tuple[str, str, str, str]]:
    out = {}
    for name, tag in spec_tags.items():
        if tag.literal is not None:
            out[name] = (name, "literal", tag.literal.value, "")
        elif tag.environment is not None:
            out[name] = (name, "environment", tag.environment.name, tag.environment.default_value or "")
        elif tag.header is not None:
            out[name] = (name, "header", tag.header.name, tag.header.default_value or "")
        else:
            out[name] = (name, "formatter", tag.formatter.value, "")
    return out


def resolve(config: Config, proxy: Proxy) -> TelemetryConfig:
    """The TelemetryConfig of `proxy` (see the module docstring)."""
    cur = DEFAULT
    tracing = {"client": cur.tracing_client, "server": cur.tracing_server}
    tags: dict[str, dict[str, tuple[str, str, str, str]]] = {"client": {}, "server": {}}
    metrics = {"client": cur.metrics_client, "server": cur.metrics_server}
    native = cur.metrics_native
    interval = cur.reporting_interval
    access = cur.access_logging
    sources: list[ResourceKey] = []
    for level in levels(config.by_kind.get("Telemetry", ()), proxy):
        for t in level:
            spec = t.spec
            used = False
            for tr in spec.tracing:
                used = True
                for side in _sides(tr.match.mode if tr.match else None):
                    s = tracing[side] or Tracing(EMBEDDED_PROVIDER)
                    if tr.providers:
                        p = provider(config, tr.providers[0].name, t.namespace)
                        s = replace(s, provider=p)
                        if p.key is not None:
                            sources.append(p.key)
                    if tr.random_sampling_percentage is not None:
                        s = replace(s, sampling=float(tr.random_sampling_percentage))
                    if tr.disable_span_reporting is not None:
                        s = replace(s, report=not tr.disable_span_reporting)
                    tags[side].update(_tags(tr.custom_tags))
                    tracing[side] = s
            for m in spec.metrics:
                used = True
                if m.providers:
                    native = not any(p.name == STREAM_METRICS for p in m.providers)
                if m.reporting_interval is not None:
                    interval = m.reporting_interval
                for o in m.overrides:
                    if o.disabled is None:
                        continue
                    for side in _sides(o.match.mode if o.match else None):
                        metrics[side] = not o.disabled
            if spec.access_logging:
                used = True
                access = any(not a.disabled for a in spec.access_logging)
            if used:
                sources.append(t.key)
    out = {}
    for side in SIDES:
        s = tracing[side]
        out[side] = None if s is None else replace(s, custom_tags=tuple(v for _, v in sorted(tags[side].items())))
    return TelemetryConfig(metrics["client"], metrics["server"], interval, out["client"], out["server"], access,
                           native, tuple(dict.fromkeys(sources)))
