"""`mizzen analyze`: one test per analyzer, written from what it means; golden outputs of whole files
(tests/analyze/golden/<case>.yaml → <case>.txt, regenerate with --update-golden); the CLI's output formats,
exit status (istioctl's 79), thresholds, and a broken document that does not hide the others."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from mizzen.analyze import analyze
from mizzen.analyze.inputs import read_for_analysis, registered_workloads
from tests.samples import ISTIO_BOOKINFO as SHARED, OWN_BOOKINFO, OWN_NETWORKING, needs_istio_samples

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"


def run(text: str) -> list[tuple[str, str, str]]:
    resources, workloads, msgs = read_for_analysis([("in.yaml", textwrap.dedent(text))])
    return [(m.code, m.resource, m.path) for m in [*msgs, *analyze(resources, workloads)]
            if not m.code.startswith("MZ0110")]


def codes(text: str) -> set[tuple[str, str]]:
    return {(c, r) for c, r, _ in run(text)}


SVC = """
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}
"""


def vs(name: str, spec: str, ns: str = "default") -> str:
    return (f"---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, "
            f"namespace: {ns}}}\nspec:\n" + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n")


# ------------------------------------------------------------------ VirtualService

def test_ist0101_destination_host_wildcards_and_ports() -> None:
    se = ("---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: eu}\nspec: {hosts: "
          "['*.eu.example.com'], ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: http2, "
          "protocol: HTTP2}]}\n")
    found = run(SVC + se + vs("a", """
        hosts: [reviews]
        http:
        - route: [{destination: {host: ratings}}]
          mirror: {host: nowhere}
        - route: [{destination: {host: reviews, port: {number: 1234}}}]
        - route: [{destination: {host: reviews.eu.example.com, port: {number: 80}}}]
        - route: [{destination: {host: reviews.eu.example.com}}]
        """))
    assert ("IST0101", "VirtualService default/a", "spec.http[0].route[0].destination.host") in found
    assert ("IST0101", "VirtualService default/a", "spec.http[0].mirror.host") in found
    assert ("IST0101", "VirtualService default/a", "spec.http[1].route[0].destination.port.number") in found
    # a wildcard ServiceEntry covers reviews.eu.example.com; without a port it is ambiguous (two ports)
    assert not any(p.startswith("spec.http[2]") for c, _, p in found if c in ("IST0101", "IST0112"))
    assert ("IST0112", "VirtualService default/a", "spec.http[3].route[0].destination") in found


def test_ist0101_exported_only_to_its_namespace() -> None:
    svc = SVC.replace("metadata: {name: reviews}", "metadata: {name: reviews, namespace: shop, annotations: "
                                                   "{networking.istio.io/exportTo: '.'}}")
    found = codes(svc + vs("a", "hosts: [x]\nhttp: [{route: [{destination: {host: reviews.shop.svc.cluster.local}}]}]")
                  + vs("b", "hosts: [y]\nhttp: [{route: [{destination: {host: reviews}}]}]", ns="shop"))
    assert ("IST0101", "VirtualService default/a") in found and ("IST0101", "VirtualService shop/b") not in found


def test_ist0101_subset() -> None:
    dr = ("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec: {host: reviews, "
          "subsets: [{name: v1, labels: {version: v1}}]}\n")
    found = run(SVC + dr + vs("a", "hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews, subset: v1}, "
                                   "weight: 50}, {destination: {host: reviews, subset: v9}, weight: 50}]}]"))
    assert [f for f in found if f[0] == "IST0101"] == [
        ("IST0101", "VirtualService default/a", "spec.http[0].route[1].destination.subset")]


def test_ist0109_reported_on_every_virtual_service_of_the_host() -> None:
    found = codes(SVC + vs("a", "hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews}}]}]")
                  + vs("b", "hosts: [reviews.default.svc.cluster.local]\nhttp: [{route: [{destination: {host: reviews}}]}]")
                  + vs("c", "hosts: [reviews]\nexportTo: [other]\nhttp: [{route: [{destination: {host: reviews}}]}]"))
    # c, exported to namespace other only, still conflicts there with a and b (exported everywhere)
    assert {c for c in found if c[0] == "IST0109"} == {("IST0109", "VirtualService default/a"),
                                                       ("IST0109", "VirtualService default/b"),
                                                       ("IST0109", "VirtualService default/c")}
    found = codes(SVC + vs("a", "hosts: [reviews]\nexportTo: [x]\nhttp: [{route: [{destination: {host: reviews}}]}]")
                  + vs("b", "hosts: [reviews]\nexportTo: [y]\nhttp: [{route: [{destination: {host: reviews}}]}]"))
    assert not any(c == "IST0109" for c, _ in found)  # visible in different namespaces: no conflict


def test_ist0130_ist0131_unreachable_and_ineffective() -> None:
    found = run(SVC + vs("a", """
        hosts: [reviews]
        http:
        - name: first
          match: [{name: m1, uri: {prefix: /api}}, {uri: {exact: /x}}]
          route: [{destination: {host: reviews}}]
        - match: [{name: other-name, uri: {prefix: /api}}]
          route: [{destination: {host: reviews}}]
        - match: [{uri: {prefix: /api/v1}}]
          route: [{destination: {host: reviews}}]
        - route: [{destination: {host: reviews}}]
        - route: [{destination: {host: reviews}}]
        """))
    got = {(c, p) for c, _, p in found if c in ("IST0130", "IST0131")}
    assert got == {("IST0131", "spec.http[1].match[0]"),  # repeats first's match, whatever its name
                   ("IST0130", "spec.http[1]"),  # all its matches were used
                   ("IST0131", "spec.http[2]"),  # /api/v1 is covered by /api before it
                   ("IST0130", "spec.http[4]")}  # a second rule without matches


def test_ist0132_and_gateway_references() -> None:
    gw = ("---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: edge}\nspec:\n"
          "  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['./a.example.com', 'shop/*']}]\n")
    found = codes(SVC + gw + vs("x", "hosts: [b.example.com]\ngateways: [edge/gw, edge/none]\n"
                                     "http: [{route: [{destination: {host: reviews}}]}]")
                  + vs("y", "hosts: [c.example.com]\ngateways: [edge/gw]\nhttp: [{route: [{destination: "
                            "{host: reviews.default.svc.cluster.local}}]}]", ns="shop")
                  + vs("z", "hosts: [a.example.com]\ngateways: [gw.edge]\nhttp: [{route: [{destination: "
                            "{host: reviews.default.svc.cluster.local}}]}]", ns="edge"))
    assert ("IST0132", "VirtualService default/x") in found and ("IST0101", "VirtualService default/x") in found
    assert ("IST0132", "VirtualService shop/y") not in found  # shop/* offers every host to namespace shop
    assert not any(r == "VirtualService edge/z" for _, r in found)  # legacy name.namespace form


def test_ist0140_gateway_route_ignores_subset_split() -> None:
    found = codes(SVC + vs("mesh", "hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews, subset: v1}}]}]")
                  + vs("edge", "hosts: [a.example.com]\ngateways: [gw]\nhttp: [{route: [{destination: {host: reviews}}]}]"))
    assert ("IST0140", "VirtualService default/edge") in found


# ------------------------------------------------------------------ other kinds

def test_sidecar_and_telemetry_selectors() -> None:
    text = """
    apiVersion: v1
    kind: Pod
    metadata: {name: p, labels: {app: a, tier: x}}
    ---
    apiVersion: networking.istio.io/v1
    kind: Sidecar
    metadata: {name: by-app}
    spec: {workloadSelector: {labels: {app: a}}, egress: [{hosts: ["./*"]}]}
    ---
    apiVersion: networking.istio.io/v1
    kind: Sidecar
    metadata: {name: by-tier}
    spec: {workloadSelector: {labels: {tier: x}}, egress: [{hosts: ["./*"]}]}
    ---
    apiVersion: networking.istio.io/v1
    kind: Sidecar
    metadata: {name: nobody}
    spec: {workloadSelector: {labels: {app: zzz}}, egress: [{hosts: ["./*"]}]}
    ---
    apiVersion: telemetry.istio.io/v1
    kind: Telemetry
    metadata: {name: t1}
    spec: {accessLogging: [{providers: [{name: envoy}]}]}
    ---
    apiVersion: telemetry.istio.io/v1
    kind: Telemetry
    metadata: {name: t2}
    spec: {accessLogging: [{disabled: true}]}
    """
    assert codes(text) == {("IST0110", "Sidecar default/by-app"), ("IST0110", "Sidecar default/by-tier"),
                           ("IST0101", "Sidecar default/nobody"), ("IST0160", "Telemetry default/t1"),
                           ("IST0160", "Telemetry default/t2")}


def test_an_unknown_metrics_provider_is_reported_naming_the_field() -> None:
    text = """
    apiVersion: telemetry.istio.io/v1
    kind: Telemetry
    metadata: {name: typo}
    spec: {metrics: [{providers: [{name: prometheus}]}, {providers: [{name: envoy-stat}]}]}
    ---
    apiVersion: telemetry.istio.io/v1
    kind: Telemetry
    metadata: {name: native, namespace: shop}
    spec: {metrics: [{providers: [{name: envoy-stats}]}]}
    """
    resources, workloads, _ = read_for_analysis([("in.yaml", textwrap.dedent(text))])
    found = [m for m in analyze(resources, workloads) if m.code == "MZ0130"]
    assert [(m.resource, m.path, m.level) for m in found] == [
        ("Telemetry default/typo", "spec.metrics[1].providers[0].name", "Warning")], found
    assert "'envoy-stat'" in found[0].message and "envoy-stats" in found[0].hint


def test_golden_cases_are_consistent_and_envoy_filter_and_policy_codes(update_golden: bool) -> None:
    for case in sorted(GOLDEN.glob("*.yaml")):
        resources, workloads, msgs = read_for_analysis([(case.name, case.read_text())])
        out = "".join(f"{m}\n" for m in [*msgs, *analyze(resources, workloads)])
        expected = case.with_suffix(".txt")
        if update_golden:
            expected.write_text(out)
        assert expected.exists(), f"missing {expected}; run pytest --update-golden"
        assert out == expected.read_text(), f"{case.name}: analysis differs (pytest --update-golden, review diff)"
    policies = (GOLDEN / "policies.txt").read_text()
    for code in ("IST0128", "IST0173", "IST0174", "IST0134", "IST0177", "IST0151", "IST0153", "IST0152",
                 "IST0160", "IST0002", "MZ0110"):
        assert f"[{code}]" in policies, code
    gateways = (GOLDEN / "gateways.txt").read_text()
    for code in ("IST0145", "IST0162", "IST0132", "IST0101"):
        assert f"[{code}]" in gateways, code


def test_bookinfo_with_own_routing_files_is_clean() -> None:
    texts = [(str(p), p.read_text()) for p in (OWN_BOOKINFO / "mesh.yaml", OWN_NETWORKING / "destination-rule-all.yaml",
                                               OWN_NETWORKING / "virtual-service-reviews-jason-v2-v3.yaml")]
    resources, workloads, msgs = read_for_analysis(texts)
    found = [m for m in [*msgs, *analyze(resources, workloads)] if m.level != "Info"]
    assert {(m.code, m.resource) for m in found} <= {("IST0173", "DestinationRule default/ratings")}, found


def test_registered_instances_are_pods_that_subsets_select() -> None:
    """A live mesh's registry instances (VMs, `PUT /api/v1/instances`) run pods: a subset that selects only
    them is not IST0173 (the console and `mizzen analyze` with a mesh pass them in)."""
    text = SVC + """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""
    resources, workloads, _ = read_for_analysis([("in.yaml", textwrap.dedent(text))])
    instances = [{"id": "default.reviews-v1-0", "namespace": "default", "workload": "reviews-v1",
                  "labels": {"app": "reviews", "version": "v1"}},
                 {"id": "default.reviews-v1-1", "namespace": "default", "workload": "reviews-v1",
                  "labels": {"app": "reviews", "version": "v1"}}]
    running = registered_workloads(instances)
    assert [(w.namespace, w.name) for w in running] == [("default", "reviews-v1")]  # one per workload and labels
    found = {(m.code, m.path) for m in analyze(resources, [*workloads, *running]) if m.code == "IST0173"}
    assert found == {("IST0173", "spec.subsets[1].labels")}  # v1 runs, v2 does not


