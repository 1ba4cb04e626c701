"""Where Istio fidelity meets the control plane: an EnvoyFilter is checked by the real Envoy before it is
accepted (as an EnvoyPatch is) and then applied to the proxies it selects; validator errors name the file and
document; a stored document that no longer loads does not keep the store from opening; a render failure of
one resource leaves the rest of the view; translated fields (unix socket endpoints, warmup, redirect
prefixRewrite) reach Envoy's config, which the real Envoy accepts."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import pytest
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from google.protobuf import json_format

from mizzen.api import InvalidConfig, load_text
from mizzen.api.base import lenient
from mizzen.model import Instance, Proxy, Snapshot
from mizzen.model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from mizzen.registry.embedded import EmbeddedRegistry
from mizzen.server.core import ControlPlaneCore
from mizzen.server.patchcheck import envoy_patch_validator
from mizzen.store.sqlite import SqliteStore
from mizzen.translate import Renderer
from mizzen.translate.static import static_bootstrap
from tests.envoy_bin import envoy_binary

SVC = """
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: productpage, labels: {app: productpage}}
spec: {command: ["true"], ports: [{containerPort: 9080}]}
"""
EF = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua}
spec:
  workloadSelector: {labels: {app: productpage}}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_OUTBOUND
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter: {name: envoy.filters.http.router}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.lua
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          inline_code: "%s"
"""


@pytest.fixture
def core(tmp_path: Path):
    store = SqliteStore(tmp_path / "store.db")
    registry = EmbeddedRegistry(tmp_path / "registry.db")
    yield ControlPlaneCore(store, registry, validators=[envoy_patch_validator(envoy_binary, registry.list)])
    store.close()


def test_envoy_filter_is_checked_by_envoy_before_it_is_accepted(core: ControlPlaneCore) -> None:
    core.apply([("svc.yaml", SVC)])
    good = EF % "function envoy_on_request(h) h:headers():add('x-lua', '1') end"
    out = core.apply([("ef.yaml", good)])
    assert out["applied"] == [{"kind": "EnvoyFilter", "namespace": "default", "name": "lua", "action": "created"}]
    bad = EF % "function envoy_on_request(h) this is not lua"
    with pytest.raises(InvalidConfig) as e:
        core.apply([("ef.yaml", bad)])
    (issue,) = e.value.issues
    # named by file and document, not `<apply>`; Envoy's own reason
    assert (issue.file, issue.document, issue.kind, issue.name) == ("ef.yaml", 0, "EnvoyFilter", "lua")
    assert issue.path == "spec.configPatches" and "Envoy would reject" in issue.message
    stored = core.store.get(next(r.key for r in core.store.list() if r.kind == "EnvoyFilter"))
    assert "add('x-lua', '1')" in json.dumps(stored.to_dict())  # the previous version stays in force
    # and the accepted one is applied to the proxy it selects
    snap = Snapshot.build(core.store.list(), [])
    view = Renderer(snap).resources_for(Proxy(id="p", namespace="default", workload="productpage",
                                              labels=(("app", "productpage"),), ports=(9080,)))
    assert "envoy.filters.http.lua" in json.dumps(json_format.MessageToDict(view[LISTENER]["virtualOutbound"].message))


def test_dry_run_runs_the_envoy_check_and_stores_nothing(core: ControlPlaneCore) -> None:
    core.apply([("svc.yaml", SVC)])
    rev = core.store.revision
    with pytest.raises(InvalidConfig):
        core.apply([("ef.yaml", EF % "not lua")], dry_run=True)
    out = core.apply([("ef.yaml", EF % "function envoy_on_request(h) end")], dry_run=True)
    assert out["dryRun"] and out["applied"][0]["action"] == "created" and core.store.revision == rev


def test_a_stored_document_that_no_longer_loads_is_set_aside(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.apply(load_text(SVC).resources)
    store.close()
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("UPDATE resources SET json = ? WHERE kind = 'Service'",
               (json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews",
                                                                                "namespace": "default"},
                            "spec": {"ports": [{"port": -1}]}}),))
    db.commit()
    db.close()
    again = SqliteStore(tmp_path / "s.db")  # opens: the control plane starts with everything else
    try:
        assert [r.kind for r in again.list()] == ["Workload"]
        (issue,) = again.load_issues
        assert issue.kind == "Service" and "no longer loads" in issue.message
        again.delete([next(iter(again.quarantined))])  # and it can be deleted
        assert not again.quarantined
    finally:
        again.close()


