"""A gateway proxy's listeners and route configurations, from the Istio Gateways that select it. Pure.

Istio's semantics are asked of `model/gateway.py`; this module only shapes Envoy messages:
- one listener per server port, `0.0.0.0_<port>` (netns mode: in the gateway pod's namespace, reachable at
  the pod IP), and for a port the gateway Workload publishes (`spec.hostPorts`, node metadata HOST_PORTS) one
  more, `host_127.0.0.1_<hostPort>`, bound by Envoy in the host's network namespace (`SocketAddress.
  network_namespace_filepath`, node metadata HOST_NETNS) with the same filter chains. In loopback mode (no
  namespaces) only the latter exists, on the gateway's own loopback.
- HTTP servers of a port share one chain and one route config `http.<port>`; a server with
  `tls.httpsRedirect` answers its hosts with a redirect to https (`require_tls: ALL`).
- HTTPS servers (and TLS servers that terminate) get one chain each, matched by SNI (the server's hosts; none
  for `*`), with a `DownstreamTlsContext` whose certificate comes from the agent's SDS: `credentialName` →
  secret `kubernetes://<credentialName>` (the agent reads the Secret of that name in the gateway's namespace;
  `kubernetes-gateway://<ns>/<name>`, a Gateway API certificateRef granted by a ReferenceGrant, as it is) and, for MUTUAL / OPTIONAL_MUTUAL, the client CA `kubernetes://<credentialName>-cacert` (the same Secret's
  `ca.crt`), as Istio names them; `serverCertificate`/`privateKey`/`caCertificates` files are read by Envoy
  in the gateway pod; ISTIO_MUTUAL uses the mesh certificate. HTTPS route config:
  `https.<port>.<port name>.<gateway>.<namespace>`.
- TLS PASSTHROUGH servers: one chain per `tls` route match of a bound VirtualService, by SNI, to a tcp_proxy
  (weighted clusters for several destinations). TCP servers: the first bound `tcp` route.
- gateway HCMs strip any port from the Host header before matching (a client reaching a host port sends
  `Host: name:18443`) and are the edge: `use_remote_address`, so the client's address is the XFF hop.
HTTP features come from the same table as sidecars' (`filters/`): the gateway's chains are outbound chains,
where VirtualService features act, marked `gateway` (`Chain.callee`): the RequestAuthentications,
AuthorizationPolicies and workloadSelector RateLimits that select the gateway workload are enforced there too,
as Istio's gateways enforce them (the network RBAC filter before the tcp_proxy of TCP/TLS chains).
"""
from __future__ import annotations

from typing import Callable

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from ..model import gateway as G
from ..model.gateway_api import CROSS_NAMESPACE_CREDENTIAL
from ..model.types import LISTENER, ROUTE
from . import filters
from . import listeners as L
from . import tls as T
from .common import BLACKHOLE, outbound_cluster, pack, socket_address
from .filters import Chain, ViewContext
from .routes import RouteBuilder

CREDENTIAL_PREFIX = "kubernetes://"
CA_SUFFIX = "-cacert"
_TLS_VERSIONS = {"TLS_AUTO": common_pb2.TlsParameters.TLS_AUTO, "TLSV1_0": common_pb2.TlsParameters.TLSv1_0,
                 "TLSV1_1": common_pb2.TlsParameters.TLSv1_1, "TLSV1_2": common_pb2.TlsParameters.TLSv1_2,
                 "TLSV1_3": common_pb2.TlsParameters.TLSv1_3}

Add = Callable[[str, str, object], None]


def credential_secret(name: str) -> str:
    """The SDS secret name of a credentialName: `kubernetes://<name>` (a Secret of the gateway's namespace), or a
    granted Secret of another namespace as it is written (`kubernetes-gateway://<ns>/<name>`, Istio's form)."""
    return name if name.startswith(CROSS_NAMESPACE_CREDENTIAL) else CREDENTIAL_PREFIX + name


