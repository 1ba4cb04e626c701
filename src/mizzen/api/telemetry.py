"""Istio `telemetry.istio.io` Telemetry: Mizzen uses its accessLogging (per workload, switched at runtime)."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from .base import Spec

TELEMETRY_VERSIONS = ("telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1")


class Selector(Spec):
    match_labels: dict[str, str] = Field(default_factory=dict)


class ProviderRef(Spec):
    name: str


class AccessLogging(Spec):
    providers: list[ProviderRef] = Field(default_factory=list)
    disabled: bool = False
    filter: dict[str, Any] | None = None
    match: dict[str, Any] | None = None


class TelemetrySpec(Spec):
    selector: Selector | None = None
    target_ref: dict[str, Any] | None = None
    target_refs: list[dict[str, Any]] = Field(default_factory=list)
    access_logging: list[AccessLogging] = Field(default_factory=list)
    tracing: list[dict[str, Any]] = Field(default_factory=list)
    metrics: list[dict[str, Any]] = Field(default_factory=list)