def test_a_render_failure_leaves_the_rest_of_the_view() -> None:
    text = SVC + textwrap.dedent("""
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: ratings}
        spec: {ports: [{port: 8080, name: http}], selector: {app: ratings}}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http: [{match: [{uri: {}}], route: [{destination: {host: reviews}}]}]
        """)
    with lenient():  # a document the validators would refuse (an empty uri match), as an older version stored
        resources = load_text(text).resources
    problems: list[str] = []
    renderer = Renderer(Snapshot.build(resources, []), on_problem=lambda p, m: problems.append(m))
    view = renderer.resources_for(Proxy(id="p", namespace="default"))
    assert RouteConfiguration.FromString(view[ROUTE]["8080"].payload).virtual_hosts
    # port 9080's routes are empty (its listener does not wait for them); everything else stays
    assert not RouteConfiguration.FromString(view[ROUTE]["9080"].payload).virtual_hosts
    assert "outbound|9080||reviews.default.svc.cluster.local" in view[CLUSTER]
    assert [w for w, _ in renderer.render_errors] == ["route configuration 9080"]
    assert problems and problems[0].startswith("route configuration 9080 could not be rendered")


def test_translated_fields_reach_envoy(tmp_path: Path) -> None:
    text = textwrap.dedent("""
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: sock}
        spec:
          hosts: [local.sock]
          ports: [{number: 80, name: http, protocol: HTTP}]
          resolution: STATIC
          location: MESH_INTERNAL
          endpoints: [{address: "unix:///var/run/app.sock"}]
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews}
        spec: {host: reviews, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 30s}}}}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - match: [{uri: {prefix: /old}}]
            redirect: {prefixRewrite: /new}
          - route: [{destination: {host: reviews}}]
        """)
    resources = load_text(SVC + "---\n" + text).resources
    snap = Snapshot.build(resources, [Instance(id="default.r", namespace="default", workload="reviews",
                                               address="10.244.0.2", ports=(9080,), labels=(("app", "reviews"),))])
    view = Renderer(snap).resources_for(Proxy(id="p", namespace="default"))
    dump = {t: {n: json_format.MessageToDict(r.message) for n, r in view[t].items()} for t in view}
    eds = json.dumps(dump[ENDPOINT])
    assert '"pipe": {"path": "/var/run/app.sock"}' in eds
    c = dump[CLUSTER]["outbound|9080||reviews.default.svc.cluster.local"]
    assert c["roundRobinLbConfig"]["slowStartConfig"]["slowStartWindow"] == "30s"
    routes = json.dumps(dump[ROUTE]["9080"])
    assert '"prefixRewrite": "/new"' in routes
    boot = tmp_path / "b.json"
    boot.write_text(json.dumps(static_bootstrap(view)))
    p = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(boot), "--log-level", "critical"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, (p.stdout + p.stderr)[-1500:]


def test_regexes_envoy_takes_with_istios_re2_limit(tmp_path: Path) -> None:
    """A plain regex whose RE2 program is over Envoy's default limit (100) passes validation and Envoy, as in
    Istio, because the bootstrap raises the limit as Istio's does (32768)."""
    vs = textwrap.dedent("""
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - match: [{uri: {regex: '^/api/v[0-9]+/users/[a-z0-9-]{1,64}$'}}]
            route: [{destination: {host: reviews}}]
        """)
    view = Renderer(Snapshot.build(load_text(SVC + vs).resources, [])).resources_for(Proxy(id="p", namespace="default"))
    boot = tmp_path / "b.json"
    boot.write_text(json.dumps(static_bootstrap(view)))
    p = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(boot), "--log-level", "critical"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, (p.stdout + p.stderr)[-1500:]


def test_export_to_decides_which_proxies_see_a_service() -> None:
    text = textwrap.dedent("""
        apiVersion: v1
        kind: Service
        metadata: {name: private, namespace: shop, annotations: {networking.istio.io/exportTo: "."}}
        spec: {ports: [{port: 80, name: http}], selector: {app: p}}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: partner, namespace: shop}
        spec: {hosts: [api.partner.com], ports: [{number: 443, name: tls, protocol: TLS}], resolution: DNS,
               exportTo: [shop, billing]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: public, namespace: shop}
        spec: {ports: [{port: 80, name: http}], selector: {app: q}}
        """)
    snap = Snapshot.build(load_text(text).resources, [])

    def seen(ns: str) -> set[str]:
        return {s.hostname for s in snap.visible_services(Proxy(id=f"p-{ns}", namespace=ns))}

    assert seen("shop") == {"private.shop.svc.cluster.local", "api.partner.com", "public.shop.svc.cluster.local"}
    assert seen("billing") == {"api.partner.com", "public.shop.svc.cluster.local"}
    assert seen("default") == {"public.shop.svc.cluster.local"}
