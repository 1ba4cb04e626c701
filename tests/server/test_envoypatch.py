"""EnvoyPatch: add/merge/remove on generated resources, selected by workload labels; a patch Envoy would
reject is refused at apply time with Envoy's own reason (checked by the real Envoy)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2

from mizzen.api import InvalidConfig, load_text
from mizzen.model import EndpointIndex, Instance, Proxy, Snapshot, diff
from mizzen.model.types import CLUSTER, LISTENER, ROUTE
from mizzen.registry.embedded import EmbeddedRegistry
from mizzen.server.core import ControlPlaneCore
from mizzen.server.patchcheck import envoy_patch_validator
from mizzen.store.sqlite import SqliteStore
from mizzen.translate import Renderer
from tests.envoy_bin import envoy_binary

SVC = """apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: reviews}
"""
PATCH = """---
apiVersion: mizzen.dev/v1
kind: EnvoyPatch
metadata: {name: tweak}
spec:
  workloadSelector: {labels: {app: productpage}}
  patches:
  - applyTo: CLUSTER
    name: "outbound|9080||reviews.default.svc.cluster.local"
    operation: MERGE
    value: {connect_timeout: 0.25s}
  - applyTo: CLUSTER
    operation: ADD
    value: {name: extra, type: STATIC, connect_timeout: 1s}
  - applyTo: ROUTE_CONFIGURATION
    name: "9080"
    operation: MERGE
    value:
      virtual_hosts:
      - name: patched
        domains: [patched.example]
        routes: [{match: {prefix: /}, direct_response: {status: 204}}]
  - applyTo: CLUSTER
    name: BlackHoleCluster
    operation: REMOVE
"""
PP = Proxy(id="pp", labels=(("app", "productpage"),), ports=(9080,))
OTHER = Proxy(id="o", labels=(("app", "other"),))


def snapshot(text: str, instances=()) -> Snapshot:
    return Snapshot.build([r.with_revision(i + 1) for i, r in enumerate(load_text(text).resources)], instances)


def test_merge_add_remove_only_on_selected_proxies() -> None:
    r = Renderer(snapshot(SVC + PATCH))
    view = r.resources_for(PP)
    c = cluster_pb2.Cluster.FromString(view[CLUSTER]["outbound|9080||reviews.default.svc.cluster.local"].payload)
    assert c.connect_timeout.ToMilliseconds() == 250 and c.type == cluster_pb2.Cluster.EDS  # merged, rest kept
    assert "extra" in view[CLUSTER] and "BlackHoleCluster" not in view[CLUSTER]
    rc = route_pb2.RouteConfiguration.FromString(view[ROUTE]["9080"].payload)
    assert [vh.name for vh in rc.virtual_hosts].count("patched") == 1
    other = r.resources_for(OTHER)
    assert "extra" not in other[CLUSTER] and "BlackHoleCluster" in other[CLUSTER]
    assert r.patched(PP).errors == ()


def test_patches_are_not_applied_twice_when_views_are_reused() -> None:
    inst = Instance(id="default.r-0", namespace="default", workload="r", address="10.0.0.1", ports=(9080,),
                    labels=(("app", "reviews"),))
    s1 = snapshot(SVC + PATCH, [inst])
    r1 = Renderer(s1)
    r1.resources_for(PP)
    s2 = s1.with_endpoints(EndpointIndex([replace(inst, address="10.0.0.2")]), 2)
    r2 = Renderer(s2, r1, diff(s1, s2))
    rc = route_pb2.RouteConfiguration.FromString(r2.resources_for(PP)[ROUTE]["9080"].payload)
    assert [vh.name for vh in rc.virtual_hosts].count("patched") == 1
    assert LISTENER in r2.resources_for(PP)


def core(tmp_path: Path) -> ControlPlaneCore:
    reg = EmbeddedRegistry(tmp_path / "r.db")
    return ControlPlaneCore(SqliteStore(tmp_path / "s.db"), reg, [envoy_patch_validator(envoy_binary, reg.list)])


def test_valid_patch_is_accepted(tmp_path: Path) -> None:
    c = core(tmp_path)
    out = c.apply([("p.yaml", SVC + PATCH)])
    assert {a["kind"] for a in out["applied"]} == {"Service", "EnvoyPatch"}


def test_patch_envoy_would_nack_is_refused_with_envoys_reason(tmp_path: Path) -> None:
    c = core(tmp_path)
    c.apply([("svc.yaml", SVC)])
    rev = c.revision
    bad = PATCH.replace("routes: [{match: {prefix: /}, direct_response: {status: 204}}]",
                        "routes: [{match: {safe_regex: {regex: '/api/(unclosed'}}, direct_response: {status: 204}}]")
    with pytest.raises(InvalidConfig) as e:
        c.apply([("bad.yaml", bad)])
    msg = str(e.value)
    assert "EnvoyPatch default/tweak" in msg and "Envoy would reject" in msg and "missing )" in msg, msg
    assert c.revision == rev and c.list("EnvoyPatch") == []


def test_patch_value_that_is_not_the_type_is_refused_with_its_path(tmp_path: Path) -> None:
    c = core(tmp_path)
    with pytest.raises(InvalidConfig) as e:
        c.apply([("bad.yaml", SVC + PATCH.replace("{connect_timeout: 0.25s}", "{no_such_field: 1}"))])
    (issue,) = e.value.issues
    assert issue.path == "spec.patches[0].value" and "no_such_field" in issue.message


DANGLING = """---
apiVersion: mizzen.dev/v1
kind: EnvoyPatch
metadata: {name: dangle}
spec:
  workloadSelector: {labels: {app: productpage}}
  patches:
  - applyTo: CLUSTER
    name: "outbound|9080||reviews.default.svc.cluster.local"
    operation: REMOVE