def gateway_routes(ctx: ViewContext) -> tuple:
    """The http routes of every VirtualService bound to this gateway (for the feature table's `any_route`)."""
    config, proxy = ctx.snap.config, ctx.proxy
    out = []
    for ps in G.ports(config, proxy):
        for gs in ps.servers:
            for vs, _hosts in G.bound(config, gs, proxy.namespace):
                out += [gr.route for gr in G.http_routes(config, vs, gs, proxy)]
    return tuple(out)


def render(ctx: ViewContext, add: Add) -> None:
    """Add the gateway's listeners and route configs to its view (clusters are the renderer's)."""
    proxy = ctx.proxy
    host_ports = dict(proxy.host_ports)
    rb = RouteBuilder(ctx)
    for ps in G.ports(ctx.snap.config, proxy):
        chains, inspect = _port_chains(ctx, rb, ps, add)
        targets = []
        if proxy.interception != "loopback":
            targets.append((f"0.0.0.0_{ps.number}", socket_address("0.0.0.0", ps.number)))
        if ps.number in host_ports or proxy.interception == "loopback":
            hp = host_ports.get(ps.number, ps.number)
            addr = socket_address("127.0.0.1", hp)
            if proxy.interception != "loopback" and proxy.host_netns:
                addr.socket_address.network_namespace_filepath = proxy.host_netns
            targets.append((f"host_127.0.0.1_{hp}", addr))
        for name, addr in targets:
            lst = listener_pb2.Listener(name=name, address=addr, traffic_direction=base_pb2.OUTBOUND)
            lst.filter_chains.extend(chains)
            if inspect:
                lst.listener_filters.append(lc.ListenerFilter(name=T.TLS_INSPECTOR, typed_config=pack(
                    tls_inspector_pb2.TlsInspector())))
            add(LISTENER, name, lst)


# ------------------------------------------------------------------------------------------ filter chains
def _port_chains(ctx: ViewContext, rb: RouteBuilder, ps: G.PortServers, add: Add
                 ) -> tuple[list[lc.FilterChain], bool]:
    chains: list[lc.FilterChain] = []
    seen: set[tuple] = set()  # filter chain matches already taken (Envoy refuses duplicates): first server wins
    plain_http = [gs for gs in ps.servers if gs.protocol in G.HTTP_PROTOCOLS]
    tls_servers = [gs for gs in ps.servers if gs.protocol in ("HTTPS", "TLS")]
    tcp_servers = [gs for gs in ps.servers if gs.protocol not in G.HTTP_PROTOCOLS + ("HTTPS", "TLS")]
    inspect = bool(tls_servers)

    def take(fc: lc.FilterChain) -> bool:
        key = fc.filter_chain_match.SerializeToString(deterministic=True)
        if key in seen:
            return False
        seen.add(key)
        chains.append(fc)
        return True

    for gs in tls_servers:
        if gs.terminates_tls:
            fc = lc.FilterChain(name=f"{gs.protocol.lower()}.{ps.number}.{gs.name}")
            _sni(fc, [h for _ns, h in gs.host_patterns])
            fc.transport_socket.CopyFrom(_downstream_tls(gs, ctx))
            if gs.protocol == "HTTPS":
                name = f"https.{ps.number}.{gs.name}"
                add(ROUTE, name, _route_config(ctx, rb, name, [gs]))
                fc.filters.append(_hcm(f"{name}", Chain(True, ps.number, gateway=True), ctx, name))
            else:
                fc.filters.extend(_tcp(ctx, gs, ps.number))
            take(fc)
        else:  # PASSTHROUGH: by SNI to the `tls` routes' destinations
            for vs, _hosts in G.bound(ctx.snap.config, gs, ctx.proxy.namespace):
                for gr in G.tls_routes(vs, gs, ctx.proxy):
                    for m in gr.matches:
                        fc = lc.FilterChain(name=f"{gr.stem}.{ps.number}")
                        _sni(fc, m.sni_hosts)
                        fc.filters.extend(_tcp_filter(ctx, gr, ps.number))
                        take(fc)
    if plain_http:
        name = f"http.{ps.number}"
        add(ROUTE, name, _route_config(ctx, rb, name, plain_http))
        fc = lc.FilterChain(name=name)
        if inspect:
            fc.filter_chain_match.transport_protocol = "raw_buffer"
        fc.filters.append(_hcm(f"{name}", Chain(True, ps.number, gateway=True), ctx, name))
        take(fc)
    for gs in tcp_servers:
        fc = lc.FilterChain(name=f"tcp.{ps.number}.{gs.name}")
        fc.filters.extend(_tcp(ctx, gs, ps.number))
        take(fc)
    return chains, inspect


