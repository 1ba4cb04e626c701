"""Access logs: off by default (they cost CPU and disk at scale), on for the proxies an Istio Telemetry
resource selects with `accessLogging` (`Resolved.access_logging`). Envoy writes them to its stdout, which the
agent sends to the pod's `access.log` (`mizzen logs WORKLOAD`). Every HCM and every tcp_proxy of such a
proxy's listeners (inbound, outbound, passthrough) gets a stdout logger; other proxies' listeners are
unchanged."""
from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from ..common import pack
from .base import Chain, Feature, ViewContext

NAME = "envoy.access_loggers.stdout"
HTTP_FORMAT = ('[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
               '%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%ms "%REQ(:AUTHORITY)%" '
               '"%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% %ROUTE_NAME% "%REQ(X-REQUEST-ID)%" "%REQ(USER-AGENT)%"\n')
TCP_FORMAT = ('[%START_TIME%] TCP %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%ms '
              '"%DOWNSTREAM_REMOTE_ADDRESS%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER%\n')


def _stdout_log(fmt: str) -> accesslog_pb2.AccessLog:
    cfg = stream_pb2.StdoutAccessLog()
    cfg.log_format.text_format_source.inline_string = fmt
    return accesslog_pb2.AccessLog(name=NAME, typed_config=pack(cfg))


def _on(ctx: ViewContext) -> bool:
    return ctx.once("access_logging", lambda: ctx.resolved.access_logging(ctx.proxy))


class AccessLog(Feature):
    name = NAME

    def patch_hcm(self, hcm: hcm_pb2.HttpConnectionManager, at: Chain, ctx: ViewContext) -> None:
        if _on(ctx):
            hcm.access_log.append(_stdout_log(HTTP_FORMAT))

    def patch_tcp_proxy(self, tp: tcp_proxy_pb2.TcpProxy, at: Chain, ctx: ViewContext) -> None:
        if _on(ctx):
            tp.access_log.append(_stdout_log(TCP_FORMAT))


FEATURE = AccessLog()
