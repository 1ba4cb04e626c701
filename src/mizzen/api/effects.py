"""Fields Mizzen accepts (they are valid Istio, so a user's YAML loads unchanged) but does not act on yet,
each with the reason. `mizzen analyze` reports every one that is set (MZ0110): nothing is silently dropped.
PURE. Paths are below `spec`; `[]` stands for every element of a list, `{}` for every value of a map."""
from __future__ import annotations

from typing import Any, Iterator

from .workloadentry import address_kind

_TP = ["trafficPolicy", "trafficPolicy.portLevelSettings[]", "subsets[].trafficPolicy",
       "subsets[].trafficPolicy.portLevelSettings[]"]
_NO_MTLS = "endpoint identities come from the mesh CA (a ServiceEntry endpoint has no Mizzen certificate)"

NO_EFFECT: dict[str, list[tuple[str, str]]] = {
    "DestinationRule": [
        *[(f"{tp}.loadBalancer.backendUtilization", "Envoy's client-side weighted round robin is not configured")
          for tp in _TP],
        *[(f"{tp}.loadBalancer.zoneAwareLbSetting", "use localityLbSetting") for tp in _TP],
        *[(f"{tp}.connectionPool.http.http2KeepAlive", "not translated yet") for tp in _TP],
        *[(f"{tp}.connectionPool.tcp.idleTimeout", "not translated yet") for tp in _TP],
        *[(f"{tp}.loadBalancer.consistentHash.httpCookie.attributes", "not translated yet") for tp in _TP],
        *[(f"{tp}.outlierDetection.outlierDetectionHttpErrorCodes", "not translated yet") for tp in _TP],
        *[(f"{tp}.retryBudget.budgetInterval", "Envoy's retry budget has no interval") for tp in _TP],
        *[(f"{tp}.loadBalancer.warmup.minimumPercent", "not translated yet (the slow-start window is)") for tp in _TP],
        *[(f"{tp}.loadBalancer.warmup.aggression", "not translated yet (the slow-start window is)") for tp in _TP],
        *[(f"{tp}.tls.credentialName", "no Kubernetes secret store: give clientCertificate, privateKey and "
           "caCertificates as files") for tp in _TP],
        ("trafficPolicy.tunnel", "no tunnelling (CONNECT/POST) of upstream traffic"),
        ("subsets[].trafficPolicy.tunnel", "no tunnelling (CONNECT/POST) of upstream traffic"),
        ("trafficPolicy.proxyProtocol", "no PROXY protocol to upstreams"),
        ("subsets[].trafficPolicy.proxyProtocol", "no PROXY protocol to upstreams"),
        ("workloadSelector", "a DestinationRule applies to every client in its namespace (with a workloadSelector "
                             "it is private to its namespace, as in Istio)"),
    ],
    "VirtualService": [
        ("tls", "TLS (SNI) routes act on gateways only (TLS PASSTHROUGH servers); a sidecar sends TLS traffic to "
                "the service's cluster"),
        ("tcp", "TCP routes act on gateways only (TCP and terminated TLS servers); a sidecar sends TCP traffic to "
                "the service's cluster"),
        ("http[].retries.retryRemoteLocalities", "one locality per mesh"),
        ("http[].retries.retryIgnorePreviousHosts=false", "retries always go to another host"),
        ("http[].match[].statPrefix", "no per-match statistics"),
    ],
    "RequestAuthentication": [
        ("jwtRules[].presence", "a token is optional at authentication, as in Istio's sidecars: require one with "
                                "an AuthorizationPolicy (requestPrincipals: [\"*\"])"),
    ],
    "ServiceEntry": [
        ("endpoints[].network", "one network per mesh"),
        ("endpoints[].serviceAccount", _NO_MTLS),
    ],
    "Sidecar": [
        ("ingress", "inbound listeners are built from the workload's ports"),
        ("outboundTrafficPolicy.egressProxy", "ALLOW_ANY passes unknown destinations through directly"),
        ("inboundConnectionPool", "not translated yet"),
        ("egress[].port", "egress listeners are not split by port; hosts apply to every port"),
        ("egress[].bind", "egress listeners are not split by port; hosts apply to every port"),
        ("egress[].captureMode", "capture is set up per pod by the runner"),
    ],
    "Gateway": [  # served by gateway pods (docs/gateway.md), but for these
        ("servers[].bind", "a gateway listens on every address of its pod (and its host ports on 127.0.0.1)"),
        ("servers[].defaultEndpoint", "not translated yet"),
        ("servers[].tls.mode=AUTO_PASSTHROUGH", "one network per mesh: no east-west gateway"),
    ],
    "Telemetry": [
        ("tracing[].useRequestIdForTraceSampling", "sampling follows randomSamplingPercentage only"),
        ("tracing[].enableIstioTags", "Istio's tags are always added"),
        ("tracing[].disableContextPropagation", "trace headers are always propagated"),
        ("metrics[].providers", "Istio's metrics are served on :15020 for Prometheus (docs/observability.md)"),
        ("metrics[].overrides[].match.metric", "metrics are switched per side (client/server) for all metrics"),
        ("metrics[].overrides[].match.customMetric", "metrics are switched per side (client/server)"),
        ("metrics[].overrides[].tagOverrides", "Istio's standard labels are reported as they are"),
        ("accessLogging[].filter", "every request is logged"),
        ("accessLogging[].match", "client and server sides are logged alike"),
        ("targetRef", "use selector"),
        ("targetRefs", "use selector"),
    ],
    "ProxyConfig": [
        ("concurrency", "the agent starts Envoy with its own settings"),
        ("environmentVariables", "the agent starts Envoy with its own settings"),
        ("image", "a local mesh pulls no images"),
    ],
    "EnvoyFilter": [
        ("configPatches[].applyTo=EXTENSION_CONFIG", "no extension config discovery (ECDS)"),
        ("configPatches[].applyTo=BOOTSTRAP", "the agent writes each proxy's bootstrap"),
        ("configPatches[].match.context=WAYPOINT", "Mizzen runs no waypoints"),
        ("targetRefs", "use workloadSelector"),
    ],
}


