"""AuthorizationPolicy and RequestAuthentication as Mizzen renders them, enforced by a real Envoy on real
requests (loopback mode: one sidecar's inbound listeners in front of an echo app). Tokens are minted with a
real JOSE library (PyJWT). Istio's answers: 403 for a denied request, 401 for an invalid token, a missing
token passes unless a policy requires a request principal."""
from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mizzen.model.authz import Jwks
from tests.translate.authz_harness import SidecarUnderTest

pytestmark = pytest.mark.timeout(120)

ISSUER = "https://issuer.test"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks_of(key) -> str:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    return json.dumps({"keys": [jwk]})


def token(sub: str = "alice", key=KEY, iss: str = ISSUER, **claims) -> str:
    now = int(time.time())
    body = {"iss": iss, "sub": sub, "iat": now, "exp": now + 600, **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})


def bearer(t: str) -> dict[str, str]:
    return {"authorization": f"Bearer {t}"}


def ap(name: str, spec: str, namespace: str = "shop") -> str:
    return f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, " \
           f"namespace: {namespace}}}\nspec:\n{spec}\n---\n"


RA = f"""apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  jwtRules:
  - issuer: {ISSUER}
    jwks: '{jwks_of(KEY)}'
    outputPayloadToHeader: x-jwt-payload
---
"""


def test_no_policy_allows_everything_and_allow_nothing_denies_everything() -> None:
    with SidecarUnderTest("", {8080: "http"}) as s:
        assert s.get("/anything")[0] == 200
    with SidecarUnderTest(ap("allow-nothing", "  {}"), {8080: "http", 9000: "tcp"}) as s:
        status, body = s.get("/anything")
        assert status == 403 and "RBAC: access denied" in body
        assert s.tcp_roundtrip(9000) == b""  # the network RBAC filter closes the TCP connection


def test_path_method_and_header_rules() -> None:
    policy = ap("readers", """  selector: {matchLabels: {app: web}}
  rules:
  - to:
    - operation: {methods: [GET, HEAD], paths: ["/headers", "/status/*"], notPaths: ["/status/500"]}
  - to:
    - operation: {methods: [POST], paths: ["/upload"]}
    when:
    - key: request.headers[x-canary]
      values: ["yes"]""")
    with SidecarUnderTest(policy, {8080: "http"}) as s:
        assert s.get("/headers")[0] == 200
        assert s.get("/status/418")[0] == 200
        assert s.get("/status/500")[0] == 403  # notPaths
        assert s.get("/headers", method="DELETE")[0] == 403  # no rule allows DELETE: default deny
        assert s.get("/other")[0] == 403
        assert s.get("/upload", method="POST")[0] == 403  # `when` not met
        assert s.get("/upload", {"x-canary": "yes"}, method="POST")[0] == 200
        assert s.get("/upload", {"x-canary": "no"}, method="POST")[0] == 403


def test_deny_before_allow_and_ip_blocks() -> None:
    deny = ap("deny-local", """  action: DENY
  rules:
  - from: [{source: {ipBlocks: ["127.0.0.0/8"]}}]
    to: [{operation: {paths: ["/admin*"]}}]""")
    allow_all = ap("allow-all", "  rules: [{}]")
    with SidecarUnderTest(deny + allow_all, {8080: "http"}) as s:
        assert s.get("/")[0] == 200
        assert s.get("/admin/users")[0] == 403  # DENY is evaluated before ALLOW
    other_ip = ap("deny-other", """  action: DENY
  rules: [{from: [{source: {ipBlocks: ["10.0.0.0/8"], notIpBlocks: ["127.0.0.1"]}}]}]""")
    with SidecarUnderTest(other_ip, {8080: "http"}) as s:
        assert s.get("/admin")[0] == 200  # the caller (127.0.0.1) is not in the blocked range


def test_principals_and_namespaces_never_match_without_mtls() -> None:
    policy = ap("by-identity", """  rules:
  - from: [{source: {principals: ["*"]}}]
  - from: [{source: {namespaces: ["shop"]}}]""")
    deny_ns = ap("deny-ns", """  action: DENY
  rules: [{from: [{source: {notNamespaces: ["trusted"]}}]}]""")
    with SidecarUnderTest(policy, {8080: "http"}) as s:
        assert s.get("/")[0] == 403  # a plaintext caller has no peer certificate: no principal, no namespace
    with SidecarUnderTest(deny_ns, {8080: "http"}) as s:
        assert s.get("/")[0] == 403  # NOT(namespace trusted) holds for a caller without identity


def test_http_only_fields_on_a_tcp_port_narrow_allow_and_widen_deny() -> None:
    allow = ap("allow-get", "  rules: [{to: [{operation: {methods: [GET]}}]}]")
    with SidecarUnderTest(allow, {8080: "http", 9000: "tcp"}) as s:
        assert s.get("/")[0] == 200
        assert s.tcp_roundtrip(9000) == b""  # the rule needs HTTP: on TCP it is left out, so nothing is allowed
    deny = ap("deny-delete", """  action: DENY
  rules: [{to: [{operation: {methods: [DELETE]}}]}]""")
    with SidecarUnderTest(deny, {8080: "http", 9000: "tcp"}) as s:
        assert s.get("/")[0] == 200 and s.get("/", method="DELETE")[0] == 403
        assert s.tcp_roundtrip(9000) == b""  # without its HTTP field the DENY rule matches every connection
    scoped = ap("deny-delete-http", """  action: DENY
  rules: [{to: [{operation: {methods: [DELETE], ports: ["8080"]}}]}]""")
    with SidecarUnderTest(scoped, {8080: "http", 9000: "tcp"}) as s:
        assert s.tcp_roundtrip(9000) == b"ping"  # naming the HTTP port keeps TCP traffic out of it


