"""Loading and validating resources: every Istio sample loads; bad input names file, document, resource, field."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mizzen.api import InvalidConfig, load_text
from mizzen.api.core import sidecar_enabled
from mizzen.manifests import load_files

from tests.samples import ISTIO_BOOKINFO as SHARED, OWN_BOOKINFO, OWN_NETWORKING, needs_istio_samples

VS = "apiVersion: {v}\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n"
VS_OK = VS + "  http: [{{route: [{{destination: {{host: reviews}}}}]}}]\n"


@needs_istio_samples
@pytest.mark.parametrize("path", sorted((SHARED / "networking").glob("*.yaml")), ids=lambda p: p.name)
def test_istio_samples_load_unchanged(path: Path) -> None:
    res = load_files([str(path)])
    assert res.resources and not res.warnings


@pytest.mark.parametrize("path", sorted(OWN_NETWORKING.glob("*.yaml")), ids=lambda p: p.name)
def test_own_bookinfo_routing_files_load(path: Path) -> None:
    res = load_files([str(path), str(OWN_BOOKINFO / "mesh.yaml")])
    assert res.resources and not res.warnings


@needs_istio_samples
def test_bookinfo_platform_file_loads_services_and_skips_deployments() -> None:
    res = load_files([str(SHARED / "platform" / "kube" / "bookinfo.yaml")])
    kinds = {r.kind for r in res.resources}
    assert kinds == {"Service", "ServiceAccount"}
    svc = {r.name: r for r in res.resources if r.kind == "Service"}
    assert set(svc) == {"details", "ratings", "reviews", "productpage"}
    assert svc["reviews"].spec.ports[0].port == 9080 and svc["reviews"].spec.selector == {"app": "reviews"}
    assert len(res.warnings) == 6 and all("Workload" in w.message for w in res.warnings)


@pytest.mark.parametrize("version", ["networking.istio.io/v1", "networking.istio.io/v1beta1",
                                     "networking.istio.io/v1alpha3"])
def test_all_three_istio_api_versions(version: str) -> None:
    (r,) = load_text(VS_OK.format(v=version)).resources
    assert r.api_version == version and r.namespace == "default"


def test_default_namespace_flag() -> None:
    (r,) = load_text(VS_OK.format(v="networking.istio.io/v1"), default_namespace="shop").resources
    assert r.namespace == "shop"


def _issues(text: str) -> list:
    with pytest.raises(InvalidConfig) as e:
        load_text(text, file="my.yaml")
    return e.value.issues


def test_unknown_field_is_located() -> None:
    (i,) = _issues(VS.format(v="networking.istio.io/v1") + "  htttp: []\n")
    assert (i.file, i.document, i.kind, i.namespace, i.name, i.path) == \
        ("my.yaml", 0, "VirtualService", "default", "reviews", "spec.htttp")
    assert str(i) == "my.yaml (document 1): VirtualService default/reviews field spec.htttp: unknown field"


def test_weights_split_in_proportion_but_not_all_zero() -> None:
    # Istio: weights need not sum to 100 (Envoy splits in proportion); several destinations all at 0 are an error
    (r,) = load_text(VS.format(v="networking.istio.io/v1") + """  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 20
""").resources
    assert [d.weight for d in r.spec.http[0].route] == [90, 20]
    (i,) = _issues(VS.format(v="networking.istio.io/v1") + """  http:
  - route:
    - destination: {host: reviews, subset: v1}
    - destination: {host: reviews, subset: v2}
""")
    assert i.path == "spec.http[0].route" and "total destination weight = 0" in i.message


def test_bad_regex_names_the_field() -> None:
    (i,) = _issues(VS.format(v="networking.istio.io/v1") + """  http:
  - match: [{uri: {regex: "/api/(unclosed"}}]
    route: [{destination: {host: reviews}}]
""")
    assert i.path == "spec.http[0].match[0].uri.regex" and "invalid regex" in i.message


def test_re2_rejections_are_caught() -> None:
    (i,) = _issues(VS.format(v="networking.istio.io/v1") + """  http:
  - match: [{headers: {x: {regex: "(?=look)"}}}]
    route: [{destination: {host: reviews}}]
""")
    assert "RE2" in i.message


def test_unknown_kind_and_every_problem_reported() -> None:
    issues = _issues("apiVersion: x/v1\nkind: Frobnicator\nmetadata: {name: a}\n---\n"
                     + VS.format(v="networking.istio.io/v2"))
    assert "unknown kind 'Frobnicator'" in issues[0].message and issues[0].document == 0
    assert issues[1].path == "apiVersion" and issues[1].document == 1


def test_bad_yaml_names_the_line() -> None:
    (i,) = _issues("kind: [unclosed\n")
    assert "line" in i.message and i.file == "my.yaml"


def test_duplicate_in_one_input() -> None:
    (i,) = _issues(VS_OK.format(v="networking.istio.io/v1") + "---\n" + VS_OK.format(v="networking.istio.io/v1"))
    assert "twice" in i.message


def test_workload_kind() -> None:
    (r,) = load_text("""apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: reviews-v1, labels: {app: reviews, version: v1}}
spec:
  replicas: 2
  command: [python3, reviews.py]
  env: {SERVICE_VERSION: v1}
  ports: [{containerPort: 9080}]
""").resources
    assert r.spec.replicas == 2 and sidecar_enabled(r.spec) and r.spec.ports[0].container_port == 9080
    d = r.to_dict()
    assert d["spec"]["command"] == ["python3", "reviews.py"] and d["metadata"]["labels"]["app"] == "reviews"


def test_sidecar_egress_host_form() -> None:
    (i,) = _issues("""apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: s}
spec:
  egress: [{hosts: [reviews]}]
""")
    assert i.path == "spec.egress[0].hosts[0]" and "namespace/dnsName" in i.message


def test_round_trip_through_dict() -> None:
    from mizzen.api import from_dict

    (r,) = load_files([str(OWN_NETWORKING / "virtual-service-reviews-jason-v2-v3.yaml")]).resources
    again = from_dict(r.to_dict())
    assert again.spec == r.spec and again.metadata == r.metadata


def test_namespace_kind_is_cluster_scoped_and_turns_injection_off() -> None:
    res = load_text(textwrap.dedent("""\
        apiVersion: v1
        kind: Namespace
        metadata: {name: legacy, namespace: whatever, labels: {mizzen.dev/inject: "false"}}
        ---
        apiVersion: mizzen.dev/v1
        kind: Workload
        metadata: {name: old, namespace: legacy}
        spec: {command: ["true"]}
        ---
        apiVersion: mizzen.dev/v1
        kind: Workload
        metadata: {name: pinned, namespace: legacy}
        spec: {command: ["true"], sidecar: true}
        """)).resources
    ns, old, pinned = res
    assert (ns.kind, ns.namespace, ns.name) == ("Namespace", "legacy", "legacy")
    labels = ns.metadata.labels
    assert not sidecar_enabled(old.spec, labels)  # the namespace label
    assert sidecar_enabled(pinned.spec, labels)  # the workload's own field wins
    assert sidecar_enabled(old.spec, {}) and sidecar_enabled(old.spec, None)
