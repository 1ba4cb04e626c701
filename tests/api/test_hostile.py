"""The hostile inputs the issue names, each a clear error naming the field (or a bound), never an exception
of another kind: what a fuzzer found against the old loader and validators."""
from __future__ import annotations

import pytest

from mizzen.api import InvalidConfig, load_text
from mizzen.api.fields import show


def issues(text: str) -> list[str]:
    with pytest.raises(InvalidConfig) as e:
        load_text(text, file="h.yaml")
    return [str(i) for i in e.value.issues]


VS = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n  hosts: [a]\n"
      "  http:\n  - route: [{destination: {host: a}}]\n")


def test_deep_nesting_yaml_and_json() -> None:
    (i,) = issues("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: " + "[" * 400 + "]" * 400 + "\n")
    assert "nested more than 100 levels deep" in i and "h.yaml (document 1)" in i
    (i,) = issues('{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": ' + '{"a":' * 400
                  + "1" + "}" * 401)
    assert "nested more than 100 levels deep" in i


def test_binary_values() -> None:
    (i,) = issues("apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {x: !!binary gAA=}}\n")
    assert "!!binary is not supported" in i and "line 3" in i


def test_lone_surrogate_in_an_envoy_patch_value() -> None:
    text = ("apiVersion: mizzen.dev/v1\nkind: EnvoyPatch\nmetadata: {name: p}\nspec:\n  patches:\n"
            "  - {applyTo: CLUSTER, operation: ADD, value: {name: \"x\udfff\"}}\n")
    (i,) = issues(text)
    assert "surrogate" in i and "line 6" in i


def test_cors_max_age_of_310_nines() -> None:
    (i,) = issues(VS + "    corsPolicy: {maxAge: " + "9" * 310 + "s}\n")
    assert "spec.http[0].corsPolicy.maxAge" in i and "too long" in i


def test_durations_beyond_protobuf() -> None:
    (i,) = issues(VS + "    timeout: 999999999999h\n")
    assert "spec.http[0].timeout" in i and "out of range" in i


def test_counts_above_uint32() -> None:
    (i,) = issues("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n"
                  "  host: a\n  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 4294967296}}\n")
    assert "outlierDetection.consecutive5xxErrors" in i


def test_service_entry_selector_labels_as_a_list_is_rejected() -> None:
    (i,) = issues("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec:\n"
                  "  hosts: [a.com]\n  workloadSelector: {labels: [app]}\n")
    assert "spec.workloadSelector.labels" in i


@pytest.mark.parametrize("endpoint,path", [("{address: 1.1.1.1, weight: -50}", "endpoints[0].weight"),
                                           ("{address: 1.1.1.1, ports: {http: -1}}", "endpoints[0].ports")])
def test_negative_weight_and_port(endpoint: str, path: str) -> None:
    (i,) = issues("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec:\n"
                  "  hosts: [a.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n"
                  f"  endpoints: [{endpoint}]\n")
    assert f"spec.{path}" in i


def test_name_with_a_trailing_newline() -> None:
    (i,) = issues('apiVersion: v1\nkind: Service\nmetadata: {name: "abc\\n"}\n')
    assert "metadata.name" in i and "'abc\\n'" in i


def test_duplicate_service_port_names() -> None:
    (i,) = issues("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n"
                  "  ports: [{port: 80, name: http}, {port: 81, name: http}]\n")
    assert "spec.ports[1].name: duplicate service port name" in i


def test_huge_and_control_character_names_are_escaped_and_cut_short() -> None:
    name = "x" * 5000 + "\x1b[31m"
    text = f'apiVersion: v1\nkind: Service\nmetadata: {{name: "{name}"}}\n'
    for line in issues(text):
        assert len(line) < 400 and "\x1b" not in line, line
    assert show("a\nb\x00") == "'a\\nb\\x00'"


def test_router_host_is_blamed_on_the_router() -> None:
    (i,) = issues("apiVersion: mizzen.dev/v1\nkind: Router\nmetadata: {name: r}\nspec:\n  port: 80\n"
                  "  host: 'a,b'\n  subsets: [{branch: master}]\n")
    assert "Router default/r field spec.host" in i


def test_ipv6_address_in_a_flow_list() -> None:
    (r,) = load_text("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec:\n"
                     "  hosts: [a.com]\n  addresses: [1.2.3.4, 2001:db8::1, 2001:0:0:0:0:0:0:1]\n"
                     "  ports: [{number: 80, name: http, protocol: HTTP}]\n").resources
    assert r.spec.addresses == ["1.2.3.4", "2001:db8::1", "2001:0:0:0:0:0:0:1"]
