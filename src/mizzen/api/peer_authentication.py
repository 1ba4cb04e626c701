"""Istio `security.istio.io` PeerAuthentication: which mutual-TLS mode a workload's inbound side accepts.

    apiVersion: security.istio.io/v1
    kind: PeerAuthentication
    metadata: {name: default, namespace: shop}       # istio-system (the root namespace): mesh-wide
    spec:
      selector: {matchLabels: {app: cart}}           # optional: one workload (else the namespace)
      mtls: {mode: STRICT}                           # UNSET | DISABLE | PERMISSIVE | STRICT
      portLevelMtls:                                 # only with a selector, as Istio
        8080: {mode: DISABLE}

Validation follows Istio's webhook: modes are the four names, port keys are TCP ports, and `portLevelMtls`
needs a non-empty selector ("mesh- and namespace-wide PeerAuthentication cannot have portLevelMtls"). What a
mode means for a workload (precedence workload > namespace > mesh, UNSET inherits) is `model/security.py`.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Spec

SECURITY_VERSIONS = ("security.istio.io/v1", "security.istio.io/v1beta1")
MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


class WorkloadSelector(Spec):
    match_labels: dict[str, str] = Field(default_factory=dict)


class MutualTls(Spec):
    mode: MtlsMode = "UNSET"


class PeerAuthenticationSpec(Spec):
    selector: WorkloadSelector | None = None
    mtls: MutualTls | None = None
    port_level_mtls: dict[int, MutualTls] = Field(default_factory=dict)

    @field_validator("port_level_mtls", mode="before")
    @classmethod
    def _ports(cls, v: object) -> object:
        if not isinstance(v, dict):
            return v
        out = {}
        for k, m in v.items():
            try:
                port = int(k)
            except (TypeError, ValueError):
                raise ValueError(f"port {k!r} is not a port number") from None
            if not 0 < port < 65536:
                raise ValueError(f"port {port} is not a TCP port (1-65535)")
            out[port] = m
        if not out:  # set but empty (Istio's CRD: at least one property)
            raise ValueError("portLevelMtls must have at least one port (leave it out for none)")
        return out

    @model_validator(mode="after")
    def _selector_for_ports(self) -> "PeerAuthenticationSpec":
        if self.port_level_mtls and not (self.selector and self.selector.match_labels):
            raise ValueError("portLevelMtls needs a selector with matchLabels: mesh- and namespace-wide "
                             "PeerAuthentication cannot set port-level modes (as in Istio)")
        return self

    @property
    def labels(self) -> dict[str, str]:
        """The selector's labels ({} = the whole namespace, or the mesh in the root namespace)."""
        return dict(self.selector.match_labels) if self.selector else {}

    @property
    def mode(self) -> str:
        return self.mtls.mode if self.mtls else "UNSET"
