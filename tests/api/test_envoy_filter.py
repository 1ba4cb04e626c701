"""Istio EnvoyFilter and ProxyConfig: accepted unchanged with Istio's rules; EnvoyFilter patches applied to a
rendered view the way Istio applies them, and the patched config accepted by the real Envoy."""
from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from google.protobuf import json_format

from mizzen.api import InvalidConfig, load_text
from mizzen.model import Instance, Proxy, Snapshot
from mizzen.model.types import CLUSTER, LISTENER, ROUTE
from mizzen.translate import Renderer
from mizzen.translate.envoyfilter import apply_envoy_filters, envoy_filters_for
from mizzen.translate.renderer import render
from mizzen.translate.static import static_bootstrap
from tests.envoy_bin import envoy_binary

EF = "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: ef, namespace: default}\nspec:\n"


def ef(body: str):
    return load_text(EF + textwrap.indent(textwrap.dedent(body), "  "))


def errors(body: str) -> list[str]:
    with pytest.raises(InvalidConfig) as e:
        ef(body)
    return [f"{i.path}: {i.message}" for i in e.value.issues]


@pytest.mark.parametrize("body,expect", [
    ("configPatches: [{patch: {operation: MERGE, value: {a: 1}}}]", "configPatches[0].applyTo: missing applyTo"),
    ("configPatches: [{applyTo: CLUSTER}]", "configPatches[0].patch: missing patch"),
    ("configPatches: [{applyTo: CLUSTER, patch: {value: {a: 1}}}]", "patch.operation: missing patch operation"),
    ("configPatches: [{applyTo: CLUSTER, patch: {operation: MERGE}}]", "missing patch value for non-remove"),
    ("configPatches: [{applyTo: CLUSTER, match: {listener: {portNumber: 80}}, patch: {operation: REMOVE}}]",
     "cluster class objects cannot have non cluster match"),
    ("configPatches: [{applyTo: HTTP_FILTER, match: {cluster: {portNumber: 80}}, patch: {operation: REMOVE}}]",
     "listener class objects cannot have non listener match"),
    ("configPatches: [{applyTo: VIRTUAL_HOST, match: {cluster: {portNumber: 80}}, patch: {operation: REMOVE}}]",
     "http route class objects"),
    ("configPatches: [{applyTo: NETWORK_FILTER, match: {listener: {filterChain: {filter: {subFilter: {name: x}}}}}, "
     "patch: {operation: REMOVE}}]", "filter match has no name to match on"),
    ("configPatches: [{applyTo: NETWORK_FILTER, match: {listener: {filterChain: {filter: {name: a, subFilter: "
     "{name: x}}}}}, patch: {operation: REMOVE}}]", "subfilter match can be used with applyTo HTTP_FILTER only"),
    ("configPatches: [{applyTo: HTTP_FILTER, match: {listener: {filterChain: {filter: {name: envoy.filters.network."
     "tcp_proxy, subFilter: {name: x}}}}}, patch: {operation: REMOVE}}]", "requires filter match with"),
    ("configPatches: [{applyTo: HTTP_FILTER, match: {context: SIDECAR_INBOUND, waypoint: {portNumber: 80}}, "
     "patch: {operation: REMOVE}}]", "only support waypointMatch when context is WAYPOINT"),
    ("configPatches: [{applyTo: HTTP_FILTER, match: {context: WAYPOINT, waypoint: {portNumber: 65536}}}]",
     "port must be between 1-65535"),
    ("configPatches: [{applyTo: CLUSTER, match: {proxy: {proxyVersion: '1.(2'}}, patch: {operation: REMOVE}}]",
     "invalid regex for proxy version"),
    ("workloadSelector: {labels: {app: a}}\ntargetRefs: [{kind: Service, name: a}]\nconfigPatches: []",
     "only one of targetRefs or workloadSelector"),
    ("configPatches: [{applyTo: CLUSTER, patch: {operation: SOMETIMES, value: {}}}]", "patch.operation"),
])
def test_envoy_filter_rules(body: str, expect: str) -> None:
    assert any(expect in e for e in errors(body)), errors(body)


