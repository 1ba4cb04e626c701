"""CORS (`VirtualService.http[].corsPolicy`) → `envoy.filters.http.cors`.

Like fault injection: the HCM carries the filter with an empty config and each route with a
`corsPolicy` carries its policy as per-route config (`typed_per_filter_config`), so a policy change is an
RDS-only push. Unlike fault, the filter is only put in the outbound HCMs of proxies that can see a
VirtualService (or delegate) with a `corsPolicy`: proxies without CORS keep their listeners unchanged.

Envoy answers a preflight (OPTIONS with `Origin` and `Access-Control-Request-Method`) itself when the
origin is allowed; otherwise the preflight is forwarded to the app (`unmatchedPreflights: FORWARD`, the
default) or answered 200 without CORS headers (`IGNORE`). On other requests from an allowed origin it
adds `access-control-allow-origin` (and `-credentials`, `-expose-headers`) to the response.
"""
from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2

from ...api.duration import duration_seconds
from ...api.virtual_service import CorsPolicy, HTTPRoute, StringMatch
from ..common import pack
from .base import Chain, Feature, ViewContext

NAME = "envoy.filters.http.cors"


def http_filter() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=NAME, typed_config=pack(cors_pb2.Cors()))


def _origin(m: StringMatch) -> string_pb2.StringMatcher:
    # Envoy treats a matcher that matches "*" (e.g. exact: "*") as "any origin".
    if m.exact is not None:
        return string_pb2.StringMatcher(exact=m.exact)
    if m.prefix is not None:
        return string_pb2.StringMatcher(prefix=m.prefix)
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=m.regex))


def per_route(c: CorsPolicy) -> cors_pb2.CorsPolicy:
    out = cors_pb2.CorsPolicy(
        allow_origin_string_match=[_origin(m) for m in c.origins],
        allow_methods=",".join(c.allow_methods),
        allow_headers=",".join(c.allow_headers),
        expose_headers=",".join(c.expose_headers),
        filter_enabled=base_pb2.RuntimeFractionalPercent(default_value=percent_pb2.FractionalPercent(
            numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED)),
    )
    if c.max_age is not None:
        out.max_age = str(int(duration_seconds(c.max_age)))
    if c.allow_credentials is not None:
        out.allow_credentials.value = c.allow_credentials
    if c.unmatched_preflights == "IGNORE":
        out.forward_not_matching_preflights.value = False
    return out


class Cors(Feature):
    name = NAME

    def patch_hcm(self, hcm: hcm_pb2.HttpConnectionManager, at: Chain, ctx: ViewContext) -> None:
        if at.outbound and ctx.any_route("cors", lambda r: r.cors_policy is not None):
            hcm.http_filters.append(http_filter())

    def route_inputs(self, snap, proxy) -> tuple:
        return ()  # per-route config from the VirtualService route only

    def patch_route(self, route: rc.Route, http_route: HTTPRoute | None, at: Chain, ctx: ViewContext) -> None:
        if http_route is not None and http_route.cors_policy is not None:
            route.typed_per_filter_config[NAME].CopyFrom(pack(per_route(http_route.cors_policy)))


FEATURE = Cors()
