"""The HTTP feature table: a feature added as one module + one table line reaches the HCM (before the
router), virtual hosts, routes and clusters, and Envoy accepts the result; a proxy it does not apply to keeps
byte-identical listeners."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from mizzen.api import load_text
from mizzen.model import Proxy, Snapshot
from mizzen.model.types import CLUSTER, LISTENER, ROUTE
from mizzen.translate import Renderer
from mizzen.translate import filters
from mizzen.translate.common import pack
from mizzen.translate.filters import Chain, Feature, ViewContext
from mizzen.translate.static import static_bootstrap
from tests.envoy_bin import envoy_binary

MESH = """apiVersion: v1
kind: Service
metadata: {name: productpage}
spec: {ports: [{port: 9080, name: http}], selector: {app: productpage}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /slow}}]
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
"""
BUFFERED = Proxy(id="b", labels=(("app", "productpage"), ("buffer", "on")), ports=(9080,))
PLAIN = Proxy(id="p", labels=(("app", "productpage"),), ports=(9080,))


class Buffer(Feature):
    """A feature as another helper would add one: only for proxies labelled buffer=on."""

    name = "envoy.filters.http.buffer"

    def _on(self, ctx: ViewContext) -> bool:
        return ctx.proxy.label_dict.get("buffer") == "on"

    def patch_hcm(self, hcm, at: Chain, ctx: ViewContext) -> None:
        if self._on(ctx) and at.outbound:
            hcm.http_filters.append(hcm_pb2.HttpFilter(name=self.name, typed_config=pack(
                buffer_pb2.Buffer(max_request_bytes={"value": 65536}))))

    def patch_virtual_host(self, vh, svc, at: Chain, ctx: ViewContext) -> None:
        if self._on(ctx) and svc is not None:
            vh.request_headers_to_remove.append("x-buffer-debug")

    def patch_route(self, route, http_route, at: Chain, ctx: ViewContext) -> None:
        if self._on(ctx) and http_route is not None and route.match.prefix != "/slow":
            route.typed_per_filter_config[self.name].CopyFrom(pack(buffer_pb2.BufferPerRoute(disabled=True)))

    def clusters(self, ctx: ViewContext):
        if self._on(ctx):
            yield cluster_pb2.Cluster(name="buffer-sidecar", type=cluster_pb2.Cluster.STATIC,
                                      connect_timeout={"seconds": 1})


def hcms(view) -> list[hcm_pb2.HttpConnectionManager]:
    out = []
    for r in view[LISTENER].values():
        for fc in listener_pb2.Listener.FromString(r.payload).filter_chains:
            for f in fc.filters:
                if f.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                    m = hcm_pb2.HttpConnectionManager()
                    f.typed_config.Unpack(m)
                    out.append((fc.name, m))
    return out


def test_a_feature_is_one_module_and_one_table_line(monkeypatch, tmp_path: Path) -> None:
    snap = Snapshot.build([r.with_revision(i + 1) for i, r in enumerate(load_text(MESH).resources)], [])
    before = Renderer(snap).resources_for(PLAIN)
    table = list(filters.FEATURES)
    monkeypatch.setattr(filters, "FEATURES", tuple(table[:-1] + [Buffer()] + table[-1:]))  # before the router
    r = Renderer(snap)
    plain, buffered = r.resources_for(PLAIN), r.resources_for(BUFFERED)
    assert plain[LISTENER] == before[LISTENER] and plain[ROUTE] == before[ROUTE]  # not used: byte-identical
    names = {chain: [f.name for f in m.http_filters] for chain, m in hcms(buffered)}
    assert names["0.0.0.0_9080"] == ["envoy.filters.http.fault", "envoy.filters.http.buffer",
                                     "envoy.filters.http.router"]
    assert names["inbound|9080||"] == ["envoy.filters.http.router"]  # the feature chose outbound only
    vh = {v.name: v for v in route_pb2.RouteConfiguration.FromString(buffered[ROUTE]["9080"].payload)
          .virtual_hosts}["reviews.default.svc.cluster.local:9080"]
    assert list(vh.request_headers_to_remove) == ["x-buffer-debug"]
    assert [("envoy.filters.http.buffer" in rt.typed_per_filter_config) for rt in vh.routes] == [False, True]
    assert "buffer-sidecar" in buffered[CLUSTER] and "buffer-sidecar" not in plain[CLUSTER]
    boot = tmp_path / "b.json"
    boot.write_text(json.dumps(static_bootstrap(buffered)))
    p = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(boot), "--log-level", "error"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