def test_proxy_config() -> None:
    pc = "apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata: {name: p}\nspec:\n"
    (r,) = load_text(pc + "  concurrency: 2\n  selector: {matchLabels: {app: a}}\n  environmentVariables: {A: b}\n"
                          "  image: {imageType: distroless}\n").resources
    assert r.spec.concurrency == 2 and r.spec.environment_variables == {"A": "b"}
    for body, expect in (("  concurrency: -1\n", "greater than or equal to 0"),
                         ("  selector: {matchLabels: {'': bar}}\n", "empty key"),
                         ("  environmentVariables: {'A=B': c}\n", "invalid environment variable")):
        with pytest.raises(InvalidConfig) as e:
            load_text(pc + body)
        assert expect in str(e.value), e.value


# ------------------------------------------------------------------ translation

MESH = """
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {ports: [{port: 5432, name: tcp-db}], selector: {app: db}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: api
    match: [{uri: {prefix: /api}}]
    route: [{destination: {host: reviews}}]
  - name: old
    match: [{uri: {prefix: /old}}]
    redirect: {uri: /new}
  - name: rest
    route: [{destination: {host: reviews}}]
"""
PROXY = Proxy(id="p", namespace="default", workload="reviews", labels=(("app", "reviews"),), ports=(9080,))
INSTANCES = [Instance(id="default.reviews-0", namespace="default", workload="reviews", address="10.244.0.2",
                      ports=(9080,), labels=(("app", "reviews"),))]


def patched(filters: str) -> tuple[dict, dict, list]:
    resources = load_text(MESH + "---\n" + filters).resources
    snap = Snapshot.build(resources, INSTANCES)
    base = Renderer(Snapshot.build([r for r in resources if r.kind != "EnvoyFilter"], INSTANCES)).resources_for(PROXY)
    out, errs = apply_envoy_filters(base, envoy_filters_for(snap, PROXY), render)
    return base, out, errs


def as_dict(r) -> dict:
    return json_format.MessageToDict(r.message, preserving_proto_field_name=True)


def http_filters(listener: dict, port: int | None = None) -> list[list[str]]:
    out = []
    for fc in listener.get("filter_chains", []):
        if port is not None and fc.get("filter_chain_match", {}).get("destination_port") != port:
            continue
        for f in fc.get("filters", []):
            tc = f.get("typed_config", {})
            if "http_filters" in tc:
                out.append([h["name"] for h in tc["http_filters"]])
    return out


def envoy_accepts(view: dict, tmp_path: Path) -> None:
    boot = tmp_path / "b.json"
    boot.write_text(json.dumps(static_bootstrap(view)))
    p = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(boot), "--log-level", "critical"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, (p.stdout + p.stderr)[-1500:]


LUA = """
        name: envoy.filters.http.lua
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          inlineCode: "function envoy_on_request(h) h:headers():add('x-lua', '1') end"
"""


def test_http_filter_insert_before_router_on_inbound_only(tmp_path: Path) -> None:
    base, out, errs = patched(EF + textwrap.indent(textwrap.dedent("""
        workloadSelector: {labels: {app: reviews}}
        configPatches:
        - applyTo: HTTP_FILTER
          match:
            context: SIDECAR_INBOUND
            listener:
              portNumber: 9080
              filterChain:
                filter:
                  name: envoy.filters.network.http_connection_manager
                  subFilter: {name: envoy.filters.http.router}
          patch:
            operation: INSERT_BEFORE
            value:""") + LUA, "  "))
    assert errs == []
    inbound = as_dict(out[LISTENER]["virtualInbound"])
    assert http_filters(inbound, 9080) == [["envoy.filters.http.lua", "envoy.filters.http.router"]]
    assert out[LISTENER]["virtualOutbound"] is base[LISTENER]["virtualOutbound"]  # outbound untouched
    envoy_accepts(out, tmp_path)


