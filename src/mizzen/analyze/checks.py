"""Analyzers for DestinationRule, ServiceEntry, Sidecar, Telemetry, Gateway, EnvoyFilter and Service, after
istioctl's (pkg/config/analysis/analyzers), plus Mizzen's report of fields that have no effect here. PURE."""
from __future__ import annotations

from typing import Iterable

from ..api.base import Resource
from ..api.effects import no_effect
from ..api.fields import host_matches
from ..api.networking import parse_protocol
from ..model.telemetry import METRICS_PROVIDERS
from .base import ERROR, INFO, WARNING, Context, Message, Workload, analyzer, ref, selects, selector_string

SYSTEM_NAMESPACES = frozenset({"istio-system", "kube-system", "kube-public"})


# ------------------------------------------------------------------ DestinationRule

@analyzer
def server_certificate_verification(ctx: Context) -> Iterable[Message]:
    """IST0128/IST0129: TLS SIMPLE or MUTUAL to the server without caCertificates: the server's identity is not
    verified (unless a workload-scoped rule takes the CA from credentialName)."""
    for dr in ctx.kind("DestinationRule"):
        tp = dr.spec.traffic_policy
        if tp is None:
            continue
        scoped = dr.spec.workload_selector is not None
        tls = tp.tls
        if tls is not None and tls.mode in ("SIMPLE", "MUTUAL") and not tls.ca_certificates and \
                not (tls.credential_name and scoped):
            yield Message("IST0128", WARNING, ref(dr), f"DestinationRule {dr.namespace}/{dr.name} in namespace "
                          f"{dr.namespace} has TLS mode set to {tls.mode} but no caCertificates are set to validate "
                          f"server identity for host: {dr.spec.host}", "set caCertificates (or use ISTIO_MUTUAL)",
                          "spec.trafficPolicy.tls")
        for i, p in enumerate(tp.port_level_settings):
            t = p.tls
            if t is not None and t.mode in ("SIMPLE", "MUTUAL") and not t.ca_certificates and \
                    not (t.credential_name and scoped):
                port = f"number:{p.port.number}" if p.port else ""
                yield Message("IST0129", WARNING, ref(dr), f"DestinationRule {dr.namespace}/{dr.name} in namespace "
                              f"{dr.namespace} has TLS mode set to {t.mode} but no caCertificates are set to validate "
                              f"server identity for host: {dr.spec.host} at port {port}",
                              "set caCertificates (or use ISTIO_MUTUAL)",
                              f"spec.trafficPolicy.portLevelSettings[{i}].tls")


@analyzer
def subsets_select_pods(ctx: Context) -> Iterable[Message]:
    """IST0174: a DestinationRule for a host no Service or ServiceEntry defines; IST0173: a subset whose
    labels select no workload (requests to it get 503 no healthy upstream)."""
    for dr in ctx.kind("DestinationRule"):
        svc = ctx.find_service(dr.spec.host, dr.namespace)
        if svc is None:
            yield Message("IST0174", WARNING, ref(dr), f"The host {dr.spec.host} defined in the DestinationRule does "
                          "not match any services in the mesh.", "fix the host or create the Service", "spec.host")
            continue
        base: dict[str, str] = {}
        if svc.source.kind == "ServiceEntry" and svc.source.spec.workload_selector is not None:
            base = dict(svc.source.spec.workload_selector.labels)
        for i, s in enumerate(dr.spec.subsets):
            if any(k.startswith(("topology.kubernetes.io/", "topology.istio.io/", "kubernetes.io/hostname")) and v
                   for k, v in s.labels.items()):
                continue  # labels the node gives a pod: not known from manifests
            want = {**base, **s.labels}
            if not any(selects(want, w.label_dict) for w in ctx.workloads):
                yield Message("IST0173", ERROR, ref(dr), f"The Subset {s.name} defined in the DestinationRule does "
                              "not select any pods. Which may lead to 503 UH (NoHealthyUpstream).",
                              "fix the subset's labels or run a workload with them", f"spec.subsets[{i}].labels")


