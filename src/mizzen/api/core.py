"""Kubernetes-shaped core kinds (v1 Service, v1 ServiceAccount, v1 Namespace) and Mizzen's own kinds
(mizzen.dev/v1)."""
from __future__ import annotations

from typing import Any, Literal, Mapping

import re

from pydantic import Field, ValidationError, field_validator, model_validator

from .base import Spec
from .fields import At, Port, check_labels, is_dns1123_label, is_ip, show
from .uids import ENVOY_UID  # the sidecar's uid (excluded from traffic capture): never an app's


_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?")


class K8sServicePort(Spec):
    port: Port
    name: str = ""
    protocol: str = "TCP"
    target_port: Port | str | None = None
    app_protocol: str | None = None
    node_port: int | None = Field(default=None, ge=0, le=65535)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v and not is_dns1123_label(v.lower()) or v != v.lower():
            raise ValueError(f"invalid port name {show(v)}: lower-case letters, digits and '-'")
        return v

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: str) -> str:
        if v not in ("TCP", "UDP", "SCTP"):
            raise ValueError(f"protocol {show(v)} must be TCP, UDP or SCTP")
        return v

    @field_validator("target_port")
    @classmethod
    def _target(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, str) and not (_IANA_SVC_NAME.fullmatch(v) and "--" not in v and not v.isdigit()):
            raise ValueError(f"invalid targetPort {show(v)}: a port number or a container port's name")
        return v


class ServiceSpec(Spec):
    ports: list[K8sServicePort] = Field(default_factory=list)
    selector: dict[str, str] = Field(default_factory=dict)
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    cluster_ips: list[str] = Field(default_factory=list, alias="clusterIPs")
    external_name: str | None = None
    session_affinity: Literal["None", "ClientIP"] | None = None
    ip_families: list[Literal["IPv4", "IPv6"]] = Field(default_factory=list)
    ip_family_policy: str | None = None
    internal_traffic_policy: str | None = None
    external_traffic_policy: str | None = None
    publish_not_ready_addresses: bool | None = None

    @field_validator("selector")
    @classmethod
    def _selector(cls, v: dict[str, str]) -> dict[str, str]:
        check_labels(v)
        return v

    @field_validator("cluster_ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v not in (None, "", "None") and not is_ip(v):
            raise ValueError(f"clusterIP {show(v)} must be an IP address, \"None\" or empty")
        return v

    @model_validator(mode="after")
    def _ports(self) -> "ServiceSpec":
        seen: set[tuple[int, str]] = set()
        names: set[str] = set()
        for i, p in enumerate(self.ports):
            if (p.port, p.protocol) in seen:
                raise At(f"ports[{i}].port", f"duplicate service port {p.port}")
            seen.add((p.port, p.protocol))
            if p.name and p.name in names:
                raise At(f"ports[{i}].name", f"duplicate service port name {show(p.name)}")
            names.add(p.name)
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
    container_port: Port
    name: str | None = None
    protocol: str = "TCP"




class SecurityContext(Spec):
    """The user an app runs as (netns mode, as root): Kubernetes' `runAsUser`/`runAsGroup`. Unset: the mesh's
    app user, a non-root uid per mesh. 0 runs the app as root (then it can read the mesh's keys and tokens)."""

    run_as_user: int | None = Field(default=None, ge=0, le=2**31 - 2)
    run_as_group: int | None = Field(default=None, ge=0, le=2**31 - 2)

    @model_validator(mode="after")
    def _not_envoy(self) -> "SecurityContext":
        for name, v in (("runAsUser", self.run_as_user), ("runAsGroup", self.run_as_group)):
            if v == ENVOY_UID:
                raise ValueError(f"{name} {ENVOY_UID} is the sidecar's: its traffic bypasses capture")
        return self


class WorkloadMetrics(Spec):
    """Where the app serves its own Prometheus metrics: merged into the sidecar's :15020/stats/prometheus."""

    port: int = Field(ge=1, le=65535)
    path: str = "/metrics"

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"path must start with '/': {v!r}")
        return v
class HostPort(Spec):
    """A gateway's listener port published on the host's 127.0.0.1 (`port`: the Gateway server's port)."""

    port: Port
    host_port: Port


class WorkloadSpec(Spec):
    replicas: int = Field(default=1, ge=0, le=64)
    command: list[str] = Field(default_factory=list)  # required, except for a gateway (no app)
    # an ingress/egress gateway: an Envoy managed by the agent, no app, no interception; its labels are what
    # Gateway.spec.selector selects (docs/gateway.md)
    gateway: bool = False
    host_ports: list[HostPort] = Field(default_factory=list)
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
    security_context: SecurityContext | None = None
    metrics: WorkloadMetrics | None = None  # the app's own metrics endpoint (scraped by the sidecar's agent)

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k, x in v.items():
            if not k or "=" in k or "\0" in k or "\0" in x:
                raise ValueError(f"invalid environment variable {show(k)}: no '=' in the name, no NUL anywhere")
        return v

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str]) -> list[str]:
        if any("\0" in a for a in v):
            raise ValueError("a command argument may not contain NUL")
        return v

    @model_validator(mode="wrap")
    @classmethod
    def _command_reported_with_the_rest(cls, data: Any, handler: Any) -> "WorkloadSpec":
        """A missing `command` (only a gateway may have none) is reported together with the other fields'
        errors, as a required field is, not only once they are fixed."""
        try:
            return handler(data)
        except ValidationError as e:
            if isinstance(data, Mapping) and not data.get("gateway") and not data.get("command") and \
                    not any(err["loc"][:1] == ("command",) for err in e.errors()):
                errors = [{k: v for k, v in err.items() if k in ("type", "loc", "input", "ctx")} for err in e.errors()]
                errors.append({"type": "missing", "loc": ("command",), "input": data})
                raise ValidationError.from_exception_data(e.title, errors) from None
            raise

    @model_validator(mode="after")
    def _gateway(self) -> "WorkloadSpec":
        if self.gateway:
            if self.command:
                raise At("command", "a gateway runs no command (its agent runs Envoy); remove command")
            if self.sidecar is False:
                raise At("sidecar", "a gateway is its Envoy: sidecar: false cannot go with gateway: true")
            if self.ports:
                raise At("ports", "a gateway's ports are its Gateway servers' ports; remove ports")
            seen: set[int] = set()
            for i, hp in enumerate(self.host_ports):
                if hp.host_port in seen:
                    raise At(f"hostPorts[{i}].hostPort", f"host port {hp.host_port} is used twice")
                seen.add(hp.host_port)
            if self.host_ports and self.replicas > 1:
                raise At("replicas", "a gateway with hostPorts runs one replica (a host port is bound once)")
        else:
            if not self.command:
                raise At("command", "field required (only a gateway: true workload has no command)")
            if self.host_ports:
                raise At("hostPorts", "only a gateway: true workload publishes host ports")
        return self