@needs_istio_samples
def test_bookinfo_with_istio_samples_is_clean_but_for_subsets_nothing_runs() -> None:
    texts = [(str(p), p.read_text()) for p in (SHARED / "platform" / "kube" / "bookinfo.yaml",
                                               SHARED / "networking" / "destination-rule-all.yaml",
                                               SHARED / "networking" / "virtual-service-reviews-jason-v2-v3.yaml")]
    resources, workloads, msgs = read_for_analysis(texts)
    found = [m for m in [*msgs, *analyze(resources, workloads)] if m.level != "Info"]
    # destination-rule-all.yaml has ratings subsets v2-mysql(-vm) that bookinfo.yaml does not deploy (istioctl
    # reports the same)
    assert {(m.code, m.resource, m.path) for m in found} == {
        ("IST0173", "DestinationRule default/ratings", "spec.subsets[2].labels"),
        ("IST0173", "DestinationRule default/ratings", "spec.subsets[3].labels")}


# ------------------------------------------------------------------ the command

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mizzen.cli.main", "analyze", "--no-mesh", *args],
                          capture_output=True, text=True, timeout=60)


def test_a_broken_document_does_not_hide_the_others(tmp_path: Path) -> None:
    f = tmp_path / "two.yaml"
    f.write_text(SVC.lstrip() + "---\napiVersion: v1\nkind: Service\nmetadata: {name: x\n---\n"
                 + vs("a", "hosts: [reviews]\nhttp: [{route: [{destination: {host: ratings}}]}]").lstrip("-\n"))
    p = cli("-f", str(f), "-o", "json")
    assert p.returncode == 79, p.stderr
    got = {(m["code"], m["origin"]) for m in json.loads(p.stdout)}
    assert ("IST0101", "VirtualService default/a") in got  # the document after the broken one is analyzed
    assert any(c == "IST0106" and str(f) in o for c, o in got), got


