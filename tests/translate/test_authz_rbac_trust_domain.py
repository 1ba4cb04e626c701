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
