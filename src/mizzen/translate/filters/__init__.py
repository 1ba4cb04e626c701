"""HTTP filters of the HCM chain, one module per feature, registered in a table. Pure.

Each entry builds the filter for the HCM's `http_filters` (placed in table order, before the router);
its per-route config (if any) is built by the same module and attached by `routes.py` under the
filter's name in `typed_per_filter_config`.
"""
from __future__ import annotations

from typing import Callable

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from . import fault

# (name, builder, outbound-only): outbound-only filters act on the caller's side, as Istio does.
HTTP_FILTERS: list[tuple[str, Callable[[], hcm_pb2.HttpFilter], bool]] = [
    (fault.NAME, fault.http_filter, True),
]


def http_filters(outbound: bool) -> list[hcm_pb2.HttpFilter]:
    """The filters to put before the router in an HCM."""
    return [build() for _, build, outbound_only in HTTP_FILTERS if outbound or not outbound_only]
