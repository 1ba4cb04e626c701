"""Tracing (`HttpConnectionManager.tracing`): spans from every sidecar, sampling and collector per Istio's
Telemetry `tracing` (`model/telemetry.py`: mesh default, namespace, workload; per side with `match.mode`).

- the embedded collector (provider `mizzen`, the default): Envoy's Zipkin tracer in B3+W3C mode (extracts B3,
  else `traceparent`; injects both), spans as Zipkin v2 JSON to the bootstrap cluster `mizzen-traces` (the
  control plane's receiver) — only for proxies whose bootstrap has it (node metadata);
- an ExtensionProvider `zipkin`: the same tracer, to the provider service's outbound cluster;
- an ExtensionProvider `opentelemetry`: Envoy's OpenTelemetry tracer (W3C `traceparent` only: Envoy 1.40's
  has no B3), OTLP/gRPC to the provider service's outbound cluster.
A provider whose service the proxy cannot see (unknown host, hidden by its Sidecar), or that is not defined,
gives no tracing on that proxy: Envoy would reject a tracer whose cluster it does not have.
Sampling applies to requests that arrive without a decision; a sampled caller's decision is followed.
"""
from __future__ import annotations

from envoy.config.trace.v3 import opentelemetry_pb2, zipkin_pb2  # noqa: F401  (registers the typed configs)
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from ...model.telemetry import Tracing
from ...telemetry import envoy as tel
from ..common import outbound_cluster
from .base import Chain, Feature, ViewContext

NAME = "mizzen.tracing"  # not an HTTP filter: the HCM's own tracing settings


def _custom_tags(t: Tracing) -> list[dict]:
    out = []
    for tag, kind, a, b in t.custom_tags:
        if kind == "literal":
            out.append({"tag": tag, "literal": {"value": a}})
        elif kind == "environment":
            out.append({"tag": tag, "environment": {"name": a, **({"default_value": b} if b else {})}})
        elif kind == "header":
            out.append({"tag": tag, "request_header": {"name": a, **({"default_value": b} if b else {})}})
        else:
            out.append({"tag": tag, "value": a})
    return out


def tracing_config(t: Tracing, ctx: ViewContext) -> dict | None:
    """Envoy's HCM `tracing` (JSON form) for one side's Tracing, or None when this proxy cannot trace."""
    p = t.provider
    if p.kind == "embedded":
        if tel.TRACES_CLUSTER not in ctx.proxy.bootstrap_clusters:
            return None
        out = tel.zipkin_tracing(t.sampling)
    elif p.kind in ("zipkin", "opentelemetry"):
        if not any(s.hostname == p.host and any(sp.port == p.port for sp in s.ports) for s in ctx.services):
            return None
        # the collector's service as Host/:authority (as Istio): the default, the cluster name, is not a valid
        # authority ('|'), and the collector's own sidecar would refuse every export
        cluster, authority = outbound_cluster(p.port, None, p.host), f"{p.host}:{p.port}"
        if p.kind == "zipkin":
            out = tel.zipkin_tracing(t.sampling, cluster=cluster, endpoint=p.path, hostname=authority)
            out["provider"]["typed_config"]["trace_context_option"] = p.context
        else:
            out = tel.otel_tracing(f"{ctx.proxy.workload or 'unknown'}.{ctx.proxy.namespace}", t.sampling,
                                   cluster=cluster, authority=authority)
    else:
        return None
    tags = _custom_tags(t)
    if tags:
        out["custom_tags"] = tags
    if p.max_tag_length is not None:
        out["max_path_tag_length"] = p.max_tag_length
    return out


class TracingFeature(Feature):
    name = NAME

    def patch_hcm(self, hcm: hcm_pb2.HttpConnectionManager, at: Chain, ctx: ViewContext) -> None:
        t = ctx.once("telemetry", lambda: ctx.resolved.telemetry_for(ctx.proxy)).tracing(at.outbound)
        if t is None:
            return
        cfg = ctx.once(("tracing", at.outbound), lambda: tracing_config(t, ctx))
        if cfg is not None:
            json_format.ParseDict(cfg, hcm.tracing)


FEATURE = TracingFeature()
