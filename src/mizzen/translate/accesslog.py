"""Access logs: off by default (they cost CPU and disk at scale), on for the proxies an Istio Telemetry
resource selects with `accessLogging`. Envoy writes them to its stdout, which the agent sends to the
pod's `access.log` (`mizzen logs WORKLOAD`). PURE."""
from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from ..model.snapshot import ROOT_NAMESPACE, Snapshot, labels_match
from ..model.types import Proxy
from .common import pack

HTTP_FORMAT = ('[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
               '%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%ms "%REQ(:AUTHORITY)%" '
               '"%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% %ROUTE_NAME% "%REQ(X-REQUEST-ID)%" "%REQ(USER-AGENT)%"\n')
TCP_FORMAT = ('[%START_TIME%] TCP %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%ms '
              '"%DOWNSTREAM_REMOTE_ADDRESS%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER%\n')


def access_logging_enabled(snap: Snapshot, proxy: Proxy) -> bool:
    """Istio's precedence: a workload-selecting Telemetry in the proxy's namespace, else a namespace-wide
    one, else a mesh-wide one in the root namespace. Enabled when it has an accessLogging entry not disabled."""
    labels = proxy.label_dict
    tels = snap.config.by_kind.get("Telemetry", ())
    chosen = None
    for t in tels:
        sel = t.spec.selector.match_labels if t.spec.selector else {}
        if t.namespace == proxy.namespace and sel and labels_match(sel, labels):
            chosen = t
            break
    for ns in (proxy.namespace, ROOT_NAMESPACE):
        if chosen is not None:
            break
        chosen = next((t for t in tels if t.namespace == ns and not (t.spec.selector and t.spec.selector.match_labels)
                       and t.spec.access_logging), None)
    if chosen is None or not chosen.spec.access_logging:
        return False
    return any(not a.disabled for a in chosen.spec.access_logging)


def _stdout_log(fmt: str) -> accesslog_pb2.AccessLog:
    cfg = stream_pb2.StdoutAccessLog()
    cfg.log_format.text_format_source.inline_string = fmt
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.stdout", typed_config=pack(cfg))


def with_access_log(lst: listener_pb2.Listener) -> listener_pb2.Listener:
    """A copy of the listener whose HTTP connection managers and TCP proxies write access logs."""
    out = listener_pb2.Listener()
    out.CopyFrom(lst)
    chains = list(out.filter_chains) + ([out.default_filter_chain] if out.HasField("default_filter_chain") else [])
    for fc in chains:
        for f in fc.filters:
            if f.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                m = hcm_pb2.HttpConnectionManager()
                f.typed_config.Unpack(m)
                m.access_log.append(_stdout_log(HTTP_FORMAT))
            elif f.typed_config.Is(tcp_proxy_pb2.TcpProxy.DESCRIPTOR):
                m = tcp_proxy_pb2.TcpProxy()
                f.typed_config.Unpack(m)
                m.access_log.append(_stdout_log(TCP_FORMAT))
            else:
                continue
            f.typed_config.CopyFrom(pack(m))
    return out
