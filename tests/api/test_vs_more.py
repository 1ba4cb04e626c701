"""corsPolicy, redirect.derivePort and delegate: validation (field paths), delegate merging (Istio's
rules), snapshot change detection for delegates, `mizzen analyze` MZ0104. Traffic: tests/e2e/test_vs_more.py."""
from __future__ import annotations

import pytest

from mizzen.analyze import analyze
from mizzen.api import load_text
from mizzen.api.base import InvalidConfig
from mizzen.api.virtual_service import HTTPMatchRequest
from mizzen.model import Snapshot, diff_hosts
from mizzen.model.delegate import merge_matches

SVC = """apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  ports: [{port: 8080, name: http}]
  selector: {app: echo}
---
"""
VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo]
  http:
"""
ROOT = VS + """  - match: [{uri: {prefix: /api}}]
    delegate: {name: echo-api}
  - route: [{destination: {host: echo}}]
"""
DELEGATE = """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo-api}
spec:
  http:
  - match: [{uri: {prefix: %s}}]
    route: [{destination: {host: echo}}]
"""


def errors(text: str) -> str:
    with pytest.raises(InvalidConfig) as e:
        load_text(text)
    return str(e.value)


def test_cors_validation_names_fields() -> None:
    out = errors(VS + """  - corsPolicy: {allowMethods: [GET, get], allowHeaders: ["x ok"], exposeHeaders: [""],
                   maxAge: 1500ms, allowOrigins: [{}], unmatchedPreflights: MAYBE, bogus: 1}
    route: [{destination: {host: echo}}]
""")
    for frag in ("spec.http[0].corsPolicy.allowMethods", "allowMethods[1]: 'get' is not a supported HTTP method",
                 "allowHeaders[0]: 'x ok'", "exposeHeaders[0]", "corsPolicy.maxAge", "seconds precision",
                 "allowOrigins[0]: not a valid match type", "corsPolicy.unmatchedPreflights",
                 "corsPolicy.bogus"):
        assert frag in out, (frag, out)


def test_cors_accepts_istio_forms() -> None:
    res = load_text(VS + """  - corsPolicy:
      allowOrigins: [{exact: "*"}, {regex: "https://.*[.]example[.]com"}]
      allowOrigin: [https://legacy.example]
      allowMethods: [GET, OPTIONS]
      allowHeaders: [authorization, X-Custom_1]
      maxAge: 2m
      allowCredentials: false
      unmatchedPreflights: FORWARD
    route: [{destination: {host: echo}}]
""").resources
    cp = res[0].spec.http[0].cors_policy
    assert [m.exact or m.regex for m in cp.origins] == ["*", "https://.*[.]example[.]com", "https://legacy.example"]


def test_redirect_port_and_derive_port() -> None:
    assert "only one of port and derivePort" in errors(
        VS + "  - redirect: {port: 80, derivePort: FROM_REQUEST_PORT}\n")
    assert "spec.http[0].redirect.derivePort" in errors(VS + "  - redirect: {derivePort: SOMETIMES}\n")
    load_text(VS + "  - redirect: {derivePort: FROM_PROTOCOL_DEFAULT, scheme: https}\n")


def test_delegate_validation() -> None:
    deeper = DELEGATE % "/api/x" + "  - delegate: {name: other}\n"
    assert "http[1].delegate" in errors(deeper) and "one level" in errors(deeper)
    assert "must have no gateways" in errors(DELEGATE % "/api" + "  gateways: [mesh]\n")
    assert "spec.http[0].delegate.bogus" in errors(VS + "  - delegate: {name: x, bogus: 1}\n")


def _m(**kw) -> HTTPMatchRequest:
    return HTTPMatchRequest.model_validate(kw)


def test_delegate_match_merging_follows_istio() -> None:
    root = [_m(uri={"prefix": "/api"}, headers={"x-team": {"exact": "a"}})]
    merged = merge_matches(root, [_m(uri={"prefix": "/api/users"}, port=8080)])
    assert merged is not None and len(merged) == 1
    assert merged[0].uri.prefix == "/api/users" and merged[0].port == 8080 and "x-team" in merged[0].headers
    assert merge_matches(root, [_m(uri={"prefix": "/other"})]) is None  # not a subset: conflict
    assert merge_matches(root, [_m(uri={"exact": "/api/v1"})])[0].uri.exact == "/api/v1"
    assert merge_matches(root, [_m(uri={"regex": "/api/.*"})]) is None  # regexes never combine
    assert merge_matches(root, [_m(headers={"x-team": {"exact": "b"}})]) is None
    assert merge_matches([], [_m(uri={"prefix": "/x"})])[0].uri.prefix == "/x"
    assert merge_matches(root, []) == root
    two = [_m(uri={"prefix": "/api"}), _m(uri={"prefix": "/v2"})]
    assert [m.uri.prefix for m in merge_matches(two, [_m(method={"exact": "GET"})])] == ["/api", "/v2"]


def _resources(text: str, bump: str = "") -> list:
    """Resources as the store holds them (revision = position), `bump` rewritten at a later revision."""
    res = [r.with_revision(i + 1) for i, r in enumerate(load_text(text).resources)]
    return [r.with_revision(99) if r.name == bump else r for r in res]


def test_changing_only_a_delegate_changes_the_roots_host() -> None:
    host = "echo.default.svc.cluster.local"
    a = Snapshot.build(_resources(SVC + ROOT + DELEGATE % "/api/users"), [])
    b = Snapshot.build(_resources(SVC + ROOT + DELEGATE % "/api/people", bump="echo-api"), [])
    assert [d.name for d in a.config.delegates_by_host[host]] == ["echo-api"]
    assert diff_hosts(a, b) == {host}
    missing = Snapshot.build(_resources(SVC + ROOT), [])
    assert host not in missing.config.delegates_by_host
    assert diff_hosts(missing, a) == {host}  # creating a missing delegate re-pushes the root's host


def test_analyze_reports_missing_and_conflicting_delegates() -> None:
    msgs = analyze(load_text(SVC + ROOT).resources)
    assert [(m.code, m.path) for m in msgs if m.code == "MZ0104"] == [("MZ0104", "spec.http[0].delegate")]
    assert "does not exist" in next(m.message for m in msgs if m.code == "MZ0104")
    msgs = analyze(load_text(SVC + ROOT + DELEGATE % "/other").resources)
    assert any(m.code == "MZ0104" and "not a subset" in m.message for m in msgs)
    assert not [m for m in analyze(load_text(SVC + ROOT + DELEGATE % "/api/x").resources) if m.code == "MZ0104"]
