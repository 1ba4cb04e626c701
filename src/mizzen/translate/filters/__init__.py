"""HTTP filters of the HCM chain, one module per feature, registered in a table. Pure.

Each entry builds the filter for the HCM's `http_filters` (placed in table order, before the router);
its per-route config (if any) is built by the same module and attached by `routes.py` under the
filter's name in `typed_per_filter_config`.
"""
from __future__ import annotations

from typing import Callable, Iterable

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from . import cors, fault

# (name, builder, outbound-only, always): outbound-only filters act on the caller's side, as Istio does;
# a filter that is not `always` is added only when the caller asks for it by name (`extra`), e.g. CORS
# only for proxies that can see a VirtualService with a corsPolicy.
HTTP_FILTERS: list[tuple[str, Callable[[], hcm_pb2.HttpFilter], bool, bool]] = [
    (cors.NAME, cors.http_filter, True, False),
    (fault.NAME, fault.http_filter, True, True),
]


def http_filters(outbound: bool, extra: Iterable[str] = ()) -> list[hcm_pb2.HttpFilter]:
    """The filters to put before the router in an HCM."""
    extra = frozenset(extra)
    return [build() for name, build, outbound_only, always in HTTP_FILTERS
            if (outbound or not outbound_only) and (always or name in extra)]
