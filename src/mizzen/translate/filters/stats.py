"""Istio's request metrics: every HCM and tcp_proxy of a proxy whose agent listens for them (its bootstrap has
`mizzen-telemetry`, announced in the node metadata) has them counted; the agent serves `istio_requests_total` & co.
(`mizzen.agent.telemetry`, docs/observability.md).

On by default on both sides (reporter=source on outbound chains, reporter=destination on inbound ones); a
Telemetry `metrics[].overrides[{match: {mode}, disabled: true}]` turns a side off and `reportingInterval` sets
how often Envoy flushes (`model/telemetry.py`). By default (`prometheus`, `envoy-stats`) an HCM counts its requests
into Envoy's own stats (`telemetry/envoy.native_metrics_log`, the request's :authority a tag on a sidecar's
outbound side only; the agent renames them at scrape time), and a second HCM stream sampled by a runtime key
(0 % until `mizzen top` watches, `agent/telemetry.py`) feeds the top paths only. With `access-log-stream` an HCM
streams one entry per request to the agent instead. TCP connections are always on the stream (one entry when
it connects, every reporting interval, at the end). A proxy without the agent's stream (no bootstrap cluster)
keeps byte-identical listeners: the cluster name would be unknown to its Envoy (a NACK).
"""
from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2  # noqa: F401  (registers the typed configs)
from envoy.extensions.access_loggers.stats.v3 import stats_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import json_format

from ...api.virtual_service import duration_seconds
from ...telemetry import envoy as tel
from .base import Chain, Feature, ViewContext

NAME = "envoy.access_loggers.http_grpc"
# Envoy ships a batch when its buffer fills or this much time passed: one gRPC message per batch. 64 KiB holds
# ~150 entries; the interval bounds how stale the agent's numbers are (a Telemetry's reportingInterval).
FLUSH_INTERVAL = "1s"
BUFFER_BYTES = 65536
TCP_INTERVAL = "5s"  # periodic entries of long-lived TCP connections (bytes show up while they last)


def _on(ctx: ViewContext, at: Chain) -> bool:
    if tel.TELEMETRY_CLUSTER not in ctx.proxy.bootstrap_clusters:
        return False
    return _telemetry(ctx).metrics(at.outbound)


def _telemetry(ctx: ViewContext):
    return ctx.once("telemetry", lambda: ctx.resolved.telemetry_for(ctx.proxy))


def _interval(ctx: ViewContext, default: str) -> str:
    iv = ctx.resolved.telemetry_for(ctx.proxy).reporting_interval
    return f"{duration_seconds(iv):g}s" if iv else default


def _direction(at: Chain) -> str:
    return "outbound" if at.outbound else "inbound"


def _parse(d: dict) -> accesslog_pb2.AccessLog:
    return json_format.ParseDict(d, accesslog_pb2.AccessLog())


class Stats(Feature):
    name = NAME

    def patch_hcm(self, hcm: hcm_pb2.HttpConnectionManager, at: Chain, ctx: ViewContext) -> None:
        if not _on(ctx, at):
            return
        if _telemetry(ctx).metrics_native:
            authority = at.outbound and not at.gateway  # see native_metrics_log
            hcm.access_log.append(_parse(tel.native_metrics_log(_direction(at), authority=authority)))
            # `mizzen top` on demand: the stream, sampled at 0 % until the agent raises the runtime key
            hcm.access_log.append(_parse(tel.http_access_log(_direction(at), flush_interval=FLUSH_INTERVAL,
                                                             buffer_bytes=BUFFER_BYTES, sampled=True)))
        else:
            hcm.access_log.append(_parse(tel.http_access_log(
                _direction(at), flush_interval=_interval(ctx, FLUSH_INTERVAL), buffer_bytes=BUFFER_BYTES)))

    def patch_tcp_proxy(self, tp: tcp_proxy_pb2.TcpProxy, at: Chain, ctx: ViewContext) -> None:
        if _on(ctx, at):
            tp.access_log.append(_parse(tel.tcp_access_log(
                _direction(at), flush_interval=_interval(ctx, FLUSH_INTERVAL), buffer_bytes=BUFFER_BYTES)))
            json_format.ParseDict(tel.tcp_access_log_options(_interval(ctx, TCP_INTERVAL)), tp.access_log_options)


FEATURE = Stats()