def test_http_filter_add_keeps_the_router_last_and_remove_takes_it_out(tmp_path: Path) -> None:
    _, out, errs = patched(EF + textwrap.indent(textwrap.dedent("""
        configPatches:
        - applyTo: HTTP_FILTER
          match: {context: SIDECAR_OUTBOUND}
          patch:
            operation: ADD
            value:""") + LUA, "  "))
    assert errs == []
    for chain in http_filters(as_dict(out[LISTENER]["virtualOutbound"])):
        assert chain[-2:] == ["envoy.filters.http.lua", "envoy.filters.http.router"]
    envoy_accepts(out, tmp_path)
    _, out2, _ = patched(EF + "  configPatches:\n  - applyTo: HTTP_FILTER\n    match: {context: SIDECAR_OUTBOUND, "
                         "listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager, "
                         "subFilter: {name: envoy.filters.http.fault}}}}}\n    patch: {operation: REMOVE}\n")
    for chain in http_filters(as_dict(out2[LISTENER]["virtualOutbound"])):
        assert "envoy.filters.http.fault" not in chain


def test_routes_vhosts_and_clusters(tmp_path: Path) -> None:
    base, out, errs = patched(EF + textwrap.indent(textwrap.dedent("""
        configPatches:
        - applyTo: VIRTUAL_HOST
          match: {context: SIDECAR_OUTBOUND, routeConfiguration: {portNumber: 9080,
                  vhost: {name: "reviews.default.svc.cluster.local:9080"}}}
          patch: {operation: MERGE, value: {response_headers_to_add: [{header: {key: x-vh, value: "1"}}]}}
        - applyTo: HTTP_ROUTE
          match: {context: SIDECAR_OUTBOUND, routeConfiguration: {vhost: {route: {action: REDIRECT}}}}
          patch: {operation: REMOVE}
        - applyTo: HTTP_ROUTE
          match: {context: SIDECAR_OUTBOUND, routeConfiguration: {vhost: {route: {name: api}}}}
          patch:
            operation: INSERT_BEFORE
            value: {name: health, match: {path: /healthz}, direct_response: {status: 200}}
        - applyTo: CLUSTER
          match: {context: SIDECAR_OUTBOUND, cluster: {service: reviews.default.svc.cluster.local, portNumber: 9080}}
          patch: {operation: MERGE, value: {connect_timeout: 2.5s}}
        - applyTo: CLUSTER
          match: {context: SIDECAR_OUTBOUND}
          patch:
            operation: ADD
            value: {name: extra, type: STATIC, connect_timeout: 1s,
                    load_assignment: {cluster_name: extra, endpoints: [{lb_endpoints: [{endpoint: {address:
                    {socket_address: {address: 127.0.0.1, port_value: 9}}}}]}]}}
        """), "  "))
    assert errs == []
    vh = next(v for v in as_dict(out[ROUTE]["9080"])["virtual_hosts"] if v["name"].startswith("reviews."))
    assert vh["response_headers_to_add"][0]["header"]["key"] == "x-vh"
    assert [r["name"] for r in vh["routes"]] == ["health", "api", "rest"]
    assert as_dict(out[CLUSTER]["outbound|9080||reviews.default.svc.cluster.local"])["connect_timeout"] == "2.500s"
    assert "extra" in out[CLUSTER] and "extra" not in base[CLUSTER]
    envoy_accepts(out, tmp_path)


