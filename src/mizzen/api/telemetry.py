"""Istio `telemetry.istio.io` Telemetry (metrics, tracing, access logging; per mesh, namespace or workload,
switched at runtime), and Mizzen's `mizzen.dev/v1 ExtensionProvider`: a named telemetry backend, as an entry of
Istio's `MeshConfig.extensionProviders` (Mizzen has no MeshConfig; one resource per provider instead).

What Mizzen acts on (docs/observability.md): `metrics[].overrides[].{match.mode, disabled}` (per reporter side)
and `reportingInterval`; `tracing[].{providers, randomSamplingPercentage, disableSpanReporting, customTags,
match.mode}`; `accessLogging[].{disabled}`. Field names follow Istio's API (the same classes as the fidelity
work's typed Telemetry, so the two merge field for field).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Spec
from .virtual_service import duration_seconds

TELEMETRY_VERSIONS = ("telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1")
Mode = Literal["CLIENT_AND_SERVER", "CLIENT", "SERVER"]


class Selector(Spec):
    match_labels: dict[str, str] = Field(default_factory=dict)


class ProviderRef(Spec):
    name: str = Field(min_length=1)


class WorkloadMode(Spec):
    mode: Mode = "CLIENT_AND_SERVER"


class AccessLogging(Spec):
    match: WorkloadMode | None = None
    providers: list[ProviderRef] = Field(default_factory=list)
    disabled: bool | None = False
    filter: dict[str, Any] | None = None


class LiteralTag(Spec):
    value: str = Field(min_length=1)


class EnvironmentTag(Spec):
    name: str = Field(min_length=1)
    default_value: str | None = None


class RequestHeaderTag(Spec):
    name: str = Field(min_length=1)
    default_value: str | None = None


class FormatterTag(Spec):
    value: str = Field(min_length=1)


class CustomTag(Spec):
    literal: LiteralTag | None = None
    environment: EnvironmentTag | None = None
    header: RequestHeaderTag | None = None
    formatter: FormatterTag | None = None

    @model_validator(mode="after")
    def _one(self) -> "CustomTag":
        n = sum(x is not None for x in (self.literal, self.environment, self.header, self.formatter))
        if n != 1:
            raise ValueError("a custom tag has exactly one of literal, environment, header, formatter")
        return self


class Tracing(Spec):
    match: WorkloadMode | None = None
    providers: list[ProviderRef] = Field(default_factory=list)
    random_sampling_percentage: float | None = Field(default=None, ge=0, le=100)
    disable_span_reporting: bool | None = None
    custom_tags: dict[str, CustomTag] = Field(default_factory=dict)
    use_request_id_for_trace_sampling: bool | None = None
    enable_istio_tags: bool | None = None
    disable_context_propagation: bool | None = None

    @field_validator("custom_tags")
    @classmethod
    def _tags(cls, v: dict[str, CustomTag]) -> dict[str, CustomTag]:
        if "" in v:
            raise ValueError("tag name may not be empty")
        return v

    @field_validator("providers")
    @classmethod
    def _one_provider(cls, v: list[ProviderRef]) -> list[ProviderRef]:
        if len(v) > 1:  # Envoy has one tracer per connection manager; Istio supports one provider too
            raise ValueError("at most one tracing provider per proxy (Envoy has one tracer per listener)")
        return v


MetricName = Literal["ALL_METRICS", "REQUEST_COUNT", "REQUEST_DURATION", "REQUEST_SIZE", "RESPONSE_SIZE",
                     "TCP_OPENED_CONNECTIONS", "TCP_CLOSED_CONNECTIONS", "TCP_SENT_BYTES", "TCP_RECEIVED_BYTES",
                     "GRPC_REQUEST_MESSAGES", "GRPC_RESPONSE_MESSAGES"]


class MetricSelector(Spec):
    metric: MetricName | None = None
    custom_metric: str | None = Field(default=None, min_length=1)
    mode: Mode = "CLIENT_AND_SERVER"

    @model_validator(mode="after")
    def _one(self) -> "MetricSelector":
        if self.metric is not None and self.custom_metric is not None:
            raise ValueError("only one of metric and customMetric may be set")
        if self.custom_metric is not None or self.metric not in (None, "ALL_METRICS"):
            # Mizzen's sidecars report Istio's metrics from one access-log stream per side: a side is on or off
            raise ValueError("Mizzen switches metrics per side (match.mode) for ALL_METRICS only; "
                             "per-metric overrides are not supported")
        return self


class TagOverride(Spec):
    operation: Literal["UPSERT", "REMOVE"] = "UPSERT"
    value: str | None = None


class MetricsOverrides(Spec):
    match: MetricSelector | None = None
    disabled: bool | None = None
    tag_overrides: dict[str, TagOverride] = Field(default_factory=dict)

    @field_validator("tag_overrides")
    @classmethod
    def _no_tags(cls, v: dict[str, TagOverride]) -> dict[str, TagOverride]:
        if v:
            raise ValueError("tagOverrides are not supported: Mizzen reports Istio's standard labels as they are")
        return v


class Metrics(Spec):
    providers: list[ProviderRef] = Field(default_factory=list)
    overrides: list[MetricsOverrides] = Field(default_factory=list)
    reporting_interval: str | None = None

    @field_validator("reporting_interval")
    @classmethod
    def _interval(cls, v: str | None) -> str | None:
        if v is not None:
            s = duration_seconds(v)
            if not 0.1 <= s <= 3600:
                raise ValueError(f"reportingInterval {v!r} must be between 100ms and 1h")
        return v


class TelemetrySpec(Spec):
    selector: Selector | None = None
    target_ref: dict[str, Any] | None = None
    target_refs: list[dict[str, Any]] = Field(default_factory=list)
    tracing: list[Tracing] = Field(default_factory=list)
    metrics: list[Metrics] = Field(default_factory=list)
    access_logging: list[AccessLogging] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one(self) -> "TelemetrySpec":
        if sum((self.selector is not None, self.target_ref is not None, bool(self.target_refs))) > 1:
            raise ValueError("only one of targetRefs or selector can be set")
        return self


# ---------------------------------------------------------------------- ExtensionProvider (mizzen.dev/v1)

class ZipkinProvider(Spec):
    service: str = Field(min_length=1)  # a mesh host (Service or ServiceEntry): [<namespace>/]<hostname>
    port: int = Field(ge=1, le=65535)
    path: str = "/api/v2/spans"
    max_tag_length: int | None = Field(default=None, ge=0)
    trace_context_option: Literal["USE_B3", "USE_B3_WITH_W3C_PROPAGATION"] = "USE_B3_WITH_W3C_PROPAGATION"

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"path must start with '/': {v!r}")
        return v


class OpenTelemetryProvider(Spec):
    service: str = Field(min_length=1)  # a mesh host serving OTLP/gRPC: [<namespace>/]<hostname>
    port: int = Field(ge=1, le=65535)
    max_tag_length: int | None = Field(default=None, ge=0)


class ExtensionProviderSpec(Spec):
    """One of: `zipkin` (Zipkin v2 JSON over HTTP; B3 and W3C headers) or `opentelemetry` (OTLP/gRPC; W3C
    headers only: Envoy's OpenTelemetry tracer has no B3). The resource's name is the provider's name that
    Telemetry `tracing[].providers[].name` refers to; it is looked up in the Telemetry's namespace, then in
    the root namespace (istio-system)."""

    zipkin: ZipkinProvider | None = None
    opentelemetry: OpenTelemetryProvider | None = None

    @model_validator(mode="after")
    def _one(self) -> "ExtensionProviderSpec":
        if (self.zipkin is None) == (self.opentelemetry is None):
            raise ValueError("an ExtensionProvider has exactly one of zipkin, opentelemetry")
        return self