@analyzer
def grpc_health_checks(ctx: Context) -> Iterable[Message]:
    """MZ0111: a gRPC active health check (Mizzen's healthCheck extension) on a service port that is not
    HTTP/2: Envoy checks gRPC health only over HTTP/2, so Mizzen leaves the check out there."""
    from ..model.services import port_protocol

    for dr in ctx.kind("DestinationRule"):
        tp = dr.spec.traffic_policy
        layers = [("spec.trafficPolicy", tp)] if tp else []
        layers += [(f"spec.subsets[{i}].trafficPolicy", s.traffic_policy) for i, s in enumerate(dr.spec.subsets)
                   if s.traffic_policy]
        if not any(t.health_check and t.health_check.grpc for _, t in layers):
            continue
        svc = ctx.find_service(dr.spec.host, dr.namespace)
        bad = [n for n, name, proto in (svc.ports if svc else ())
               if port_protocol(name, None, proto if svc.source.kind == "ServiceEntry" else None)
               not in ("HTTP2", "GRPC")]
        for path, t in layers:
            if t.health_check and t.health_check.grpc and bad:
                yield Message("MZ0111", WARNING, ref(dr), f"gRPC health check on port(s) {bad} of {dr.spec.host}, "
                              "which are not HTTP/2: it is left out there",
                              "name the port grpc-* or http2-*, or use an http or tcp check",
                              f"{path}.healthCheck.grpc")


# ------------------------------------------------------------------ ServiceEntry

@analyzer
def service_entry_addresses(ctx: Context) -> Iterable[Message]:
    """IST0134: a TCP (or unspecified-protocol) port on a ServiceEntry without addresses. Mizzen allocates a
    VIP for each named host (as Istio's DNS auto-allocation does), so only wildcard hosts need addresses."""
    for se in ctx.kind("ServiceEntry"):
        if se.spec.addresses or not any(h.startswith("*") for h in se.spec.hosts):
            continue
        for i, p in enumerate(se.spec.ports):
            if not p.protocol or p.protocol.upper() == "TCP":
                yield Message("IST0134", WARNING, ref(se), "ServiceEntry addresses are required for this protocol.",
                              "add addresses, or name the port's protocol (HTTP, TLS...)", f"spec.ports[{i}]")


@analyzer
def conflicting_service_entry_protocols(ctx: Context) -> Iterable[Message]:
    """IST0177: ServiceEntries that define one host and port with different protocols."""
    index: dict[tuple[str, str, int], list[tuple[str, Resource]]] = {}
    for se in ctx.kind("ServiceEntry"):
        scopes = {se.namespace if e == "." else e for e in se.spec.export_to} or {"*"}
        if "*" in scopes:
            scopes = {"*"}
        for scope in scopes:
            for h in se.spec.hosts:
                for p in se.spec.ports:
                    index.setdefault((scope, h, p.number), []).append(((p.protocol or "").upper(), se))
    reported: set = set()
    for (scope, host, port), entries in sorted(index.items(), key=lambda kv: kv[0]):
        if scope != "*":
            entries = entries + index.get(("*", host, port), [])
        protocols = sorted({p for p, _ in entries})
        if len(protocols) < 2:
            continue
        names = ", ".join(sorted({f"{se.namespace}/{se.name}" for _, se in entries}))
        for _, se in entries:
            if (se.key, host, port) in reported:
                continue
            reported.add((se.key, host, port))
            yield Message("IST0177", WARNING, ref(se), f"Multiple ServiceEntries ({names}) define the same host "
                          f"{host!r} and port {port} with conflicting protocols ({', '.join(protocols)}).",
                          "use one protocol for a host and port", "spec.ports")


# ------------------------------------------------------------------ Sidecar and Telemetry: selectors

def _selected(ctx: Context, resources: list[Resource], selector) -> Iterable[tuple[Resource, list[Workload]]]:
    for r in resources:
        sel = selector(r)
        if sel:
            yield r, [w for w in ctx.workloads_in(r.namespace) if selects(sel, w.label_dict)]


def _selector_conflicts(ctx: Context, kind: str, selector, code_overlap: str, code_default: str,
                        plural: str) -> Iterable[Message]:
    resources = ctx.kind(kind)
    by_workload: dict[tuple[str, str], list[Resource]] = {}
    for r, found in _selected(ctx, resources, selector):
        if not found and ctx.workloads:
            yield Message("IST0101", ERROR, ref(r), f"Referenced selector not found: {selector_string(selector(r))!r}",
                          "fix the selector's labels or run a workload with them",
                          "spec.workloadSelector" if kind == "Sidecar" else "spec.selector")
        for w in found:
            by_workload.setdefault((w.namespace, w.name), []).append(r)
    reported: set = set()
    for (ns, wname), lst in sorted(by_workload.items()):
        if len(lst) < 2:
            continue
        names = "[" + " ".join(sorted(r.name for r in lst)) + "]"
        for r in lst:
            if r.key in reported:
                continue
            reported.add(r.key)
            yield Message(code_overlap, ERROR, ref(r), f"The {plural} {names} in namespace {ns!r} select the same "
                          f"workload pod {wname!r}, which can lead to undefined behavior.",
                          "make the selectors disjoint")
    by_ns: dict[str, list[Resource]] = {}
    for r in resources:
        if not selector(r) and (kind != "Telemetry" or (r.spec.target_ref is None and not r.spec.target_refs)):
            by_ns.setdefault(r.namespace, []).append(r)
    for ns, lst in sorted(by_ns.items()):
        if len(lst) > 1:
            names = "[" + " ".join(sorted(r.name for r in lst)) + "]"
            for r in lst:
                yield Message(code_default, ERROR, ref(r), f"The {plural} {names} in namespace {ns!r} have no workload "
                              "selector, which can lead to undefined behavior.",
                              f"keep one namespace-wide {kind}; give the others a selector")