"""


def test_patch_that_would_dangle_is_refused_at_apply_with_its_field(tmp_path: Path) -> None:
    """Removing the cluster route config 9080 sends to would leave a route pointing at nothing (503 NC for
    every request): refused, naming the patch entry, and nothing is stored."""
    c = core(tmp_path)
    c.apply([("svc.yaml", SVC)])
    with pytest.raises(InvalidConfig) as e:
        c.apply([("bad.yaml", DANGLING)])
    issues = e.value.issues
    assert {(i.kind, i.name, i.path) for i in issues} == {("EnvoyPatch", "dangle", "spec.patches[0]")}, issues
    messages = sorted(i.message for i in issues)
    assert messages[0].startswith("endpoints (EDS) 'outbound|9080||reviews.default.svc.cluster.local' would "
                                  "belong to no cluster"), messages
    assert messages[1].startswith("route config '9080' would send traffic to cluster "
                                  "'outbound|9080||reviews.default.svc.cluster.local', which the proxy's config "
                                  "would not have"), messages
    assert c.list("EnvoyPatch") == []


def test_patch_that_dangles_later_is_skipped_at_render_and_reported() -> None:
    """A patch stored while valid can dangle after another change (here: it is simply rendered against a
    config it never passed the apply check with). The proxy gets its consistent base view instead, the
    other patches still apply, and the renderer reports what it skipped."""
    from mizzen.translate.consistency import dangling

    problems: list[tuple[str, str]] = []
    r = Renderer(snapshot(SVC + PATCH + DANGLING), on_problem=lambda p, m: problems.append((p.id, m)))
    view = r.resources_for(PP)
    assert "outbound|9080||reviews.default.svc.cluster.local" in view[CLUSTER]  # the REMOVE was not applied
    assert "extra" in view[CLUSTER]  # the valid patch was
    assert dangling(view) == frozenset()
    assert problems and all(pid == "pp" and msg.startswith("EnvoyPatch default/dangle spec.patches[0]: ")
                            and msg.endswith("skipped for this proxy") for pid, msg in problems), problems
    n = len(problems)
    assert r.resources_for(PP) is view and len(problems) == n  # reported once per view


def test_patch_removing_a_route_config_in_use_is_refused(tmp_path: Path) -> None:
    """An RDS name without its route config would leave the listener warming (not served at all)."""
    c = core(tmp_path)
    c.apply([("svc.yaml", SVC)])
    bad = DANGLING.replace("applyTo: CLUSTER", "applyTo: ROUTE_CONFIGURATION").replace(
        '"outbound|9080||reviews.default.svc.cluster.local"', '"9080"')
    with pytest.raises(InvalidConfig) as e:
        c.apply([("bad.yaml", bad)])
    (issue,) = e.value.issues
    assert issue.path == "spec.patches[0]" and "listener 'virtualOutbound' would use route config '9080'" \
        in issue.message, issue


SECURED = """---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-get}
spec:
  selector: {matchLabels: {app: productpage}}
  rules: [{to: [{operation: {methods: [GET]}}]}]
"""
EF_OK = """apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: buffer}
spec:
  workloadSelector: {labels: {app: productpage}}
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND, listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager,
            subFilter: {name: envoy.filters.http.router}}}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.buffer
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer,
                       max_request_bytes: 65536}
"""
EF_DANGLING = """apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: drop-reviews}
spec:
  workloadSelector: {labels: {app: productpage}}
  configPatches:
  - applyTo: CLUSTER
    match: {context: SIDECAR_OUTBOUND, cluster: {service: reviews.default.svc.cluster.local, portNumber: 9080}}
    patch: {operation: REMOVE}
"""


def test_envoy_filters_with_mtls_and_rbac_in_the_chain(tmp_path: Path) -> None:
    """With the mesh's certificates (mTLS chains, STRICT) and an RBAC filter in the inbound chain, an
    EnvoyFilter adding an HTTP filter before the router passes the real Envoy's check; one that removes the
    cluster a route sends to would dangle: refused at apply, naming spec.configPatches[0], nothing stored."""
    reg = EmbeddedRegistry(tmp_path / "r.db")
    c = ControlPlaneCore(SqliteStore(tmp_path / "s.db"), reg,
                         [envoy_patch_validator(envoy_binary, reg.list, "cluster.local")])
    c.apply([("mesh.yaml", SVC + SECURED)])
    out = c.apply([("ef.yaml", EF_OK)])
    assert [a["kind"] for a in out["applied"]] == ["EnvoyFilter"]
    rev = c.store.revision
    with pytest.raises(InvalidConfig) as e:
        c.apply([("bad.yaml", EF_DANGLING)])
    issues = e.value.issues
    assert {(i.kind, i.name, i.path) for i in issues} == {("EnvoyFilter", "drop-reviews", "spec.configPatches[0]")}, \
        issues
    assert any("would send traffic to cluster 'outbound|9080||reviews.default.svc.cluster.local'" in i.message
               for i in issues), issues
    assert all(i.file == "bad.yaml" for i in issues), issues  # the file, not <apply>
    assert c.store.revision == rev and len(c.list("EnvoyFilter")) == 1
