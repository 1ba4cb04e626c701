"""The table of resource kinds Mizzen knows: apiVersions, spec model, CLI names."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import (authorization, core, destination_rule, envoy_filter, gateway, gateway_api, hosts, networking, patch,
               peer_authentication, proxy_config, ratelimit, router, secret, service_entry, sidecar, telemetry,
               virtual_service, workloadentry)
from .base import Spec


@dataclass(frozen=True)
class KindInfo:
    kind: str
    api_versions: tuple[str, ...]  # first is the preferred version
    spec_model: type[Spec]
    plural: str
    short_names: tuple[str, ...] = ()
    spec_at_top_level: bool = False  # e.g. ServiceAccount has no spec block
    cluster_scoped: bool = False  # metadata.namespace is the resource's own name (e.g. Namespace)
    # checks that need metadata as well as the spec: Resource -> [(path below spec, message)]
    checks: Callable[[Any], list[tuple[str, str]]] | None = None
    # Kubernetes fields that sit beside metadata instead of under spec (a v1 Secret's type/data/stringData):
    # read from either place into the spec; stored and served under spec
    top_level_fields: tuple[str, ...] = ()


KINDS: dict[str, KindInfo] = {
    k.kind: k
    for k in (
        KindInfo("VirtualService", networking.ISTIO_NETWORKING_VERSIONS, virtual_service.VirtualServiceSpec,
                 "virtualservices", ("vs", "virtualservice"), checks=virtual_service.resource_checks),
        KindInfo("DestinationRule", networking.ISTIO_NETWORKING_VERSIONS, destination_rule.DestinationRuleSpec,
                 "destinationrules", ("dr", "destinationrule"), checks=destination_rule.resource_checks),
        KindInfo("ServiceEntry", networking.ISTIO_NETWORKING_VERSIONS, service_entry.ServiceEntrySpec,
                 "serviceentries", ("se", "serviceentry"), checks=service_entry.resource_checks),
        KindInfo("Sidecar", networking.ISTIO_NETWORKING_VERSIONS, sidecar.SidecarSpec,
                 "sidecars", ("sidecar",)),
        KindInfo("Gateway", networking.ISTIO_NETWORKING_VERSIONS, gateway.GatewaySpec,
                 "gateways", ("gw", "gateway"), checks=gateway.resource_checks),
        KindInfo("WorkloadEntry", networking.ISTIO_NETWORKING_VERSIONS, workloadentry.WorkloadEntryStandalone,
                 "workloadentries", ("we", "workloadentry")),
        KindInfo("WorkloadGroup", networking.ISTIO_NETWORKING_VERSIONS, workloadentry.WorkloadGroupSpec,
                 "workloadgroups", ("wg", "workloadgroup")),
        KindInfo("Service", ("v1",), core.ServiceSpec, "services", ("svc", "service")),
        # Kubernetes Gateway API (docs/gateway.md); its Gateway under an internal name (see api/gateway_api.py)
        KindInfo(gateway_api.KUBE_GATEWAY, gateway_api.VERSIONS, gateway_api.KubeGatewaySpec, "kubegateways",
                 ("kgw", "kubegateway")),
        KindInfo("HTTPRoute", gateway_api.VERSIONS, gateway_api.HTTPRouteSpec, "httproutes", ("httproute",)),
        KindInfo("GRPCRoute", gateway_api.VERSIONS, gateway_api.GRPCRouteSpec, "grpcroutes", ("grpcroute",)),
        KindInfo("ReferenceGrant", gateway_api.GRANT_VERSIONS, gateway_api.ReferenceGrantSpec, "referencegrants",
                 ("referencegrant", "refgrant")),
        KindInfo("Secret", ("v1",), secret.SecretSpec, "secrets", ("secret",),
                 top_level_fields=secret.TOP_LEVEL_FIELDS),
        KindInfo("ServiceAccount", ("v1",), core.ServiceAccountSpec, "serviceaccounts",
                 ("sa", "serviceaccount"), spec_at_top_level=True),
        KindInfo("Namespace", ("v1",), core.NamespaceSpec, "namespaces", ("ns", "namespace"),
                 cluster_scoped=True),
        KindInfo("Workload", ("mizzen.dev/v1",), core.WorkloadSpec, "workloads", ("wl", "workload")),
        KindInfo("Router", ("mizzen.dev/v1",), router.RouterSpec, "routers", ("router", "rt")),
        KindInfo("Host", ("mizzen.dev/v1",), hosts.HostSpec, "hosts", ("host",), cluster_scoped=True),
        KindInfo("Telemetry", telemetry.TELEMETRY_VERSIONS, telemetry.TelemetrySpec, "telemetries",
                 ("telemetry",)),
        KindInfo("EnvoyPatch", ("mizzen.dev/v1",), patch.EnvoyPatchSpec, "envoypatches", ("envoypatch", "ep")),
        KindInfo("RateLimit", ("mizzen.dev/v1",), ratelimit.RateLimitSpec, "ratelimits", ("ratelimit", "rl")),
        KindInfo("EnvoyFilter", ("networking.istio.io/v1alpha3",), envoy_filter.EnvoyFilterSpec, "envoyfilters",
                 ("envoyfilter", "ef")),
        KindInfo("ProxyConfig", proxy_config.PROXY_CONFIG_VERSIONS, proxy_config.ProxyConfigSpec, "proxyconfigs",
                 ("proxyconfig", "pc")),
        KindInfo("PeerAuthentication", peer_authentication.SECURITY_VERSIONS,
                 peer_authentication.PeerAuthenticationSpec, "peerauthentications", ("pa", "peerauthentication")),
        KindInfo("AuthorizationPolicy", authorization.SECURITY_VERSIONS, authorization.AuthorizationPolicySpec,
                 "authorizationpolicies", ("authorizationpolicy", "ap")),
        KindInfo("RequestAuthentication", authorization.SECURITY_VERSIONS, authorization.RequestAuthenticationSpec,
                 "requestauthentications", ("requestauthentication", "ra")),
        KindInfo("ExtensionProvider", ("mizzen.dev/v1",), telemetry.ExtensionProviderSpec, "extensionproviders",
                 ("extensionprovider", "provider")),
    )
}

# Kubernetes kinds that appear in manifests Mizzen is given (e.g. Istio's bookinfo.yaml) and that Mizzen
# deliberately skips with a warning: they describe how to run containers, which a Workload does here.
SKIPPED_KINDS = {
    ("apps/v1", "Deployment"): "use a mizzen.dev/v1 Workload to run a program",
    ("apps/v1", "StatefulSet"): "use a mizzen.dev/v1 Workload to run a program",
    ("apps/v1", "DaemonSet"): "use a mizzen.dev/v1 Workload to run a program",
    ("v1", "Pod"): "use a mizzen.dev/v1 Workload to run a program",
}


def resolve_kind(name: str) -> KindInfo:
    """Map a CLI name (kind, plural or short name, any case) to its KindInfo."""
    low = name.lower()
    for k in KINDS.values():
        if low in (k.kind.lower(), k.plural, *k.short_names):
            return k
    raise KeyError(name)
