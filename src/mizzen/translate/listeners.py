"""Listeners.

netns mode (iptables capture): one outbound capture listener on 15001 with the original_dst listener
filter and one filter chain per destination port (HTTP → HCM with RDS route config named by the port;
TCP services → tcp_proxy matched by VIP and port), default chain → PassthroughCluster (BlackHoleCluster under
REGISTRY_ONLY). One inbound
capture listener on 15006, one filter chain per container port → the app on loopback.

loopback mode (no root): an explicit HTTP proxy listener on 127.0.0.1:<outbound_port> using the
`http_proxy` route config, and one inbound listener per container port on 127.0.0.1:<inbound_port + i>.

HTTP features (CORS, fault, access logs, the router ...) are added to each HCM and tcp_proxy by the
feature table (`filters/`); this module knows none of them.

Inbound mutual TLS (the proxy's PeerAuthentication, `Resolved.mtls`), per container port, for a proxy with a
mesh certificate: STRICT = one chain that requires a mesh client certificate; PERMISSIVE = the
`tls_inspector` listener filter and two chains, mesh mTLS (TLS offering Istio's ALPN values) and plaintext;
DISABLE = plaintext. mTLS HTTP chains append the caller's identity to `x-forwarded-client-cert` (Istio's
APPEND_FORWARD with the current peer's subject, URI and DNS); plaintext chains keep Envoy's default
(SANITIZE: a sidecar-less caller cannot forge it). A proxy without a certificate keeps plaintext chains; a
STRICT port there is closed (BlackHole), never silently opened.
"""
from __future__ import annotations

from envoy.config.core.v3 import base_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.config.accesslog.v3 import accesslog_pb2

from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2

from ..model.security import DISABLE, STRICT
from ..model.services import Service, is_http
from . import filters
from . import tls as T
from .common import (BLACKHOLE, HTTP_PROXY_ROUTE, INBOUND_PASSTHROUGH, PASSTHROUGH, UNSERVED_FLAGS, UNSERVED_HEADER,
                     VIRTUAL_INBOUND, VIRTUAL_OUTBOUND, ads_source, inbound_cluster, outbound_cluster, pack,
                     socket_address)
from .filters import Chain, ViewContext

HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"


def hcm(stat_prefix: str, at: Chain, ctx: ViewContext, *, rds: str | None = None, route_config=None,
        xfcc: bool = False) -> lc.Filter:
    """An HCM with RDS (an outbound chain) or an inline route config (inbound); features add their filters.
    `xfcc`: an mTLS inbound chain, whose app sees the caller's identity in `x-forwarded-client-cert`."""
    m = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        http_protocol_options=protocol_pb2.Http1ProtocolOptions(accept_http_10=True),
        normalize_path={"value": True},
        # websockets pass through like any upgrade
        upgrade_configs=[hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
    )
    if xfcc:
        m.forward_client_cert_details = hcm_pb2.HttpConnectionManager.APPEND_FORWARD
        cur = m.set_current_client_cert_details
        cur.subject.value = True
        cur.uri = True
        cur.dns = True
    filters.patch_hcm(m, at, ctx)
    if rds is not None:
        m.rds.config_source.CopyFrom(ads_source())
        m.rds.route_config_name = rds
    else:
        m.route_config.CopyFrom(route_config)
        m.local_reply_config.mappers.append(_unserved_mapper())
    return lc.Filter(name=HCM, typed_config=pack(m))


def _unserved_mapper() -> hcm_pb2.ResponseMapper:
    """Inbound: the 503 answered when the app could not be reached at all (refused: it died or is restarting)
    says so in a header, which callers' default retry policies retry on another replica (routes.py)."""
    mapper = hcm_pb2.ResponseMapper()
    mapper.filter.response_flag_filter.CopyFrom(accesslog_pb2.ResponseFlagFilter(flags=list(UNSERVED_FLAGS)))
    mapper.headers_to_add.append(base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=UNSERVED_HEADER, value="1"),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD))
    return mapper


