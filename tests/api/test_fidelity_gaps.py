"""Istio-valid configs that must load and Istio-invalid ones that must be refused with their field named, for
the security and workload kinds (issue 14's fidelity goal). Each case is written from the rule's meaning
(Istio's CRD schema and its validation), not copied from Istio's test data; what Mizzen does with a field it
does not act on is reported by `mizzen analyze`."""
from __future__ import annotations

import pytest

from mizzen.analyze import analyze
from mizzen.analyze.inputs import read_for_analysis
from mizzen.api import load_text
from mizzen.model.workloadentries import instances_of
from mizzen.translate.filters.jwt import provider

from .istiodoc import doc, problems


def messages(text: str) -> list[tuple[str, str, str]]:
    resources, workloads, _ = read_for_analysis([("in.yaml", text)])
    return [(m.code, m.resource, m.path) for m in analyze(resources, workloads)]


VALID = {
    "trust domains, exact, wildcards and any": ("AuthorizationPolicy", """
        rules:
        - from:
          - source:
              trustDomains: [cluster.local, "corp-*", "*.example.org", "*"]
              notTrustDomains: [legacy.local, "a*b"]
        """),
    "source.trustDomain condition": ("AuthorizationPolicy", """
        rules:
        - when: [{key: source.trustDomain, values: [cluster.local], notValues: ["old-*"]}]
        """),
    "pseudo-header condition": ("AuthorizationPolicy", """
        action: DENY
        rules:
        - when: [{key: "request.headers[:method]", values: [DELETE]}]
        """),
    "targetRef to a Service of the own namespace": ("RequestAuthentication", """
        targetRef: {group: "", kind: Service, name: web}
        jwtRules: [{issuer: a, jwksUri: "https://a.example/jwks"}]
        """),
    "spaceDelimitedClaims and presence": ("RequestAuthentication", """
        jwtRules:
        - issuer: a
          jwksUri: "https://a.example/jwks"
          spaceDelimitedClaims: [roles, provider.login.scope]
          presence: REQUIRED
        """),
    "port-level mTLS with a selector": ("PeerAuthentication", """
        selector: {matchLabels: {app: db}}
        portLevelMtls: {"5432": {mode: DISABLE}}
        """),
    "workload entry on a unix socket path": ("WorkloadEntry", "address: unix:///var/run/app.sock"),
    "workload entry on an abstract unix socket": ("WorkloadEntry", "address: unix://@app"),
    "workload entry with a host name": ("WorkloadEntry", "address: vm-1.corp.example\nports: {http-web: 8080}"),
    "workload entry with only a network": ("WorkloadEntry", "network: east"),
    "workload group http probe with headers": ("WorkloadGroup", """
        template: {serviceAccount: sa}
        probe: {httpGet: {port: 80, scheme: HTTPS, httpHeaders: [{name: X-Probe_1, value: "yes"}]}}
        """),
    "removed websocketUpgrade": ("VirtualService", """
        hosts: [web]
        http: [{route: [{destination: {host: web}}], websocketUpgrade: true}]
        """),
}


@pytest.mark.parametrize("case", sorted(VALID))
def test_istio_valid_configs_load(case: str) -> None:
    kind, spec = VALID[case]
    assert problems(doc(kind, spec)) == []


