"""Workload identities: SPIFFE IDs `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccount>`.

Pure: parsing, formatting and validation only. The trust domain is configurable (default `cluster.local`,
as Istio); namespaces and service accounts are Kubernetes names (DNS-1123 labels / subdomains).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_TRUST_DOMAIN = "cluster.local"
DEFAULT_SERVICE_ACCOUNT = "default"
SPIFFE_SCHEME = "spiffe://"
# The control plane's own identity: agents check SERVER_NAME in its TLS certificate.
SERVER_NAME = "mizzen-controlplane"
CONTROL_PLANE_NAMESPACE = "istio-system"
CONTROL_PLANE_SA = "mizzen-controlplane"

# SPIFFE ID spec: the trust domain is lowercase letters, digits, '.', '-', '_'; at most 255 bytes.
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]{1,255}$")
# Kubernetes: a namespace is a DNS-1123 label; a service account name a DNS-1123 subdomain.
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class InvalidIdentity(ValueError):
    """A SPIFFE ID, trust domain, namespace or service account that is not well formed."""


def check_trust_domain(td: str) -> str:
    if not isinstance(td, str) or not _TRUST_DOMAIN.match(td) or td.startswith(".") or td.endswith("."):
        raise InvalidIdentity(
            f"trust domain {td!r} is not valid: use lowercase letters, digits, '.', '-' and '_' "
            f"(e.g. {DEFAULT_TRUST_DOMAIN!r})")
    return td


def check_namespace(ns: str) -> str:
    if not isinstance(ns, str) or not _LABEL.match(ns):
        raise InvalidIdentity(f"namespace {ns!r} is not a DNS-1123 label (lowercase letters, digits, '-', "
                              f"at most 63 characters)")
    return ns


def check_service_account(sa: str) -> str:
    if not isinstance(sa, str) or len(sa) > 253 or not _SUBDOMAIN.match(sa):
        raise InvalidIdentity(f"service account {sa!r} is not a DNS-1123 subdomain (lowercase letters, digits, "
                              f"'-' and '.')")
    return sa


@dataclass(frozen=True, order=True)
class SpiffeId:
    """An Istio-style workload identity."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        check_trust_domain(self.trust_domain)
        check_namespace(self.namespace)
        check_service_account(self.service_account)

    @property
    def uri(self) -> str:
        return f"{SPIFFE_SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri

    @property
    def principal(self) -> str:
        """The form AuthorizationPolicy `principals` use: `<trust-domain>/ns/<ns>/sa/<sa>`."""
        return self.uri[len(SPIFFE_SCHEME):]

    @classmethod
    def parse(cls, uri: str) -> "SpiffeId":
        """`spiffe://td/ns/NS/sa/SA` -> SpiffeId; anything else raises InvalidIdentity saying what is wrong."""
        if not isinstance(uri, str) or not uri.startswith(SPIFFE_SCHEME):
            raise InvalidIdentity(f"{uri!r} is not a SPIFFE ID (expected spiffe://<trust-domain>/ns/<ns>/sa/<sa>)")
        parts = uri[len(SPIFFE_SCHEME):].split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            raise InvalidIdentity(f"{uri!r} does not have the form spiffe://<trust-domain>/ns/<ns>/sa/<sa>")
        return cls(parts[0], parts[2], parts[4])


@dataclass(frozen=True)
class PodIdentity:
    """Who an authenticated agent is: the pod it runs in and the identity its certificates carry."""

    pod: str  # instance id, `<namespace>.<pod>`
    namespace: str
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    workload: str = ""

    def __post_init__(self) -> None:
        check_namespace(self.namespace)
        check_service_account(self.service_account)
        if not self.pod:
            raise InvalidIdentity("pod id must not be empty")

    def spiffe_id(self, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> SpiffeId:
        return SpiffeId(trust_domain, self.namespace, self.service_account)