def tcp_proxy(stat_prefix: str, cluster: str, at: Chain, ctx: ViewContext, hash_source_ip: bool = False
              ) -> list[lc.Filter]:
    """The network filters of a TCP chain: the features' (e.g. network RBAC), then the tcp_proxy."""
    tp = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, cluster=cluster)
    if hash_source_ip:  # DestinationRule consistentHash.useSourceIp on a TCP port (ring hash / maglev cluster)
        tp.hash_policy.add().source_ip.SetInParent()
    filters.patch_tcp_proxy(tp, at, ctx)
    return [*filters.network_filters(at, ctx), lc.Filter(name=TCP_PROXY, typed_config=pack(tp))]


def _tcp_hash_source_ip(ctx: ViewContext, svc: Service, port: int) -> bool:
    """Istio applies only `useSourceIp` to TCP traffic; other hash keys need HTTP (they are ignored)."""
    ch = ctx.resolved.policy(svc.hostname, None, port).consistent_hash
    return bool(ch is not None and ch.use_source_ip)


def _original_dst() -> lc.ListenerFilter:
    return lc.ListenerFilter(name="envoy.filters.listener.original_dst",
                             typed_config=pack(original_dst_pb2.OriginalDst()))


def virtual_outbound(ctx: ViewContext) -> listener_pb2.Listener:
    proxy, services = ctx.proxy, ctx.services
    lst = listener_pb2.Listener(name=VIRTUAL_OUTBOUND, address=socket_address("0.0.0.0", proxy.outbound_port),
                                listener_filters=[_original_dst()], traffic_direction=base_pb2.OUTBOUND)
    http_ports = sorted({p.port for s in services for p in s.ports if is_http(p.protocol)})
    for port in http_ports:
        fc = lst.filter_chains.add(name=f"0.0.0.0_{port}")
        fc.filter_chain_match.destination_port.value = port
        fc.filters.append(hcm(f"outbound_0.0.0.0_{port}", Chain(True, port), ctx, rds=str(port)))
    for svc in services:
        if not svc.vip:
            continue
        for p in svc.ports:
            if is_http(p.protocol):
                continue
            fc = lst.filter_chains.add(name=f"{svc.vip}_{p.port}")
            fc.filter_chain_match.destination_port.value = p.port
            fc.filter_chain_match.prefix_ranges.add(address_prefix=svc.vip, prefix_len={"value": 32})
            name = outbound_cluster(p.port, None, svc.hostname)
            fc.filters.extend(tcp_proxy(name, name, Chain(True, p.port), ctx, _tcp_hash_source_ip(ctx, svc, p.port)))
    # REGISTRY_ONLY (Sidecar outboundTrafficPolicy, else the mesh default): nothing outside the proxy's scope
    # is reached, a VIP the Sidecar's egress hides included
    default = BLACKHOLE if ctx.snap.outbound_mode(proxy) == "REGISTRY_ONLY" else PASSTHROUGH
    lst.default_filter_chain.name = default
    lst.default_filter_chain.filters.extend(tcp_proxy(default, default, Chain(True), ctx))
    return lst


def _inbound_filter(port: int, protocol: str, route_config, at: Chain, ctx: ViewContext, prefix: str,
                    xfcc: bool) -> list[lc.Filter]:
    if is_http(protocol):
        return [hcm(f"{prefix}{port}", at, ctx, route_config=route_config, xfcc=xfcc)]
    return tcp_proxy(inbound_cluster(port), inbound_cluster(port), at, ctx)