def _walk(node: Any, parts: list[str], path: str) -> Iterator[str]:
    if not parts:
        if node not in (None, [], {}, ""):
            yield path
        return
    head, rest = parts[0], parts[1:]
    want = None
    if "=" in head:
        head, want = head.split("=", 1)
    many = head.endswith("[]")
    key = head[:-2] if many else head
    if not isinstance(node, dict) or key not in node:
        return
    child = node[key]
    here = f"{path}.{key}" if path else key
    if many:
        for i, item in enumerate(child if isinstance(child, list) else []):
            yield from _walk(item, rest, f"{here}[{i}]")
    elif want is not None:
        if str(child).lower() == want.lower():
            yield here
    else:
        yield from _walk(child, rest, here)


def _workload_entry(spec: dict) -> Iterator[tuple[str, str]]:
    """A WorkloadEntry that is no endpoint (model/workloadentries.py): a host name, or only a network."""
    kind = address_kind(str(spec.get("address") or ""))
    if kind == "fqdn":
        yield "address", ("a host name is not resolved for a WorkloadEntry: it is no endpoint (use its IP "
                          "address, or a ServiceEntry with resolution DNS)")
    elif not kind and spec.get("network"):
        yield "network", "one network per mesh: a WorkloadEntry without an address (behind another network's " \
                         "gateway) is no endpoint"
    elif spec.get("network"):
        yield "network", "one network per mesh"


# kind -> fn(spec as a dict) -> (path below spec, reason): rules a path pattern cannot say
NO_EFFECT_RULES = {"WorkloadEntry": _workload_entry}


def no_effect(resource: Any) -> list[tuple[str, str]]:
    """(field path, reason) for every set field of `resource` that Mizzen does not act on."""
    table = NO_EFFECT.get(resource.kind)
    rule = NO_EFFECT_RULES.get(resource.kind)
    if not table and rule is None:
        return []
    spec = resource.to_dict().get("spec") or {}
    out = []
    for pattern, why in table or ():
        for p in _walk(spec, pattern.split("."), ""):
            out.append((f"spec.{p}", why))
    if rule is not None:
        out += [(f"spec.{p}", why) for p, why in rule(spec)]
    return out