def test_output_formats_exit_status_and_thresholds(tmp_path: Path) -> None:
    f = tmp_path / "w.yaml"
    f.write_text(SVC.lstrip() + vs("a", "hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews}}]}, "
                                        "{route: [{destination: {host: reviews}}]}]"))
    p = cli("-f", str(f))
    assert p.returncode == 0 and "Warning [IST0130] (VirtualService default/a field spec.http[1])" in p.stdout
    assert cli("-f", str(f), "--failure-threshold", "Warning").returncode == 79
    y = yaml.safe_load(cli("-f", str(f), "-o", "yaml").stdout)
    assert y[0]["code"] == "IST0130" and y[0]["origin"] == "VirtualService default/a" and \
        y[0]["documentationUrl"].endswith("/ist0130/?ref=mizzen")
    assert cli("-f", str(f), "--output-threshold", "Error").stdout.startswith("✔ No validation issues")
    bad = tmp_path / "bad.yaml"
    bad.write_text(vs("r", "hosts: [r]\nhttp: [{route: [{destination: {host: r}}, {destination: {host: r}}]}]"))
    p = cli("-f", str(bad), "-o", "json")
    (m,) = [x for x in json.loads(p.stdout) if x["code"] == "IST0106"]
    assert p.returncode == 79 and "total destination weight = 0" in m["message"]
    assert m["reference"] == "spec.http[0].route"
    # as istioctl, a resource that breaks a rule is still analyzed: its unknown host is reported too
    assert any(x["code"] == "IST0101" for x in json.loads(p.stdout))