def _inbound_port_chains(lst: listener_pb2.Listener, port: int, protocol: str, route_config, ctx: ViewContext,
                         prefix: str, match_port: bool) -> bool:
    """The filter chains of one inbound port in `lst` by its mTLS mode; True if they need the tls_inspector."""
    at = Chain(False, port)
    mode = ctx.resolved.mtls(ctx.proxy).for_port(port)
    td = ctx.proxy.trust_domain

    def chain(name: str):
        fc = lst.filter_chains.add(name=name)
        if match_port:
            fc.filter_chain_match.destination_port.value = port
        return fc

    if not td or mode == DISABLE:
        fc = chain(inbound_cluster(port))
        if not td and mode == STRICT:  # no certificate to do mTLS with: closed, never plaintext
            fc.filters.extend(tcp_proxy(BLACKHOLE, BLACKHOLE, at, ctx))
        else:
            fc.filters.extend(_inbound_filter(port, protocol, route_config, at, ctx, prefix, False))
        return False
    server_alpn = ("h2", "http/1.1") if is_http(protocol) else ()
    if mode == STRICT:
        fc = chain(inbound_cluster(port))
        fc.transport_socket.CopyFrom(T.downstream_mtls(td, server_alpn))
        fc.filters.extend(_inbound_filter(port, protocol, route_config, at, ctx, prefix, True))
        return False
    # PERMISSIVE: mesh mTLS from sidecars (TLS with Istio's ALPN values) and plaintext from others
    fc = chain(inbound_cluster(port) + "mtls")
    fc.filter_chain_match.transport_protocol = "tls"
    fc.filter_chain_match.application_protocols.extend(T.ISTIO_ALPNS)
    fc.transport_socket.CopyFrom(T.downstream_mtls(td, server_alpn))
    fc.filters.extend(_inbound_filter(port, protocol, route_config, at, ctx, prefix, True))
    fc = chain(inbound_cluster(port))
    fc.filters.extend(_inbound_filter(port, protocol, route_config, at, ctx, prefix, False))
    return True


def _tls_inspector() -> lc.ListenerFilter:
    return lc.ListenerFilter(name=T.TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector()))


def virtual_inbound(ctx: ViewContext, protocols: dict[int, str], inbound_routes: dict) -> listener_pb2.Listener:
    lst = listener_pb2.Listener(name=VIRTUAL_INBOUND, address=socket_address("0.0.0.0", ctx.proxy.inbound_port),
                                listener_filters=[_original_dst()], traffic_direction=base_pb2.INBOUND)
    inspect = False
    for port in sorted(protocols):
        inspect |= _inbound_port_chains(lst, port, protocols[port], inbound_routes[port], ctx, "inbound_0.0.0.0_",
                                        True)
    if inspect:
        lst.listener_filters.append(_tls_inspector())
    lst.default_filter_chain.name = INBOUND_PASSTHROUGH
    at = Chain(False)
    if ctx.resolved.mtls(ctx.proxy).mode == STRICT:  # undeclared ports too: mesh mTLS only (Istio)
        if ctx.proxy.trust_domain:
            lst.default_filter_chain.transport_socket.CopyFrom(T.downstream_mtls(ctx.proxy.trust_domain))
        else:
            lst.default_filter_chain.filters.extend(tcp_proxy(BLACKHOLE, BLACKHOLE, at, ctx))
            return lst
    lst.default_filter_chain.filters.extend(tcp_proxy(INBOUND_PASSTHROUGH, INBOUND_PASSTHROUGH, at, ctx))
    return lst


def http_proxy_outbound(ctx: ViewContext) -> listener_pb2.Listener:
    lst = listener_pb2.Listener(name="outbound_http_proxy",
                                address=socket_address("127.0.0.1", ctx.proxy.outbound_port),
                                traffic_direction=base_pb2.OUTBOUND)
    lst.filter_chains.add(name="http_proxy").filters.append(
        hcm("outbound_http_proxy", Chain(True), ctx, rds=HTTP_PROXY_ROUTE))
    return lst


def loopback_inbound(ctx: ViewContext, port: int, listen_port: int, protocol: str, route_config
                     ) -> listener_pb2.Listener:
    lst = listener_pb2.Listener(name=f"inbound_{port}", address=socket_address("127.0.0.1", listen_port),
                                traffic_direction=base_pb2.INBOUND)
    if _inbound_port_chains(lst, port, protocol, route_config, ctx, "inbound_", False):
        lst.listener_filters.append(_tls_inspector())
    return lst
