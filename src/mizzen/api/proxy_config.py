"""Istio ProxyConfig (networking.istio.io/v1beta1): per-workload proxy settings, with Istio's validation rules.
Mizzen's agent can honour `concurrency` (Envoy's --concurrency) and `environmentVariables` (Envoy's
environment); `image` is about container images, which a local mesh does not pull: accepted and reported
by `mizzen analyze` as not applicable (api/effects.py)."""
from __future__ import annotations

from pydantic import Field, field_validator

from .base import Spec
from .fields import Int32, show
from .telemetry import Selector

PROXY_CONFIG_VERSIONS = ("networking.istio.io/v1beta1",)


class ProxyImage(Spec):
    image_type: str | None = None


class ProxyConfigSpec(Spec):
    selector: Selector | None = None
    concurrency: Int32 | None = None
    environment_variables: dict[str, str] = Field(default_factory=dict)
    image: ProxyImage | None = None

    @field_validator("concurrency")
    @classmethod
    def _concurrency(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise ValueError("concurrency must be greater than or equal to 0")
        return v

    @field_validator("environment_variables")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for k, x in v.items():
            if not k or "=" in k or "\0" in k:
                raise ValueError(f"invalid environment variable name {show(k)}")
            if len(x) > 2048 or "\0" in x:
                raise ValueError(f"environment variable {show(k)}: value too long (2048) or with NUL")
        return v
