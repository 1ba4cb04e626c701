"""Istio networking.istio.io: the pieces several kinds share (apiVersions, PortSelector, WorkloadSelector, the
protocols Istio knows). Each kind has its own module: virtual_service.py, destination_rule.py, service_entry.py,
sidecar.py, gateway.py, envoy_filter.py, proxy_config.py.
"""
from __future__ import annotations

from pydantic import Field, field_validator

from .base import Spec
from .fields import Port, check_selector_labels, is_dns1123_label, show

ISTIO_NETWORKING_VERSIONS = (
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
)

# Istio's protocol.Parse (case-insensitive); anything else is "unsupported"
PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "grpc": "GRPC", "grpc-web": "GRPC-Web", "http": "HTTP",
             "http_proxy": "HTTP_PROXY", "http2": "HTTP2", "https": "HTTPS", "tls": "TLS", "mongo": "Mongo",
             "redis": "Redis", "mysql": "MySQL"}
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-Web"})
TLS_PROTOCOLS = frozenset({"HTTPS", "TLS"})


def parse_protocol(p: str | None) -> str | None:
    """Istio's protocol name for `p`, or None when Istio does not know it."""
    return PROTOCOLS.get((p or "").lower())


def check_protocol(p: str | None) -> None:
    """An empty protocol means "sniff"; otherwise it must be one Istio knows."""
    if p and parse_protocol(p) is None:
        raise ValueError(f"unsupported protocol: {show(p)}")


def check_port_name(name: str) -> None:
    if not is_dns1123_label(name):
        raise ValueError(f"invalid port name: {show(name)} (a DNS label: letters, digits, '-')")


class PortSelector(Spec):  # a VirtualService destination's port, a DestinationRule's portLevelSettings
    number: Port


class WorkloadSelector(Spec):
    """`workloadSelector: {labels: {...}}` of ServiceEntry, Sidecar, EnvoyFilter."""

    labels: dict[str, str] = Field(default_factory=dict, max_length=256)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        check_selector_labels(v)
        return v