@analyzer
def sidecar_selectors(ctx: Context) -> Iterable[Message]:
    """IST0101 (selector), IST0110, IST0111: Sidecars that select nothing, overlap, or several namespace-wide."""
    yield from _selector_conflicts(ctx, "Sidecar", lambda r: dict(r.spec.workload_selector.labels)
                                   if r.spec.workload_selector else {}, "IST0110", "IST0111", "Sidecars")


def _telemetry_selector(r: Resource) -> dict[str, str]:
    return dict(r.spec.selector.match_labels) if r.spec.selector else {}


@analyzer
def telemetry_selectors(ctx: Context) -> Iterable[Message]:
    """IST0101 (selector), IST0159: Telemetries that select nothing or overlap."""
    yield from (m for m in _selector_conflicts(ctx, "Telemetry", _telemetry_selector, "IST0159", "IST0160",
                                               "Telemetries") if m.code != "IST0160")


@analyzer
def telemetry_default_selectors(ctx: Context) -> Iterable[Message]:
    """IST0160: several namespace-wide Telemetries in one namespace."""
    yield from (m for m in _selector_conflicts(ctx, "Telemetry", _telemetry_selector, "IST0159", "IST0160",
                                               "Telemetries") if m.code == "IST0160")


@analyzer
def telemetry_metrics_providers(ctx: Context) -> Iterable[Message]:
    """MZ0130 (Warning): a Telemetry's `metrics[].providers[].name` Mizzen does not know: the metrics of the
    workloads it selects are counted as with `prometheus` (inside Envoy, the default), so a misspelt
    `access-log-stream` does not do what its author meant."""
    for t in ctx.kind("Telemetry"):
        for i, m in enumerate(t.spec.metrics):
            for j, p in enumerate(m.providers):
                if p.name not in METRICS_PROVIDERS:
                    yield Message("MZ0130", WARNING, ref(t), f"unknown metrics provider {p.name!r}: its workloads' "
                                  "metrics are counted with 'prometheus' (inside Envoy, the default)",
                                  f"name one of {', '.join(METRICS_PROVIDERS)}",
                                  f"spec.metrics[{i}].providers[{j}].name")


# ------------------------------------------------------------------ Gateway

@analyzer
def gateway_ports(ctx: Context) -> Iterable[Message]:
    """IST0101 (selector): a Gateway's selector matches no workload; IST0162: a server port that the Services of
    the gateway's workloads do not expose."""
    for gw in ctx.kind("Gateway"):
        sel = dict(gw.spec.selector)
        pods = [w for w in ctx.workloads if selects(sel, w.label_dict)]
        if not pods:
            yield Message("IST0101", ERROR, ref(gw), f"Referenced selector not found: {selector_string(sel)!r}",
                          "fix the selector or run the gateway workload", "spec.selector")
            continue
        if all(p.kind == "Workload" for p in pods):
            continue  # Mizzen's gateway pods are reached at their pod IP and host ports: no Service (docs/gateway.md)
        ports: set[int] = set()
        for svc in ctx.kind("Service"):
            if svc.spec.selector and any(p.namespace == svc.namespace and selects(svc.spec.selector, p.label_dict)
                                         for p in pods):
                for p in svc.spec.ports:
                    if p.protocol == "TCP":
                        ports.add(p.target_port if isinstance(p.target_port, int) else p.port)
                        ports.add(p.port)
        for i, s in enumerate(gw.spec.servers):
            if s.port.number not in ports:
                yield Message("IST0162", WARNING, ref(gw), f"The gateway is listening on a target port (port "
                              f"{s.port.number}) that is not defined in the Service associated with its workload "
                              f"instances (Pod selector {selector_string(sel)}). If you need to access the gateway "
                              "port through the gateway Service, it will not be available.",
                              "add the port to the gateway's Service", f"spec.servers[{i}].port")