INVALID = {
    # RequestAuthentication/AuthorizationPolicy targetRef: Istio's CRD (no cross-namespace reference, a group
    # is a DNS subdomain, a kind a Kubernetes kind name)
    "targetRef namespace": ("RequestAuthentication", "targetRef: {kind: Service, name: web, namespace: other}",
                            "spec.targetRef.namespace", "cross namespace"),
    "targetRefs namespace, even the own one": ("AuthorizationPolicy",
                                               "targetRefs: [{kind: Service, name: web, namespace: ns}]",
                                               "spec.targetRefs[0].namespace", "cross namespace"),
    "targetRef group": ("RequestAuthentication", 'targetRef: {group: "__", kind: Service, name: web}',
                        "spec.targetRef.group", "invalid group"),
    "targetRef kind": ("RequestAuthentication", "targetRef: {kind: Serv_ice, name: web}",
                       "spec.targetRef.kind", "invalid kind"),
    "empty spaceDelimitedClaims entry": ("RequestAuthentication",
                                         'jwtRules: [{issuer: a, jwksUri: "https://a/j", spaceDelimitedClaims: [""]}]',
                                         "spec.jwtRules[0].spaceDelimitedClaims", "empty"),
    "unknown presence": ("RequestAuthentication", 'jwtRules: [{issuer: a, jwksUri: "https://a/j", presence: MANDATORY}]',
                         "spec.jwtRules[0].presence", ""),
    "empty trust domain": ("AuthorizationPolicy", 'rules: [{from: [{source: {trustDomains: [""]}}]}]',
                           "spec.rules[0].from[0].source.trustDomains", "empty"),
    # PeerAuthentication: portLevelMtls, when given, has at least one port
    "empty portLevelMtls": ("PeerAuthentication", "selector: {matchLabels: {a: b}}\nportLevelMtls: {}",
                            "spec.portLevelMtls", "at least one"),
    # WorkloadEntry
    "no address and no network": ("WorkloadEntry", "labels: {app: a}", "spec", "Address is required"),
    "relative unix socket": ("WorkloadEntry", "address: unix://relative", "spec.address", "absolute path"),
    "unix socket on a directory": ("WorkloadEntry", "address: unix:///run/", "spec.address", "may not be a dir"),
    "unix socket with ports": ("WorkloadEntry", "address: unix:///run/a.sock\nports: {http: 80}", "spec",
                               "may not include ports"),
    # Envoy refuses a pipe path longer than the kernel's sun_path (107 bytes and a NUL)
    "unix socket path too long": ("WorkloadEntry", "address: unix:///" + "a" * 107, "spec.address", "107 bytes"),
    "bad host name": ("WorkloadEntry", "address: vm_1..example", "spec.address", "FQDN"),
    "dotted number that is no IP": ("WorkloadEntry", "address: 999.1.1.1", "spec.address", "IP address"),
    "bad port name": ("WorkloadEntry", 'address: 1.1.1.1\nports: {"@": 80}', "spec.ports", "port name"),
    "port name ending in a dash": ("WorkloadEntry", 'address: 1.1.1.1\nports: {"http-": 80}', "spec.ports",
                                   "port name"),
    # WorkloadGroup readiness probe
    "probe header name": ("WorkloadGroup", 'template: {}\nprobe: {httpGet: {port: 80, httpHeaders: [{name: "**"}]}}',
                          "spec.probe.httpGet.httpHeaders[0].name", "invalid header name"),
    "probe scheme": ("WorkloadGroup", "template: {}\nprobe: {httpGet: {port: 80, scheme: FTP}}",
                     "spec.probe.httpGet.scheme", ""),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_istio_invalid_configs_are_refused_naming_the_field(case: str) -> None:
    kind, spec, path, words = INVALID[case]
    found = problems(doc(kind, spec))
    assert found, f"{case}: accepted"
    assert any(p.startswith(path + ":") and words in p for p in found), found


def test_space_delimited_claims_are_split_by_envoy_besides_scope_and_permission() -> None:
    (r,) = load_text(doc("RequestAuthentication", VALID["spaceDelimitedClaims and presence"][1])).resources
    p = provider(r.spec.jwt_rules[0], {})
    assert list(p.normalize_payload_in_metadata.space_delimited_claims) == [
        "scope", "permission", "roles", "provider.login.scope"]
    plain = load_text(doc("RequestAuthentication", 'jwtRules: [{issuer: a, jwksUri: "https://a/j"}]')).resources[0]
    assert list(provider(plain.spec.jwt_rules[0], {}).normalize_payload_in_metadata.space_delimited_claims) == [
        "scope", "permission"]


def test_fields_without_effect_are_reported_by_analyze() -> None:
    text = "---\n".join([
        doc("RequestAuthentication", VALID["spaceDelimitedClaims and presence"][1], name="ra"),
        doc("WorkloadEntry", "address: vm-1.corp.example", name="fqdn"),
        doc("WorkloadEntry", "network: east", name="remote"),
        doc("WorkloadEntry", "address: 10.0.0.9", name="ip"),
        doc("VirtualService", VALID["removed websocketUpgrade"][1], name="ws"),
    ])
    got = messages(text)
    assert ("MZ0110", "RequestAuthentication ns/ra", "spec.jwtRules[0].presence") in got
    assert ("MZ0110", "WorkloadEntry ns/fqdn", "spec.address") in got
    assert ("MZ0110", "WorkloadEntry ns/remote", "spec.network") in got
    assert not any(r == "WorkloadEntry ns/ip" for c, r, _ in got if c == "MZ0110")
    assert ("IST0002", "VirtualService ns/ws", "spec.http[0].websocketUpgrade") in got


def test_which_workload_entries_are_endpoints() -> None:
    text = "---\n".join(doc("WorkloadEntry", spec, name=n) for n, spec in [
        ("ip", "address: 10.0.0.9\nlabels: {app: a}"), ("sock", "address: unix:///run/a.sock\nlabels: {app: a}"),
        ("abstract", "address: unix://@a\nlabels: {app: a}"), ("fqdn", "address: a.example\nlabels: {app: a}"),
        ("remote", "network: east\nlabels: {app: a}")])
    got = {i.id: i.address for i in instances_of(load_text(text).resources)}
    assert got == {"ns.we-ip": "10.0.0.9", "ns.we-sock": "unix:///run/a.sock", "ns.we-abstract": "unix://@a"}


def test_a_unix_socket_workload_entry_is_an_envoy_pipe_endpoint() -> None:
    from mizzen.model import Proxy, Snapshot
    from mizzen.model.types import ENDPOINT
    from mizzen.translate import Renderer

    text = """apiVersion: v1
kind: Service
metadata: {name: app, namespace: ns}
spec: {ports: [{port: 8080, name: http}], selector: {app: app}}
---
""" + doc("WorkloadEntry", "address: unix://@app.sock\nlabels: {app: app}", name="sock") + "---\n" + \
        doc("WorkloadEntry", "address: vm.example\nlabels: {app: app}", name="named")
    resources = load_text(text).resources
    snap = Snapshot.build(resources, instances_of(resources))
    view = Renderer(snap).resources_for(Proxy(id="c", namespace="ns", labels=(("app", "client"),)))
    cla = view[ENDPOINT]["outbound|8080||app.ns.svc.cluster.local"].message
    eps = [lb.endpoint.address for g in cla.endpoints for lb in g.lb_endpoints]
    assert [a.pipe.path for a in eps] == ["@app.sock"]  # the host-name entry is no endpoint
