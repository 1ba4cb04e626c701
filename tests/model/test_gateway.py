"""Istio's gateway semantics (model/gateway.py): which Gateways select a proxy, which VirtualServices bind to a
server (name, ns/name, mesh), host admission with namespace prefixes and wildcards, match-level gateways."""
from __future__ import annotations

from mizzen.api import load_text
from mizzen.model import ConfigIndex, Proxy
from mizzen.model import gateway as G

GW = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: edge}
spec:
  selector: {istio: ingress}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*/www.example.com", "shop/*.shop.example.com", "./edge.example.com"]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*.example.com"]
    tls: {mode: SIMPLE, credentialName: c}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other, namespace: default}
spec:
  selector: {istio: other}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"""


def vs(name: str, ns: str, hosts: list[str], gateways: list[str] | None, match_gateways: list[str] | None = None) -> str:
    m = f"  - match: [{{uri: {{prefix: /a}}, gateways: {match_gateways}}}]\n    route: [{{destination: {{host: x}}}}]\n" \
        if match_gateways is not None else ""
    g = f"  gateways: {gateways}\n" if gateways is not None else ""
    return f"---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\n" \
           f"spec:\n  hosts: {hosts}\n{g}  http:\n{m}  - route: [{{destination: {{host: x}}}}]\n"


INGRESS = Proxy(id="gw", namespace="edge", labels=(("istio", "ingress"),), kind="gateway")


def index(text: str) -> ConfigIndex:
    return ConfigIndex([r.with_revision(i + 1) for i, r in enumerate(load_text(text).resources)])


def test_servers_of_the_selecting_gateways_by_port() -> None:
    cfg = index(GW)
    ports = G.ports(cfg, INGRESS)
    assert [p.number for p in ports] == [80, 443]
    assert all(gs.ref == "edge/public" for p in ports for gs in p.servers)
    assert G.ports(cfg, Proxy(id="s", namespace="edge", labels=(("istio", "ingress"),))) == ()  # a sidecar: none
    assert [gs.ref for p in G.ports(cfg, Proxy(id="o", labels=(("istio", "other"),), kind="gateway"))
            for gs in p.servers] == ["default/other"]


def test_binding_by_name_ns_name_and_mesh_and_host_admission() -> None:
    cfg = index(GW + vs("a", "default", ["www.example.com"], ["edge/public"])  # ns/name
                + vs("b", "edge", ["edge.example.com"], ["public"])  # name in its own namespace
                + vs("c", "default", ["edge.example.com"], ["edge/public"])  # "./" admits edge's only
                + vs("d", "shop", ["cart.shop.example.com", "cart"], ["mesh", "edge/public"])
                + vs("e", "default", ["www.example.com"], None)  # no gateways: mesh only
                + vs("f", "default", ["www.example.com"], ["public"]))  # default/public: no such Gateway
    http = next(gs for p in G.ports(cfg, INGRESS) for gs in p.servers if gs.port == 80)
    bound = {v.name: hosts for v, hosts in G.bound(cfg, http)}
    assert bound == {"a": ("www.example.com",), "b": ("edge.example.com",), "d": ("cart.shop.example.com",)}
    https = next(gs for p in G.ports(cfg, INGRESS) for gs in p.servers if gs.port == 443)
    assert {v.name for v, _ in G.bound(cfg, https)} == {"a", "b", "c", "d"}


def test_wildcards_take_the_more_specific_name() -> None:
    assert G.host_match("a.example.com", "*.example.com") and G.host_match("*.a.example.com", "*.example.com")
    assert not G.host_match("example.com", "*.example.com") and G.host_match("x", "*")
    cfg = index(GW + vs("w", "default", ["*"], ["edge/public"]))
    https = next(gs for p in G.ports(cfg, INGRESS) for gs in p.servers if gs.port == 443)
    assert dict((v.name, h) for v, h in G.bound(cfg, https)) == {"w": ("*.example.com",)}


def test_match_level_gateways_narrow_routes() -> None:
    cfg = index(GW + vs("m", "default", ["www.example.com"], ["mesh", "edge/public"], match_gateways=["mesh"])
                + vs("n", "edge", ["edge.example.com"], ["public"], match_gateways=["public"]))
    http = next(gs for p in G.ports(cfg, INGRESS) for gs in p.servers if gs.port == 80)
    routes = {v.name: [gr.matches for gr in G.http_routes(cfg, v, http, INGRESS)] for v, _ in G.bound(cfg, http)}
    assert len(routes["m"]) == 1 and routes["m"][0] == (None,)  # the mesh-only route is not the gateway's
    assert len(routes["n"]) == 2 and routes["n"][0][0].uri.prefix == "/a"
    assert G.is_gateway_bound(cfg.by_kind["VirtualService"][0])