def _sni(fc: lc.FilterChain, hosts: list[str]) -> None:
    names = [h for h in dict.fromkeys(hosts) if h != "*"]
    if names and len(names) == len(set(hosts)):
        fc.filter_chain_match.server_names.extend(names)


def _hcm(stat_prefix: str, at: Chain, ctx: ViewContext, rds: str) -> lc.Filter:
    f = L.hcm(f"gateway_{stat_prefix}", at, ctx, rds=rds)
    m = hcm_pb2.HttpConnectionManager()
    f.typed_config.Unpack(m)
    m.strip_any_host_port = True
    m.use_remote_address.value = True
    return lc.Filter(name=L.HCM, typed_config=pack(m))


def _tcp(ctx: ViewContext, gs: G.GatewayServer, port: int) -> list[lc.Filter]:
    """A TCP (or terminated TLS) server: the first bound `tcp` route, else closed."""
    for vs, _hosts in G.bound(ctx.snap.config, gs, ctx.proxy.namespace):
        for gr in G.tcp_routes(vs, gs, ctx.proxy):
            if gr.route.route:
                return _tcp_filter(ctx, gr, port)
    return L.tcp_proxy(BLACKHOLE, BLACKHOLE, Chain(True, port, gateway=True), ctx)


def _tcp_filter(ctx: ViewContext, gr: G.GatewayRoute, port: int) -> list[lc.Filter]:
    dests = [(ctx.resolved.destination(d.destination, gr.owner.namespace, port), d.weight) for d in gr.route.route]
    names = [(outbound_cluster(d.port, d.subset, d.host), w) for d, w in dests]
    if len(names) == 1:
        return L.tcp_proxy(names[0][0], names[0][0], Chain(True, port, gateway=True), ctx)
    tp = tcp_proxy_pb2.TcpProxy(stat_prefix=gr.stem)
    for n, w in names:
        if w:
            tp.weighted_clusters.clusters.add(name=n, weight=w)
    at = Chain(True, port, gateway=True)
    filters.patch_tcp_proxy(tp, at, ctx)
    return [*filters.network_filters(at, ctx), lc.Filter(name=L.TCP_PROXY, typed_config=pack(tp))]


