"""The router (`envoy.filters.http.router`): the terminal filter of every HCM, so last in the table."""
from __future__ import annotations

from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from ..common import pack
from .base import Chain, Feature, ViewContext

NAME = "envoy.filters.http.router"


class Router(Feature):
    name = NAME

    def patch_hcm(self, hcm: hcm_pb2.HttpConnectionManager, at: Chain, ctx: ViewContext) -> None:
        hcm.http_filters.append(hcm_pb2.HttpFilter(name=NAME, typed_config=pack(router_pb2.Router())))


FEATURE = Router()
