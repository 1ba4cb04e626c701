"""Listeners.

netns mode (iptables capture): one outbound capture listener on 15001 with the original_dst listener
filter and one filter chain per destination port (HTTP → HCM with RDS route config named by the port;
TCP services → tcp_proxy matched by VIP and port), default chain → PassthroughCluster. One inbound
capture listener on 15006, one filter chain per container port → the app on loopback.

loopback mode (no root): an explicit HTTP proxy listener on 127.0.0.1:<outbound_port> using the
`http_proxy` route config, and one inbound listener per container port on 127.0.0.1:<inbound_port + i>.
"""
from __future__ import annotations

from envoy.config.core.v3 import protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2

from ..model.services import Service, is_http
from ..model.types import Proxy
from .filters import http_filters
from . import policies
from .common import (HTTP_PROXY_ROUTE, INBOUND_PASSTHROUGH, PASSTHROUGH, UNSERVED_FLAGS, UNSERVED_HEADER,
                     VIRTUAL_INBOUND, VIRTUAL_OUTBOUND, ads_source, inbound_cluster, outbound_cluster, pack,
                     socket_address)

HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"


def _router() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=pack(router_pb2.Router()))


def hcm(stat_prefix: str, *, rds: str | None = None, route_config=None, extra: frozenset[str] = frozenset()
        ) -> lc.Filter:
    # RDS (dynamic routes) means an outbound chain: VirtualService filters (fault, ...) act there, as in
    # Istio; inbound chains keep only the router. Feature filters come from the filters/ table.
    m = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        http_filters=[*http_filters(outbound=rds is not None, extra=extra), _router()],
        http_protocol_options=protocol_pb2.Http1ProtocolOptions(accept_http_10=True),
        normalize_path={"value": True},
        # websockets pass through like any upgrade
        upgrade_configs=[hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
    )
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


def tcp_proxy(stat_prefix: str, cluster: str, hash_source_ip: bool = False) -> lc.Filter:
    tp = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, cluster=cluster)
    if hash_source_ip:  # DestinationRule consistentHash.useSourceIp on a TCP port (ring hash / maglev cluster)
        tp.hash_policy.add().source_ip.SetInParent()
    return lc.Filter(name=TCP_PROXY, typed_config=pack(tp))


def _tcp_hash_source_ip(snap, svc: Service, port: int) -> bool:
    """Istio applies only `useSourceIp` to TCP traffic; other hash keys need HTTP (they are ignored)."""
    if snap is None:
        return False
    dr = snap.config.destination_rules_by_host.get(svc.hostname)
    ch = policies.effective(dr, None, port).consistent_hash if dr is not None else None
    return bool(ch is not None and ch.use_source_ip)


def http_extra_filters(snap, services) -> frozenset[str]:
    """Optional HTTP filters the outbound HCMs of a proxy seeing `services` need (CORS)."""
    from .routes import uses_cors

    return frozenset({"envoy.filters.http.cors"}) if snap is not None and uses_cors(snap, services) \
        else frozenset()


def _original_dst() -> lc.ListenerFilter:
    return lc.ListenerFilter(name="envoy.filters.listener.original_dst",
                             typed_config=pack(original_dst_pb2.OriginalDst()))


def virtual_outbound(proxy: Proxy, services: tuple[Service, ...], snap=None) -> listener_pb2.Listener:
    """`snap` (optional) enables what depends on config: CORS filter, TCP source-IP hashing."""
    lst = listener_pb2.Listener(name=VIRTUAL_OUTBOUND, address=socket_address("0.0.0.0", proxy.outbound_port),
                                listener_filters=[_original_dst()], traffic_direction=base_pb2.OUTBOUND)
    http_ports = sorted({p.port for s in services for p in s.ports if is_http(p.protocol)})
    extra = http_extra_filters(snap, services)
    for port in http_ports:
        fc = lst.filter_chains.add(name=f"0.0.0.0_{port}")
        fc.filter_chain_match.destination_port.value = port
        fc.filters.append(hcm(f"outbound_0.0.0.0_{port}", rds=str(port), extra=extra))
    for svc in services:
        if not svc.vip:
            continue
        for p in svc.ports:
            if is_http(p.protocol):
                continue
            fc = lst.filter_chains.add(name=f"{svc.vip}_{p.port}")
            fc.filter_chain_match.destination_port.value = p.port
            fc.filter_chain_match.prefix_ranges.add(address_prefix=svc.vip, prefix_len={"value": 32})
            fc.filters.append(tcp_proxy(outbound_cluster(p.port, None, svc.hostname),
                                        outbound_cluster(p.port, None, svc.hostname),
                                        _tcp_hash_source_ip(snap, svc, p.port)))
    lst.default_filter_chain.name = PASSTHROUGH
    lst.default_filter_chain.filters.append(tcp_proxy(PASSTHROUGH, PASSTHROUGH))
    return lst


def virtual_inbound(proxy: Proxy, protocols: dict[int, str], inbound_routes: dict) -> listener_pb2.Listener:
    lst = listener_pb2.Listener(name=VIRTUAL_INBOUND, address=socket_address("0.0.0.0", proxy.inbound_port),
                                listener_filters=[_original_dst()], traffic_direction=base_pb2.INBOUND)
    for port in sorted(protocols):
        fc = lst.filter_chains.add(name=inbound_cluster(port))
        fc.filter_chain_match.destination_port.value = port
        if is_http(protocols[port]):
            fc.filters.append(hcm(f"inbound_0.0.0.0_{port}", route_config=inbound_routes[port]))
        else:
            fc.filters.append(tcp_proxy(inbound_cluster(port), inbound_cluster(port)))
    lst.default_filter_chain.name = INBOUND_PASSTHROUGH
    lst.default_filter_chain.filters.append(tcp_proxy(INBOUND_PASSTHROUGH, INBOUND_PASSTHROUGH))
    return lst


def http_proxy_outbound(proxy: Proxy, snap=None, services: tuple[Service, ...] = ()) -> listener_pb2.Listener:
    lst = listener_pb2.Listener(name="outbound_http_proxy",
                                address=socket_address("127.0.0.1", proxy.outbound_port),
                                traffic_direction=base_pb2.OUTBOUND)
    lst.filter_chains.add(name="http_proxy").filters.append(
        hcm("outbound_http_proxy", rds=HTTP_PROXY_ROUTE, extra=http_extra_filters(snap, services)))
    return lst


def loopback_inbound(proxy: Proxy, port: int, listen_port: int, protocol: str, route_config
                     ) -> listener_pb2.Listener:
    lst = listener_pb2.Listener(name=f"inbound_{port}", address=socket_address("127.0.0.1", listen_port),
                                traffic_direction=base_pb2.INBOUND)
    fc = lst.filter_chains.add(name=inbound_cluster(port))
    if is_http(protocol):
        fc.filters.append(hcm(f"inbound_{port}", route_config=route_config))
    else:
        fc.filters.append(tcp_proxy(inbound_cluster(port), inbound_cluster(port)))
    return lst