def _downstream_tls(gs: G.GatewayServer, ctx: ViewContext):
    t = gs.server.tls
    ctx_msg = tls_pb2.DownstreamTlsContext()
    common = ctx_msg.common_tls_context
    if gs.protocol == "HTTPS":
        common.alpn_protocols.extend(["h2", "http/1.1"])
    params = common.tls_params
    params.tls_minimum_protocol_version = _TLS_VERSIONS[t.min_protocol_version or "TLSV1_2"]
    if t.max_protocol_version:
        params.tls_maximum_protocol_version = _TLS_VERSIONS[t.max_protocol_version]
    params.cipher_suites.extend(t.cipher_suites)
    params.ecdh_curves.extend(t.ecdh_curves)
    if t.mode == "ISTIO_MUTUAL":
        common.tls_certificate_sds_secret_configs.append(T.sds_secret(T.DEFAULT_SECRET))
        common.validation_context_sds_secret_config.CopyFrom(T.sds_secret(T.ROOT_SECRET))
        ctx_msg.require_client_certificate.value = True
        return T.socket(ctx_msg)
    creds = list(t.credential_names or ([t.credential_name] if t.credential_name else []))
    for c in creds:
        common.tls_certificate_sds_secret_configs.append(T.sds_secret(credential_secret(c)))
    for c in t.tls_certificates or []:
        common.tls_certificates.add(certificate_chain=base_pb2.DataSource(filename=c.server_certificate),
                                    private_key=base_pb2.DataSource(filename=c.private_key))
    if t.server_certificate and t.private_key:
        common.tls_certificates.add(certificate_chain=base_pb2.DataSource(filename=t.server_certificate),
                                    private_key=base_pb2.DataSource(filename=t.private_key))
    if t.mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
        vc = common_pb2.CertificateValidationContext()
        for san in t.subject_alt_names:
            vc.match_typed_subject_alt_names.add(san_type=common_pb2.SubjectAltNameMatcher.DNS,
                                                 matcher={"exact": san})
        vc.verify_certificate_spki.extend(t.verify_certificate_spki)
        vc.verify_certificate_hash.extend(t.verify_certificate_hash)
        if creds and not t.ca_certificates:
            cvc = common.combined_validation_context
            cvc.default_validation_context.CopyFrom(vc)
            cvc.validation_context_sds_secret_config.CopyFrom(T.sds_secret(credential_secret(creds[0] + CA_SUFFIX)))
        else:
            if t.ca_certificates:
                vc.trusted_ca.filename = t.ca_certificates
            common.validation_context.CopyFrom(vc)
        ctx_msg.require_client_certificate.value = t.mode == "MUTUAL"
    return T.socket(ctx_msg)


# ------------------------------------------------------------------------------------------ routes
def _route_config(ctx: ViewContext, rb: RouteBuilder, name: str, servers: list[G.GatewayServer]
                  ) -> route_pb2.RouteConfiguration:
    """Virtual hosts by domain: the routes of every bound VirtualService that serves the domain, oldest
    VirtualService first (Istio merges them so); HTTP servers with httpsRedirect redirect their hosts."""
    config, proxy = ctx.snap.config, ctx.proxy
    rcfg = route_pb2.RouteConfiguration(name=name, validate_clusters={"value": False})
    vhosts: dict[str, rc.VirtualHost] = {}
    redirect: set[str] = set()
    for gs in servers:
        at = Chain(True, gs.port, gateway=True)
        https_redirect = gs.protocol in G.HTTP_PROTOCOLS and gs.server.tls is not None and gs.server.tls.https_redirect
        for vs, hosts in G.bound(config, gs, proxy.namespace):
            routes = []
            for gr in G.http_routes(config, vs, gs, proxy):
                r = gr.route
                if not r.route and r.redirect is None and r.direct_response is None:
                    continue
                routes += rb.routes_of(r, gr.owner.namespace, gr.stem, gr.matches, gs.port, at)
            for h in hosts:
                vh = vhosts.get(h)
                if vh is None:
                    vh = vhosts[h] = rc.VirtualHost(name=f"{h}:{gs.port}", domains=[h])
                vh.routes.extend(routes)
                if https_redirect:
                    redirect.add(h)
        if https_redirect:  # a redirected host needs no VirtualService (Istio redirects the server's hosts)
            for _ns, h in gs.host_patterns:
                vhosts.setdefault(h, rc.VirtualHost(name=f"{h}:{gs.port}", domains=[h]))
                redirect.add(h)
    for h in sorted(vhosts, key=_domain_order):
        vh = vhosts[h]
        if h in redirect:
            vh.require_tls = rc.VirtualHost.ALL
        filters.patch_virtual_host(vh, None, Chain(True, servers[0].port, gateway=True), ctx)
        rcfg.virtual_hosts.append(vh)
    return rcfg


def _domain_order(h: str) -> tuple:
    """Exact names before wildcards (Envoy picks the most specific anyway; this keeps the output stable)."""
    return (h == "*", h.startswith("*"), h)
