"""The inbound cluster (sidecar → its app) resends every safe request that a dying app reset: its circuit breakers
do not cap concurrent retries at Envoy's default of 3 (Istio's inbound clusters are unlimited too)."""
from __future__ import annotations

from mizzen.translate import clusters as C
from mizzen.translate.policies import MAX_U32
from mizzen.translate.routes import inbound_retry_policy


def test_inbound_cluster_retries_are_not_capped():
    c = C.inbound(9080, "127.0.0.1", 9080, "HTTP")
    [th] = c.circuit_breakers.thresholds
    # the inbound route's resend (retry_on reset) is what turns a request on a dead app's pooled connection into
    # a refusal (UF) that callers retry elsewhere; with a cap, an app that died with more than 3 requests on its
    # connections has the rest answered 503 UC,UO, which no caller retries (seen in `mizzen chaos` app kills)
    assert "reset" in inbound_retry_policy().retry_on
    assert th.max_retries.value == MAX_U32
    assert th.max_requests.value == th.max_pending_requests.value == th.max_connections.value == MAX_U32


def test_inbound_retry_is_limited_to_safe_methods_by_exact_matchers():
    # Envoy retries when any of retriable_request_headers matches: one exact matcher per safe method, no regex
    # run on every request (bench/sidecarcost.py); POST and the other unsafe methods match none of them
    pol = inbound_retry_policy()
    ms = list(pol.retriable_request_headers)
    assert {m.name for m in ms} == {":method"}
    assert all(m.string_match.WhichOneof("match_pattern") == "exact" and not m.invert_match for m in ms)
    assert {m.string_match.exact for m in ms} == {"GET", "HEAD", "OPTIONS"}
