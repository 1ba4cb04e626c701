"""Names, small builders and protobuf helpers shared by the translators. Pure."""
from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from envoy.config.core.v3 import address_pb2, config_source_pb2

PASSTHROUGH = "PassthroughCluster"
BLACKHOLE = "BlackHoleCluster"
INBOUND_PASSTHROUGH = "InboundPassthroughCluster"
VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
HTTP_PROXY_ROUTE = "http_proxy"
# Set by a sidecar's inbound side on the 503 it answers when it could not even connect to its app (response
# flags UF/UH: the request reached no app); callers' default retry policies retry on it, on another host, and
# their route configs strip it from what reaches the calling app (docs/translation.md, "Retries").
UNSERVED_HEADER = "x-mizzen-unserved"
UNSERVED_FLAGS = ("UF", "UH")


def outbound_cluster(port: int, subset: str | None, host: str) -> str:
    return f"outbound|{port}|{subset or ''}|{host}"


def inbound_cluster(port: int) -> str:
    return f"inbound|{port}||"


def pack(msg) -> any_pb2.Any:
    """`msg` in an Any, serialized deterministically (map fields sorted, e.g. RBAC policies, jwt_authn
    providers), so equal config always has equal bytes and version."""
    a = any_pb2.Any()
    a.Pack(msg, deterministic=True)
    return a


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def u32(v: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=v)


def socket_address(ip: str, port: int) -> address_pb2.Address:
    if ip.startswith("unix://"):  # a ServiceEntry endpoint on a unix domain socket (`@name`: abstract)
        return address_pb2.Address(pipe=address_pb2.Pipe(path=ip[len("unix://"):]))
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def ads_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


