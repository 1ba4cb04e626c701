"""Reading YAML as Kubernetes users expect (YAML 1.2 core schema, duplicate keys refused, JSON-only values,
kubectl's List and multi-document handling) and bounding hostile input (depth, alias expansion, size)."""
from __future__ import annotations

import textwrap

import pytest

from mizzen.api import InvalidConfig, load_text
from mizzen.api.load import MAX_RESOURCE_BYTES
from mizzen.api.yamlload import MAX_DEPTH, YamlError, load_documents


def value(text: str):
    (d,) = load_documents(textwrap.dedent(text))
    return d.value


def error(text: str) -> YamlError:
    with pytest.raises(YamlError) as e:
        load_documents(textwrap.dedent(text))
    return e.value


# ------------------------------------------------------------------ YAML 1.2 core schema

@pytest.mark.parametrize("word", ["on", "off", "yes", "no", "y", "n", "Yes", "OFF"])
def test_yaml11_booleans_stay_strings(word: str) -> None:
    assert value(f"a: {word}") == {"a": word}


@pytest.mark.parametrize("word,expect", [("true", True), ("True", True), ("TRUE", True), ("false", False),
                                         ("False", False), ("FALSE", False)])
def test_core_schema_booleans(word: str, expect: bool) -> None:
    assert value(f"a: {word}") == {"a": expect}


@pytest.mark.parametrize("text,expect", [
    ("12", 12), ("-3", -3), ("0o17", 15), ("0x1f", 31), ("017", 15),  # go-yaml still reads 0777 as octal
    ("1.5", 1.5), ("1e3", 1000.0), (".5", 0.5), ("~", None), ("null", None), ("", None),
    ("1_000", "1_000"), ("2024-01-01", "2024-01-01"), ("1:20", "1:20"), ("=", "="),
])
def test_core_schema_scalars(text: str, expect) -> None:
    assert value(f"a: {text}") == {"a": expect}


def test_unquoted_ipv6_in_a_flow_list_is_a_string() -> None:
    # 2001:0:0:0:0:0:0:1 is a sexagesimal integer in YAML 1.1
    assert value("a: [1.2.3.4, 2001:db8::1, 2001:0:0:0:0:0:0:1]") == {"a": ["1.2.3.4", "2001:db8::1",
                                                                         "2001:0:0:0:0:0:0:1"]}


def test_keys_become_strings_as_in_json() -> None:
    assert value("80: a\ntrue: b\n1.5: c") == {"80": "a", "true": "b", "1.5": "c"}


def test_merge_keys_explicit_keys_win() -> None:
    assert value("""
        base: &b {a: 1, b: 2}
        other: &o {c: 3, a: 9}
        x: {<<: [*b, *o], b: 20}
        """)["x"] == {"a": 1, "b": 20, "c": 3}
    assert value("x: {'<<': 1}") == {"x": {"<<": 1}}  # a quoted << is an ordinary key


def test_quoted_and_tagged_scalars() -> None:
    assert value("a: 'on'\nb: \"80\"\nc: !!str 80\nd: !!int '80'\ne: !!float 1\nf: !!bool true") == {
        "a": "on", "b": "80", "c": "80", "d": 80, "e": 1.0, "f": True}


def test_json_is_yaml() -> None:
    assert value('{"a":\t1, "b": [true, null, "x"]}') == {"a": 1, "b": [True, None, "x"]}


# ------------------------------------------------------------------ refused, with the line

def test_duplicate_key_names_key_and_both_lines() -> None:
    e = error("""
        a: 1
        b:
          c: 1
          c: 2
        """)
    assert "duplicate key 'c'" in e.message and "first at line 4" in e.message
    assert (e.line, e.document) == (5, 0)


def test_duplicate_key_in_a_resource_is_an_issue_naming_file_document_and_line() -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n" \
           "apiVersion: v1\nkind: Service\nmetadata: {name: b, name: c}\n"
    with pytest.raises(InvalidConfig) as e:
        load_text(text, file="svc.yaml")
    (issue,) = e.value.issues
    assert str(issue) == ("svc.yaml (document 2): duplicate key 'name' in a mapping (first at line 7) "
                          "at line 7, column 21")


@pytest.mark.parametrize("text,why", [
    ("a: .inf", "cannot be represented in JSON"),
    ("a: -.Inf", "cannot be represented in JSON"),
    ("a: .nan", "cannot be represented in JSON"),
    ("a: 1e999", "out of range"),
    ("a: 18446744073709551616", "out of range"),
    ("a: " + "9" * 310, "out of range"),
    ("a: !!binary gAA=", "!!binary is not supported"),
    ("a: !!timestamp 2001-12-14", "!!timestamp is not supported"),
    ("a: !custom x", "tag '!custom' is not supported"),
    ("a: !!set {x}", "not supported"),
    ("? [a]\n: b", "mapping key must be a string"),
    ("a: *nope", "unknown alias *nope"),
    ("a: [b}", "not valid YAML"),
    ("a: \"\\uDFFF\"", "not valid YAML"),
    ("a: !!int x", "is not an integer"),
    ("a: !!bool yes", "is not a boolean"),
])
def test_values_json_cannot_carry_are_refused(text: str, why: str) -> None:
    e = error(text)
    assert why in e.message and e.line == 1


