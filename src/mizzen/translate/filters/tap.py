"""Live tap (`mizzen tap`, the console's Tap page): Envoy's HTTP tap filter with an admin config id, first in
every HCM of a proxy whose agent drives it (its bootstrap has `mizzen-telemetry`). Inert until the agent
attaches an admin `/tap` session (only while someone watches), detached when the session ends; bodies are
never buffered.

Cost (issue 15, docs/benchmarks.md 15:03): even inert, the filter is created for every request (~8 % of a
sidecar's CPU per request at saturation in one measurement). Paying only while tapping is possible in Envoy
1.40 — the HCM filter `disabled: true`, and a virtual host's `typed_per_filter_config[NAME]` =
`FilterConfig{config: <this Tap>, is_optional: true}` enables it (checked; an empty FilterConfig is refused
with "Empty route/virtual host per filter configuration") — but it needs per-proxy tap state in the snapshot
(the views of a tapped workload differ) and a tap that waits for its route push to be ACKed before it starts
reading. Not done yet."""
from __future__ import annotations

from envoy.extensions.filters.http.tap.v3 import tap_pb2  # noqa: F401  (registers the typed config)
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from ...telemetry import envoy as tel
from .base import Chain, Feature, ViewContext

NAME = "envoy.filters.http.tap"


class Tap(Feature):
    name = NAME

    def patch_hcm(self, hcm: hcm_pb2.HttpConnectionManager, at: Chain, ctx: ViewContext) -> None:
        if tel.TELEMETRY_CLUSTER in ctx.proxy.bootstrap_clusters:
            hcm.http_filters.append(json_format.ParseDict(tel.tap_filter(), hcm_pb2.HttpFilter()))


FEATURE = Tap()