@analyzer
def conflicting_gateways(ctx: Context) -> Iterable[Message]:
    """IST0145: Gateways on the same workloads and port that offer the same host (with the same bind)."""
    gws = ctx.kind("Gateway")
    for gw in gws:
        sel = dict(gw.spec.selector)
        for i, s in enumerate(gw.spec.servers):
            clashes = []
            for other in gws:
                if other is gw:
                    continue
                osel = dict(other.spec.selector)
                same = osel == sel or any(selects(sel, w.label_dict) and selects(osel, w.label_dict)
                                          for w in ctx.workloads)
                if not same:
                    continue
                for os_ in other.spec.servers:
                    if os_.port.number != s.port.number or (os_.bind or "") != (s.bind or ""):
                        continue
                    if any(host_matches(_bare(a), _bare(b)) for a in s.hosts for b in os_.hosts):
                        clashes.append(f"{other.namespace}/{other.name}")
                        break
            if clashes:
                yield Message("IST0145", ERROR, ref(gw), f"Conflict with gateways {','.join(sorted(set(clashes)))} "
                              f"(workload selector {selector_string(sel)}, port {s.port.number}, hosts "
                              f"{','.join(s.hosts)}).", "give each host one Gateway server per port",
                              f"spec.servers[{i}]")


def _bare(h: str) -> str:
    return h.split("/", 1)[1] if "/" in h else h


@analyzer
def gateway_duplicate_certificates(ctx: Context) -> Iterable[Message]:
    """IST0138: several Gateways on the same workloads serve the same certificate (credentialName or files)."""
    certs: list[tuple[str, dict[str, str], Resource]] = []
    for gw in ctx.kind("Gateway"):
        for s in gw.spec.servers:
            t = s.tls
            if t is None or t.mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL"):
                continue
            cert = t.credential_name or (f"{t.server_certificate}|{t.private_key}" if t.server_certificate else "")
            if cert:
                certs.append((cert, dict(gw.spec.selector), gw))
    for cert, sel, gw in certs:
        # reported on a Gateway whose workloads another Gateway with the same certificate also selects
        others = [o for c, osel, o in certs if c == cert and o.key != gw.key and set(sel.items()) <= set(osel.items())]
        if others:
            names = "[" + " ".join(sorted({f"{g.namespace}/{g.name}" for g in (gw, *others)})) + "]"
            yield Message("IST0138", WARNING, ref(gw), f"Duplicate certificate in multiple gateways {names} may "
                          "cause 404s if clients re-use HTTP2 connections.", "use one certificate per gateway")


# ------------------------------------------------------------------ EnvoyFilter

@analyzer
def envoy_filter_operations(ctx: Context) -> Iterable[Message]:
    """IST0151-IST0155: EnvoyFilter operations that do nothing, or depend on order without a priority."""
    versioned: list[str] = []
    for ef in ctx.kind("EnvoyFilter"):
        for i, cp in enumerate(ef.spec.config_patches):
            if cp.patch is None:
                break
            value = cp.patch.value or {}
            name = value.get("name") if isinstance(value.get("name"), str) else ""
            if not name and cp.match and cp.match.listener and cp.match.listener.filter_chain and \
                    cp.match.listener.filter_chain.filter:
                name = cp.match.listener.filter_chain.filter.name or ""
            op, at, path = cp.patch.operation, cp.apply_to, f"spec.configPatches[{i}]"
            relative = False
            if op == "ADD" and at in ("ROUTE_CONFIGURATION", "HTTP_ROUTE"):
                yield Message("IST0153", ERROR, ref(ef), "The ADD operation will be ignored when applyTo is set to "
                              "ROUTE_CONFIGURATION, or HTTP_ROUTE.", "use MERGE", path)
            elif op == "REMOVE":
                if at in ("ROUTE_CONFIGURATION", "HTTP_ROUTE"):
                    yield Message("IST0154", ERROR, ref(ef), "The REMOVE operation will be ignored when applyTo is set "
                                  "to ROUTE_CONFIGURATION, or HTTP_ROUTE.", "remove the patch", path)
                else:
                    relative = True
            elif op == "REPLACE":
                if at not in ("NETWORK_FILTER", "HTTP_FILTER", "VIRTUAL_HOST"):
                    yield Message("IST0152", ERROR, ref(ef), "The REPLACE operation is only valid for HTTP_FILTER and "
                                  "NETWORK_FILTER.", "use MERGE", path)
                else:
                    relative = True
            elif op in ("INSERT_BEFORE", "INSERT_AFTER"):
                relative = True
            if relative and ef.spec.priority == 0:
                if name and name in versioned:
                    yield Message("IST0155", WARNING, ref(ef), "This EnvoyFilter does not have a priority and has a "
                                  "relative patch operation (NSTERT_BEFORE/AFTER, REPLACE, MERGE, DELETE) and "
                                  "proxyVersion set which can cause the EnvoyFilter not to be applied during an "
                                  "upgrade. Using the INSERT_FIRST or ADD option or setting the priority may help in "
                                  "ensuring the EnvoyFilter is applied correctly.", "set a priority", path)
                else:
                    yield Message("IST0151", WARNING, ref(ef), "This EnvoyFilter does not have a priority and has a "
                                  "relative patch operation set which can cause the EnvoyFilter not to be applied. "
                                  "Using the INSERT_FIRST of ADD option or setting the priority may help in ensuring "
                                  "the EnvoyFilter is applied correctly.", "set a priority", path)
            if cp.match and cp.match.proxy and cp.match.proxy.proxy_version:
                versioned.append(name)


