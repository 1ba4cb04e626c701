"""Istio's trust-domain rule for AuthorizationPolicy principals: `cluster.local/...` names the mesh's own trust
domain (a mesh run with `--trust-domain example.org` matches `spiffe://example.org/...` for it); a principal
with any other trust domain is matched as written."""
from __future__ import annotations

from mizzen.translate.filters.rbac import _principal_attr


def _name(value: str, td: str):
    p = _principal_attr("source.principal", "shop", td)(value, False)
    return p.authenticated.principal_name


def test_cluster_local_means_the_proxy_trust_domain():
    assert _name("cluster.local/ns/shop/sa/client", "example.org").exact == "spiffe://example.org/ns/shop/sa/client"
    assert _name("cluster.local/ns/shop/*", "example.org").prefix == "spiffe://example.org/ns/shop/"


def test_other_trust_domains_and_no_trust_domain_are_kept():
    assert _name("other.org/ns/shop/sa/client", "example.org").exact == "spiffe://other.org/ns/shop/sa/client"
    assert _name("cluster.local/ns/shop/sa/client", "").exact == "spiffe://cluster.local/ns/shop/sa/client"
    assert _name("cluster.local/ns/shop/sa/client", "cluster.local").exact == \
        "spiffe://cluster.local/ns/shop/sa/client"


def _td_matches(value: str, uri: str) -> bool:
    """Does the `source.trustDomain` / `trustDomains` matcher for `value` accept a caller identity `uri`?
    (Envoy's StringMatcher semantics; regexes are full matches, checked with RE2 as Envoy does.)"""
    import re2

    m = _principal_attr("source.trustDomain", "shop", "example.org")(value, False).authenticated.principal_name
    if m.HasField("safe_regex"):
        return re2.fullmatch(m.safe_regex.regex, uri) is not None
    if m.prefix:
        return uri.startswith(m.prefix)
    return uri == m.exact


def test_trust_domains_match_the_trust_domain_of_the_caller_identity():
    me, other = "spiffe://example.org/ns/a/sa/b", "spiffe://other.org/ns/a/sa/b"
    assert _td_matches("example.org", me) and not _td_matches("example.org", other)
    assert not _td_matches("example.org", "spiffe://example.org.evil/ns/a/sa/b")  # whole trust domain only
    assert _td_matches("*", me) and _td_matches("*", other) and not _td_matches("*", "client.example.org")
    assert _td_matches("*.org", me) and _td_matches("other*", other) and not _td_matches("other*", me)
    assert _td_matches("ex*.org", me) and not _td_matches("ex*.org", "spiffe://ex/x.org/ns/a/sa/b")
    # one trust domain per mesh and no aliases: `cluster.local` is matched as written (Istio expands only the
    # mesh's own trust domain and its aliases), unlike a principal's `cluster.local/...`
    assert not _td_matches("cluster.local", me)
    assert _td_matches("cluster.local", "spiffe://cluster.local/ns/a/sa/b")


def test_trust_domains_sit_in_the_source_with_the_other_fields():
    from mizzen.api import load_text
    from mizzen.translate.filters.rbac import rule_policy

    (ap,) = load_text("""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: td, namespace: shop}
spec:
  rules: [{from: [{source: {trustDomains: [example.org], notTrustDomains: [old.example.org]}}]}]
""").resources
    pol = rule_policy(ap.spec.rules[0], "shop", "ALLOW", False, "example.org")
    ids = pol.principals[0].and_ids.ids
    assert ids[0].authenticated.principal_name.prefix == "spiffe://example.org/"
    assert ids[1].not_id.authenticated.principal_name.prefix == "spiffe://old.example.org/"
