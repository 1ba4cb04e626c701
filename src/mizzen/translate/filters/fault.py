"""Fault injection (`VirtualService.http[].fault`) → `envoy.filters.http.fault`.

The HCM of every outbound chain carries the filter with an empty config, `disabled` (issue 15: an enabled
fault filter is instantiated for every request and cost ~8 % of a sidecar's CPU per request at saturation,
with nothing to inject); routes with a `fault` carry the actual delay/abort as per-route config, which also
enables the filter for that route only (Envoy's route-based filter chain). So faults change with RDS only and
only the routes that inject a fault pay for the filter.
"""
from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.v3 import percent_pb2

from ...api.duration import duration_seconds
from ...api.virtual_service import HTTPFaultInjection, HTTPRoute, Percent
from ..common import duration, pack
from .base import Chain, Feature, ViewContext

NAME = "envoy.filters.http.fault"


def http_filter() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=NAME, typed_config=pack(fault_pb2.HTTPFault()), disabled=True)


def fraction(percentage: Percent | None, percent: int | None = None) -> percent_pb2.FractionalPercent:
    """Istio percentages → a FractionalPercent per million (Istio's precision); unset means 100%."""
    if percentage is not None:
        value = percentage.value
    elif percent is not None:
        value = float(percent)
    else:
        value = 100.0
    return percent_pb2.FractionalPercent(numerator=int(round(value * 10000)),
                                         denominator=percent_pb2.FractionalPercent.MILLION)


def per_route(f: HTTPFaultInjection) -> fault_pb2.HTTPFault:
    out = fault_pb2.HTTPFault()
    if f.delay is not None:
        out.delay.fixed_delay.CopyFrom(duration(duration_seconds(f.delay.fixed_delay)))
        out.delay.percentage.CopyFrom(fraction(f.delay.percentage, f.delay.percent))
    if f.abort is not None:
        if f.abort.http_status is not None:
            out.abort.http_status = f.abort.http_status
        else:
            out.abort.grpc_status = f.abort.grpc_code
        out.abort.percentage.CopyFrom(fraction(f.abort.percentage, f.abort.percent))
    return out


class Fault(Feature):
    name = NAME

    def patch_hcm(self, hcm: hcm_pb2.HttpConnectionManager, at: Chain, ctx: ViewContext) -> None:
        if at.outbound:
            hcm.http_filters.append(http_filter())

    def route_inputs(self, snap, proxy) -> tuple:
        return ()  # per-route config from the VirtualService route only

    def patch_route(self, route: rc.Route, http_route: HTTPRoute | None, at: Chain, ctx: ViewContext) -> None:
        if http_route is not None and http_route.fault is not None:
            route.typed_per_filter_config[NAME].CopyFrom(pack(per_route(http_route.fault)))


FEATURE = Fault()
