"""Istio `telemetry.istio.io` Telemetry, typed all the way down with Istio's validation rules (ValidateTelemetry
and the CRD's): selector or targetRef(s), access logging, tracing, metrics. Mizzen acts on accessLogging
(per workload, switched at runtime), tracing (providers, sampling, span reporting, custom tags, match.mode) and
metrics switched per side; what it does not act on is accepted and reported by `mizzen analyze` as having no
effect (api/effects.py). Also Mizzen's `mizzen.dev/v1 ExtensionProvider`: a named telemetry backend, an entry of
Istio's `MeshConfig.extensionProviders` as a resource (Mizzen has no MeshConfig)."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Spec
from .duration import Duration
from .fields import At, Percent0to100, check_selector_labels, show

TELEMETRY_VERSIONS = ("telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1")
Mode = Literal["CLIENT_AND_SERVER", "CLIENT", "SERVER"]
_KIND = re.compile(r"[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?")
_GROUP = re.compile(r"|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# (group, kind) a policy may target (Istio's allowedTargetRefs; "" is the core group)
TARGET_KINDS = {("", "Service"), ("networking.istio.io", "ServiceEntry"),
                ("gateway.networking.k8s.io", "Gateway"), ("gateway.networking.k8s.io", "GatewayClass")}


class Selector(Spec):
    match_labels: dict[str, str] = Field(default_factory=dict, max_length=4096)

    @field_validator("match_labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        check_selector_labels(v)
        return v


class PolicyTargetReference(Spec):
    group: str = Field(default="", max_length=253)
    kind: str = Field(min_length=1, max_length=63)
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None

    @model_validator(mode="after")
    def _rules(self) -> "PolicyTargetReference":
        if not _GROUP.fullmatch(self.group):
            raise At("group", f"invalid group {show(self.group)}")
        if not _KIND.fullmatch(self.kind):
            raise At("kind", f"invalid kind {show(self.kind)}")
        if self.namespace:
            raise At("namespace", "targetRef namespace must not be set; cross namespace referencing is not supported")
        group = "" if self.group in ("", "core") else self.group
        if (group, self.kind) not in TARGET_KINDS:
            raise ValueError(f"targetRef must be to a Service, ServiceEntry, Gateway or GatewayClass, not "
                             f"{show(self.group)}/{show(self.kind)}")
        return self


class ProviderRef(Spec):
    name: str = Field(min_length=1)


class WorkloadMode(Spec):
    mode: Mode = "CLIENT_AND_SERVER"


def check_cel(expr: str) -> None:
    """A light syntax check of a CEL expression (Istio parses it with cel-go): not empty, brackets balanced,
    strings closed."""
    if not expr.strip():
        raise ValueError("must be a valid CEL expression: empty")
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    quote: str | None = None
    i = 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c in "([{":
            stack.append(c)
        elif c in ")]}":
            if not stack or stack.pop() != pairs[c]:
                raise ValueError(f"must be a valid CEL expression: unbalanced {c!r} at {i + 1}")
        i += 1
    if quote or stack:
        raise ValueError("must be a valid CEL expression: " + ("unterminated string" if quote else
                                                               f"unclosed {stack[-1]!r}"))


class AccessLogFilter(Spec):
    expression: str

    @field_validator("expression")
    @classmethod
    def _cel(cls, v: str) -> str:
        check_cel(v)
        return v


class AccessLogging(Spec):
    match: WorkloadMode | None = None
    providers: list[ProviderRef] = Field(default_factory=list)
    disabled: bool | None = False
    filter: AccessLogFilter | None = None


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
        if sum(x is not None for x in (self.literal, self.environment, self.header, self.formatter)) > 1:
            raise ValueError("a custom tag has one of literal, environment, header, formatter")
        return self


class Tracing(Spec):
    match: WorkloadMode | None = None
    providers: list[ProviderRef] = Field(default_factory=list)
    random_sampling_percentage: Percent0to100 | None = None
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
        return self


class TagOverride(Spec):
    operation: Literal["UPSERT", "REMOVE"] = "UPSERT"
    value: str | None = None

    @model_validator(mode="after")
    def _value(self) -> "TagOverride":
        if self.operation == "UPSERT" and not self.value:
            raise ValueError("value must be set when operation is UPSERT")
        if self.operation == "REMOVE" and self.value is not None:
            raise ValueError("value must not be set when operation is REMOVE")
        return self


class MetricsOverrides(Spec):
    match: MetricSelector | None = None
    disabled: bool | None = None
    tag_overrides: dict[str, TagOverride] = Field(default_factory=dict)


class Metrics(Spec):
    providers: list[ProviderRef] = Field(default_factory=list)
    overrides: list[MetricsOverrides] = Field(default_factory=list)
    reporting_interval: Duration | None = None


class TelemetrySpec(Spec):
    selector: Selector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] = Field(default_factory=list, max_length=16)
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
    # Istio's default (MeshConfig.ExtensionProvider.ZipkinTracingProvider): B3 only; the embedded `mizzen` provider
    # propagates both (telemetry/envoy.zipkin_tracing)
    trace_context_option: Literal["USE_B3", "USE_B3_WITH_W3C_PROPAGATION"] = "USE_B3"

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