# ------------------------------------------------------------------ Service

@analyzer
def port_names(ctx: Context) -> Iterable[Message]:
    """IST0118: a Service port whose name (and appProtocol) gives no protocol Istio knows; IST0150 for an
    ExternalName Service."""
    for svc in ctx.kind("Service"):
        if svc.namespace in SYSTEM_NAMESPACES or "gateway.istio.io/managed" in svc.metadata.labels:
            continue
        for i, p in enumerate(svc.spec.ports):
            known = parse_protocol(p.app_protocol) is not None if p.app_protocol else False
            prefix = (p.name or "").lower().split("-", 1)[0]
            known = known or parse_protocol(prefix) is not None or prefix in ("grpc-web", "https")
            if p.protocol == "UDP":
                known = True
            if not known or (p.name == "tcp" and svc.spec.type == "ExternalName"):
                if svc.spec.type == "ExternalName":
                    yield Message("IST0150", WARNING, ref(svc), "Port name for ExternalName service is invalid. Proxy "
                                  "may prevent tcp named ports and unmatched traffic for ports serving TCP protocol "
                                  "from being forwarded correctly", "name the port after its protocol (http-...)",
                                  f"spec.ports[{i}].name")
                else:
                    target = p.target_port if p.target_port is not None else p.port
                    yield Message("IST0118", INFO, ref(svc), f"Port name {p.name} (port: {p.port}, targetPort: "
                                  f"{target}) doesn't follow the naming convention of Istio port.",
                                  "name it http-*, http2-*, grpc-* or tcp-* (or set appProtocol)",
                                  f"spec.ports[{i}].name")


# ------------------------------------------------------------------ deprecated and no-effect fields

@analyzer
def deprecated_fields(ctx: Context) -> Iterable[Message]:
    """IST0002: deprecated fields Istio warns about."""
    for vs in ctx.kind("VirtualService"):
        for i, r in enumerate(vs.spec.http):
            if r.fault and r.fault.delay and r.fault.delay.percent:
                yield Message("IST0002", WARNING, ref(vs), "Deprecated: HTTPRoute.fault.delay.percent is deprecated; "
                              "use HTTPRoute.fault.delay.percentage", "use percentage: {value: N}",
                              f"spec.http[{i}].fault.delay.percent")
            if r.websocket_upgrade is not None:
                yield Message("IST0002", WARNING, ref(vs), "Deprecated: HTTPRoute.websocketUpgrade is removed from "
                              "Istio's API and has no effect: websocket upgrades are always allowed",
                              "remove websocketUpgrade", f"spec.http[{i}].websocketUpgrade")
    for sc in ctx.kind("Sidecar"):
        if sc.spec.outbound_traffic_policy and sc.spec.outbound_traffic_policy.egress_proxy:
            yield Message("IST0002", WARNING, ref(sc), "Deprecated: OutboundTrafficPolicy.EgressProxy ignored",
                          "remove egressProxy", "spec.outboundTrafficPolicy.egressProxy")


@analyzer
def no_effect_fields(ctx: Context) -> Iterable[Message]:
    """MZ0110: fields Mizzen accepts (they are valid Istio) but does not act on (api/effects.py)."""
    for r in ctx.resources:
        for path, why in no_effect(r):
            yield Message("MZ0110", INFO, ref(r), f"{path} has no effect in Mizzen: {why}",
                          "see docs/istio-fidelity.md", path)
