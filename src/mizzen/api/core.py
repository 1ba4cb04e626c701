"""Kubernetes-shaped core kinds (v1 Service, v1 ServiceAccount, v1 Namespace) and Mizzen's own kinds
(mizzen.dev/v1)."""
from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import Field, field_validator, model_validator

from .base import Spec


class K8sServicePort(Spec):
    port: int = Field(ge=1, le=65535)
    name: str = ""
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    target_port: int | str | None = None
    app_protocol: str | None = None
    node_port: int | None = None


class ServiceSpec(Spec):
    ports: list[K8sServicePort] = Field(default_factory=list)
    selector: dict[str, str] = Field(default_factory=dict)
    type: str = "ClusterIP"
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    session_affinity: str | None = None

    @model_validator(mode="after")
    def _ports(self) -> "ServiceSpec":
        seen: set[int] = set()
        for p in self.ports:
            if p.port in seen:
                raise ValueError(f"duplicate service port {p.port}")
            seen.add(p.port)
        if len(self.ports) > 1 and any(not p.name for p in self.ports):
            raise ValueError("every port must be named when a service has several ports")
        return self


class ServiceAccountSpec(Spec):
    """ServiceAccount has no spec; identities are derived from it later (SPIFFE)."""


class NamespaceSpec(Spec):
    """A Namespace carries labels (e.g. `mizzen.dev/inject: "false"`); its spec is Kubernetes' (unused)."""

    finalizers: list[str] = Field(default_factory=list)


# Namespace label that turns sidecars off for the namespace's workloads (a Workload's `sidecar` field wins).
INJECT_LABEL = "mizzen.dev/inject"


def sidecar_enabled(workload: "WorkloadSpec", namespace_labels: Mapping[str, str] | None = None) -> bool:
    """Whether a workload runs with a sidecar: its own `sidecar` field when set, else not when its namespace
    is labelled `mizzen.dev/inject: "false"`, else yes."""
    if workload.sidecar is not None:
        return workload.sidecar
    return (namespace_labels or {}).get(INJECT_LABEL, "").lower() not in ("false", "disabled")


class ContainerPort(Spec):
    container_port: int = Field(ge=1, le=65535)
    name: str | None = None
    protocol: str = "TCP"


class WorkloadSpec(Spec):
    replicas: int = Field(default=1, ge=0, le=64)
    command: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[ContainerPort] = Field(default_factory=list)
    sidecar: bool | None = None  # None: as the namespace says (see sidecar_enabled), by default yes
    service_account: str | None = None
    workdir: str | None = None
    locality: str | None = None  # region/zone/subzone
    host: str | None = None  # a multi-host mesh: the Host (mizzen.dev/v1) it runs on (api/hosts.py)
    # Istio's holdApplicationUntilProxyStarts: start the app only once its sidecar is ready (default);
    # false starts app and sidecar together
    hold_application_until_proxy_starts: bool = True

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            if not k or "=" in k:
                raise ValueError(f"invalid environment variable name {k!r}")
        return v