def test_dry_run_and_audit_are_not_enforced() -> None:
    dry = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: try-deny, namespace: shop, annotations: {istio.io/dry-run: "true"}}
spec:
  action: DENY
  rules: [{}]
---
""" + ap("audit-all", "  action: AUDIT\n  rules: [{}]")
    with SidecarUnderTest(dry, {8080: "http"}) as s:
        assert s.get("/")[0] == 200
        stats = s.envoy.admin("/stats?filter=rbac")
        assert "rbac.istio_dry_run_deny_.shadow_denied: 1" in stats, stats
        assert "rbac.allowed: 1" in stats and "rbac.denied: 0" in stats, stats  # AUDIT (LOG) lets it through


def test_jwt_valid_invalid_missing_without_a_policy() -> None:
    with SidecarUnderTest(RA, {8080: "http"}) as s:
        status, body = s.get("/", bearer(token()))
        assert status == 200
        assert "authorization" not in body["headers"]  # forwardOriginalToken is false: not forwarded
        payload = body["headers"]["x-jwt-payload"]  # outputPayloadToHeader (base64url of the payload)
        assert json.loads(jwt.utils.base64url_decode(payload))["sub"] == "alice"
        assert s.get("/", bearer(token(key=OTHER_KEY)))[0] == 401  # bad signature
        assert s.get("/", bearer(token(iss="https://someone.else")))[0] == 401  # unknown issuer
        assert s.get("/", bearer(token(exp=int(time.time()) - 300)))[0] == 401  # expired (beyond the 60 s skew)
        assert s.get("/", {"authorization": "Bearer not.a.jwt"})[0] == 401
        assert s.get("/")[0] == 200  # missing token: passes (no policy requires one)


def test_jwt_required_by_request_principals_gives_403_when_missing() -> None:
    policy = ap("require-jwt", f"""  selector: {{matchLabels: {{app: web}}}}
  rules:
  - from: [{{source: {{requestPrincipals: ["{ISSUER}/*"]}}}}]
    when:
    - key: request.auth.claims[groups]
      values: [readers]""")
    with SidecarUnderTest(RA + policy, {8080: "http"}) as s:
        assert s.get("/", bearer(token(groups=["readers", "x"])))[0] == 200
        assert s.get("/", bearer(token(groups="readers")))[0] == 200  # a string claim works too
        assert s.get("/", bearer(token(groups=["writers"])))[0] == 403
        assert s.get("/")[0] == 403  # missing token: no request principal
        assert s.get("/", bearer(token(key=OTHER_KEY)))[0] == 401  # invalid token: 401 before RBAC
    exact = ap("only-alice", f"""  rules: [{{from: [{{source: {{requestPrincipals: ["{ISSUER}/alice"]}}}}]}}]""")
    with SidecarUnderTest(RA + exact, {8080: "http"}) as s:
        assert s.get("/", bearer(token("alice")))[0] == 200
        assert s.get("/", bearer(token("bob")))[0] == 403


def test_jwks_uri_keys_come_from_the_snapshot_and_unfetched_keys_reject_tokens() -> None:
    ra = RA.replace(f"jwks: '{jwks_of(KEY)}'", "jwksUri: http://127.0.0.1:9/keys")
    with SidecarUnderTest(ra, {8080: "http"}, jwks={"http://127.0.0.1:9/keys": Jwks(jwks_of(KEY))}) as s:
        assert s.get("/", bearer(token()))[0] == 200
    with SidecarUnderTest(ra, {8080: "http"}, jwks={"http://127.0.0.1:9/keys": Jwks("", "fetch failed")}) as s:
        assert s.get("/", bearer(token()))[0] == 401  # no keys yet: tokens of this issuer are rejected
        assert s.get("/")[0] == 200  # a request without one still passes


def test_custom_token_location_and_audiences() -> None:
    ra = RA.replace("    outputPayloadToHeader: x-jwt-payload\n", """    audiences: [shop-api]
    fromHeaders: [{name: x-token, prefix: "Token "}]
    fromParams: [access]
    forwardOriginalToken: true
""")
    with SidecarUnderTest(ra, {8080: "http"}) as s:
        t = token(aud="shop-api")
        status, body = s.get("/", {"x-token": f"Token {t}"})
        assert status == 200 and body["headers"]["x-token"] == f"Token {t}"  # forwarded
        assert s.get(f"/?access={t}")[0] == 200
        # a valid token for another audience: Envoy (so Istio) answers 403 "Audiences in Jwt are not allowed"
        assert s.get("/", {"x-token": f"Token {token(aud='other')}"})[0] == 403
        assert s.get("/", bearer(t))[0] == 200  # the default location is not read: no token seen, passes