def test_selection_order_and_bad_values() -> None:
    _, out, errs = patched(EF.replace("name: ef,", "name: other,") + textwrap.indent(textwrap.dedent("""
        workloadSelector: {labels: {app: not-this-one}}
        configPatches:
        - applyTo: CLUSTER
          patch: {operation: REMOVE}
        ---
        """), "  ").replace("  ---", "---") + EF + textwrap.indent(textwrap.dedent("""
        configPatches:
        - applyTo: CLUSTER
          match: {cluster: {name: "outbound|9080||reviews.default.svc.cluster.local"}}
          patch: {operation: MERGE, value: {no_such_field: 1}}
        """), "  "))
    assert "outbound|9080||reviews.default.svc.cluster.local" in out[CLUSTER]  # the unselected REMOVE did nothing
    (e,) = errs
    assert e.path == "spec.configPatches[0]" and "no_such_field" in e.message


def test_a_patch_that_would_leave_the_view_dangling_is_skipped() -> None:
    # removing the cluster the routes send to, or the route config a listener waits for, is refused per patch
    _, out, errs = patched(EF + textwrap.indent(textwrap.dedent("""
        configPatches:
        - applyTo: ROUTE_CONFIGURATION
          match: {routeConfiguration: {portNumber: 9080}}
          patch: {operation: REMOVE}
        - applyTo: CLUSTER
          match: {cluster: {name: "outbound|9080||reviews.default.svc.cluster.local"}}
          patch: {operation: MERGE, value: {connect_timeout: 3s}}
        """), "  "))
    assert "9080" in out[ROUTE]
    assert as_dict(out[CLUSTER]["outbound|9080||reviews.default.svc.cluster.local"])["connect_timeout"] == "3s"
    (e,) = errs
    assert e.path == "spec.configPatches[0]" and "route config '9080'" in e.message
    assert str(e).startswith("EnvoyFilter default/ef spec.configPatches[0]: ")


def test_gateway_context_patches_gateways_only() -> None:
    """context GATEWAY applies to gateway proxies (docs/gateway.md), SIDECAR_* ones do not; sidecars the reverse."""
    gw_doc = """---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
"""
    ef = """---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: timeouts, namespace: istio-system}
spec:
  configPatches:
  - applyTo: CLUSTER
    match: {context: GATEWAY, cluster: {service: reviews.default.svc.cluster.local}}
    patch: {operation: MERGE, value: {connect_timeout: 7s}}
  - applyTo: CLUSTER
    match: {context: SIDECAR_OUTBOUND, cluster: {service: reviews.default.svc.cluster.local}}
    patch: {operation: MERGE, value: {connect_timeout: 3s}}
"""
    gateway = Proxy(id="g", namespace="istio-system", workload="ingress", labels=(("istio", "ingressgateway"),),
                    kind="gateway")
    snap = Snapshot.build(load_text(MESH + gw_doc + ef).resources, INSTANCES)
    r = Renderer(snap)
    name = "outbound|9080||reviews.default.svc.cluster.local"
    assert as_dict(r.resources_for(gateway)[CLUSTER][name])["connect_timeout"] == "7s"
    assert as_dict(r.resources_for(PROXY)[CLUSTER][name])["connect_timeout"] == "3s"


def test_gateway_route_configuration_matches_by_gateway_and_port() -> None:
    """routeConfiguration `gateway: ns/name` and `portNumber` select a gateway's HTTPS route config."""
    from mizzen.translate.envoyfilter import _rc_matches
    from mizzen.api.envoy_filter import EnvoyFilterSpec

    spec = EnvoyFilterSpec.model_validate({"configPatches": [{
        "applyTo": "ROUTE_CONFIGURATION", "match": {"context": "GATEWAY", "routeConfiguration": {
            "gateway": "istio-system/public", "portNumber": 8443}},
        "patch": {"operation": "MERGE", "value": {}}}]})
    rm = spec.config_patches[0].match.route_configuration
    assert _rc_matches(rm, {"name": "https.8443.https.public.istio-system"}, False)
    assert not _rc_matches(rm, {"name": "https.8443.https.other.istio-system"}, False)
    assert not _rc_matches(rm, {"name": "https.9443.https.public.istio-system"}, False)