def test_lone_surrogate_in_text_is_refused() -> None:
    e = error("a: b\nc: \"x\udfffy\"")
    assert "surrogate" in e.message and (e.line, e.column) == (2, 6)


# ------------------------------------------------------------------ bounds

def test_nesting_depth_is_bounded() -> None:
    load_documents("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    e = error("[" * 1000 + "]" * 1000)
    assert f"more than {MAX_DEPTH} levels" in e.message
    e = error("a:\n" + "".join("  " * i + "- \n" for i in range(1, 300)))
    assert "levels" in e.message or "not valid YAML" in e.message
    with pytest.raises(YamlError, match="levels"):
        load_documents('{"a":' * 5000 + "1" + "}" * 5000)


def test_alias_bomb_is_refused_before_it_is_built() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    text = "\n".join(lines)
    assert len(text) < 600
    e = error(text)
    assert "expands to more than" in e.message


def test_modest_alias_use_is_fine() -> None:
    v = value("d: &d {a: 1}\nx: [*d, *d, *d]")
    assert v["x"] == [{"a": 1}] * 3


def test_large_resource_is_refused_naming_it() -> None:
    big = "x" * (MAX_RESOURCE_BYTES + 10)
    text = f"apiVersion: mizzen.dev/v1\nkind: Workload\nmetadata: {{name: big}}\nspec: {{command: [x], env: {{A: '{big}'}}}}\n"
    with pytest.raises(InvalidConfig) as e:
        load_text(text, file="w.yaml")
    (issue,) = e.value.issues
    assert issue.kind == "Workload" and issue.name == "big" and "too large" in issue.message


# ------------------------------------------------------------------ documents and Lists, as kubectl

SVC = "{apiVersion: v1, kind: Service, metadata: {name: %s}}"


def test_multi_document_with_empty_and_comment_only_documents() -> None:
    text = f"---\n# only a comment\n---\n{SVC % 'a'}\n---\n---\n{SVC % 'b'}\n...\n"
    assert [r.name for r in load_text(text).resources] == ["a", "b"]


def test_list_documents_are_flattened() -> None:
    text = textwrap.dedent(f"""
        apiVersion: v1
        kind: List
        items:
        - {SVC % 'a'}
        - apiVersion: v1
          kind: ServiceList
          items: [{SVC % 'b'}, {SVC % 'c'}]
        ---
        {{apiVersion: networking.istio.io/v1, kind: VirtualServiceList, metadata: {{}},
          items: [{{apiVersion: networking.istio.io/v1, kind: VirtualService, metadata: {{name: v}},
                   spec: {{hosts: [a], http: [{{route: [{{destination: {{host: a}}}}]}}]}}}}]}}
        ---
        {{apiVersion: v1, kind: List, items: []}}
        """)
    assert [(r.kind, r.name) for r in load_text(text).resources] == [
        ("Service", "a"), ("Service", "b"), ("Service", "c"), ("VirtualService", "v")]


def test_a_bad_item_in_a_list_names_its_document_and_resource() -> None:
    text = f"apiVersion: v1\nkind: List\nitems:\n- {SVC % 'a'}\n- {{apiVersion: v1, kind: Service, " \
           f"metadata: {{name: b}}, spec: {{ports: [{{port: 0}}]}}}}\n"
    with pytest.raises(InvalidConfig) as e:
        load_text(text, file="l.yaml")
    (issue,) = e.value.issues
    assert (issue.document, issue.name, issue.path) == (0, "b", "spec.ports[0].port")


def test_labels_read_as_yaml11_booleans_are_now_strings() -> None:
    (r,) = load_text("apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: {canary: on, legacy: no}}\n").resources
    assert r.metadata.labels == {"canary": "on", "legacy": "no"}


@pytest.mark.parametrize("text,expect", [("a: [1.2.3.4, 001:db8::]", ["1.2.3.4", "001:db8::"]),
                                         ("a: [::1, fe80::/10]", ["::1", "fe80::/10"]),
                                         ("a: [\"::1\"]", ["::1"])])
def test_ipv6_forms_go_yaml_reads_in_flow_lists(text: str, expect: list) -> None:
    # libyaml alone stops at a ':' before ']' or a leading ':'; go-yaml reads these as strings
    assert value(text) == {"a": expect}
