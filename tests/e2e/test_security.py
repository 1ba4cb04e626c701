"""Authorization, end-user authentication and egress control on live traffic, with real Envoy sidecars in
network namespaces (tests/e2e/apps/security-mesh.yaml): AuthorizationPolicy → RBAC (path/method rules,
`when` on a header, allow-nothing, DENY by IP block, mesh-wide blacklists, ALLOW by principal and DENY by
namespace over mTLS), RequestAuthentication → jwt_authn with keys the control plane fetched from a JWKS server
on loopback and tokens minted with PyJWT, and Sidecar `outboundTrafficPolicy: REGISTRY_ONLY`.

The answers are Istio's: 403 for a request a policy denies, 401 for an invalid token, a missing token passes
unless a policy requires a request principal (then 403); REGISTRY_ONLY answers 502 (block_all) for an HTTP
host outside the proxy's scope and closes a TCP connection to a hidden service.
"""
from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path
from typing import Callable

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from .mesh import Mesh, can_run_netns, running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

APPS = Path(__file__).with_name("apps")
REQ = APPS / "req.py"
WEB = "http://web.shop:8080"
ISSUER = "https://issuer.e2e.test"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class JwksServer:
    """A JWKS endpoint on the host's loopback, where the control plane (a host process) fetches keys."""

    def __init__(self) -> None:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
        jwk.update(kid="e2e", alg="RS256", use="sig")
        body = json.dumps({"keys": [jwk]}).encode()
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def token(sub: str = "alice", key=KEY) -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "sub": sub, "iat": now, "exp": now + 3600}, key, algorithm="RS256",
                      headers={"kid": "e2e"})


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    with running_mesh(tmp_path_factory.mktemp("security"), APPS / "security-mesh.yaml", expect=4) as m:
        yield m


@pytest.fixture(autouse=True)
def clean(mesh: Mesh):
    yield
    for kind in ("authorizationpolicies", "requestauthentications", "peerauthentications", "sidecars"):
        for it in mesh.get_json(kind, "-A").get("items", []):
            mesh.cli("delete", kind, it["metadata"]["name"], "-n", it["metadata"]["namespace"])
    mesh.wait_synced()


def req(mesh: Mesh, url: str, *, pod: str = "client", method: str = "GET", headers: dict | None = None) -> dict:
    args = ["python3", str(REQ), url, "--method", method]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    p = mesh.exec(pod, *args, timeout=120)
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def code(r: dict) -> str:
    """The one status code of a single request, or the error's type when none came back."""
    return next(iter(r["status"]), None) or next(iter(r["errors"]), "none")


def until(probe: Callable[[], str], want: str, timeout: float = 30) -> str:
    """Probe until it answers `want` (config pushes are asynchronous); the last answer either way."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def apply(mesh: Mesh, text: str) -> str:
    p = mesh.apply_text(text)
    mesh.wait_synced()
    return p.stdout + p.stderr


def ap(name: str, spec: str, namespace: str = "shop") -> str:
    return f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, " \
           f"namespace: {namespace}}}\nspec:\n{spec}\n"


def pod_ip(mesh: Mesh, workload: str) -> str:
    return next(p["ip"] for p in mesh.status()["pods"] if p["workload"] == workload)


def test_path_method_and_header_rules_default_deny(mesh: Mesh) -> None:
    assert code(req(mesh, f"{WEB}/anything")) == "200"  # no policy: allowed
    apply(mesh, ap("web-readers", """  selector: {matchLabels: {app: web}}
  rules:
  - to: [{operation: {methods: [GET], paths: ["/public/*"]}}]
  - to: [{operation: {methods: [POST], paths: ["/orders"]}}]
    when:
    - key: request.headers[x-order-token]
      values: ["s3cret"]"""))
    assert until(lambda: code(req(mesh, f"{WEB}/private")), "403") == "403"  # an ALLOW policy: default deny
    r = req(mesh, f"{WEB}/private")
    assert r["last"]["body"].startswith("RBAC: access denied"), r
    assert code(req(mesh, f"{WEB}/public/x")) == "200"
    assert code(req(mesh, f"{WEB}/public/x", method="DELETE")) == "403"
    assert code(req(mesh, f"{WEB}/orders", method="POST")) == "403"  # `when` not met
    assert code(req(mesh, f"{WEB}/orders", method="POST", headers={"x-order-token": "s3cret"})) == "200"
    assert code(req(mesh, "http://billing.shop:8080/private")) == "200"  # billing is not selected


def test_allow_nothing_then_allow_all(mesh: Mesh) -> None:
    apply(mesh, ap("allow-nothing", "  selector: {matchLabels: {app: web}}"))
    assert until(lambda: code(req(mesh, f"{WEB}/")), "403") == "403"
    assert code(req(mesh, f"{WEB}/", pod="outsider")) == "403"
    apply(mesh, ap("allow-all", "  selector: {matchLabels: {app: web}}\n  rules: [{}]"))
    assert until(lambda: code(req(mesh, f"{WEB}/")), "200") == "200"  # any ALLOW that matches allows


def test_deny_by_ip_block_per_service_and_mesh_wide(mesh: Mesh) -> None:
    outsider = pod_ip(mesh, "outsider")
    apply(mesh, ap("block-outsider", f"""  selector: {{matchLabels: {{app: web}}}}
  action: DENY
  rules: [{{from: [{{source: {{ipBlocks: ["{outsider}/32"]}}}}]}}]"""))
    assert until(lambda: code(req(mesh, f"{WEB}/", pod="outsider")), "403") == "403"
    assert code(req(mesh, f"{WEB}/")) == "200"  # the client's address is not blocked
    assert code(req(mesh, "http://billing.shop:8080/", pod="outsider")) == "200"  # per service
    # the platform team's blacklist: one DENY in the root namespace covers every workload of the mesh
    apply(mesh, ap("blacklist-ips", f"""  action: DENY
  rules: [{{from: [{{source: {{ipBlocks: ["{outsider}/32"]}}}}]}}]""", namespace="istio-system"))
    assert until(lambda: code(req(mesh, "http://billing.shop:8080/", pod="outsider")), "403") == "403"
    assert code(req(mesh, "http://billing.shop:8080/")) == "200"
    # DENY wins over an ALLOW that matches
    apply(mesh, ap("allow-all", "  rules: [{}]"))
    assert code(req(mesh, f"{WEB}/", pod="outsider")) == "403"


def test_allow_by_principal(mesh: Mesh) -> None:
    r = req(mesh, f"{WEB}/whoami")
    xfcc = json.loads(r["last"]["body"])["headers"].get("x-forwarded-client-cert", "")
    assert "spiffe://cluster.local/ns/shop/sa/client" in xfcc, f"no mTLS between the sidecars: {r}"
    apply(mesh, ap("only-client", """  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]}]"""))
    assert until(lambda: code(req(mesh, f"{WEB}/", pod="outsider")), "403") == "403"
    assert code(req(mesh, f"{WEB}/")) == "200"


def test_deny_by_namespace_mesh_wide(mesh: Mesh) -> None:
    apply(mesh, ap("blacklist-untrusted", """  action: DENY
  rules: [{from: [{source: {namespaces: ["untrusted"]}}]}]""", namespace="istio-system"))
    assert until(lambda: code(req(mesh, f"{WEB}/", pod="outsider")), "403") == "403"
    assert code(req(mesh, "http://billing.shop:8080/", pod="outsider")) == "403"
    assert code(req(mesh, f"{WEB}/")) == "200"


def test_principals_do_not_match_without_mtls(mesh: Mesh) -> None:
    """Until a connection is mTLS, the caller has no principal: a principal ALLOW denies it, as in Istio."""
    apply(mesh, """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: plain, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: DISABLE}
""")
    apply(mesh, ap("only-client", """  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]}]"""))
    assert until(lambda: code(req(mesh, f"{WEB}/")), "403") == "403"


def test_jwt_valid_invalid_missing_and_required(mesh: Mesh) -> None:
    keys = JwksServer()
    try:
        apply(mesh, f"""apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: web-jwt, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  jwtRules:
  - issuer: {ISSUER}
    jwksUri: {keys.uri}
    outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}]
""")
        good = {"authorization": f"Bearer {token()}"}
        assert until(lambda: code(req(mesh, f"{WEB}/", headers=good)), "200") == "200"  # fetched and pushed
        assert keys.requests >= 1  # the control plane fetched the keys; the sidecar never did
        body = json.loads(req(mesh, f"{WEB}/", headers=good)["last"]["body"])
        assert body["headers"].get("x-jwt-sub") == "alice" and "authorization" not in body["headers"]
        bad = {"authorization": f"Bearer {token(key=OTHER_KEY)}"}
        r = req(mesh, f"{WEB}/", headers=bad)
        assert code(r) == "401", r
        assert code(req(mesh, f"{WEB}/", headers={"authorization": "Bearer garbage"})) == "401"
        assert code(req(mesh, f"{WEB}/")) == "200"  # missing: passes without a policy
        apply(mesh, ap("require-jwt", f"""  selector: {{matchLabels: {{app: web}}}}
  rules: [{{from: [{{source: {{requestPrincipals: ["{ISSUER}/*"]}}}}]}}]"""))
        assert until(lambda: code(req(mesh, f"{WEB}/")), "403") == "403"  # missing: now 403
        assert code(req(mesh, f"{WEB}/", headers=good)) == "200"
        assert code(req(mesh, f"{WEB}/", headers=bad)) == "401"
    finally:
        keys.close()


def test_registry_only_blocks_what_the_sidecar_hides(mesh: Mesh) -> None:
    web_ip = pod_ip(mesh, "web")
    # ALLOW_ANY (today's default): a Sidecar hiding billing still lets traffic pass through to it
    apply(mesh, """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: client-egress, namespace: shop}
spec:
  workloadSelector: {labels: {app: client}}
  egress: [{hosts: ["./web.shop.svc.cluster.local"]}]
  outboundTrafficPolicy: {mode: ALLOW_ANY}
""")
    assert code(req(mesh, "http://billing.shop:8080/")) == "200"
    assert code(req(mesh, "http://billing-tcp.shop:9000/")) == "200"
    # REGISTRY_ONLY: a hidden service's name gets 502 (block_all), its TCP VIP a closed connection
    apply(mesh, """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: client-egress, namespace: shop}
spec:
  workloadSelector: {labels: {app: client}}
  egress: [{hosts: ["./web.shop.svc.cluster.local"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
""")
    assert until(lambda: code(req(mesh, "http://billing.shop:8080/")), "502") == "502"
    assert code(req(mesh, "http://billing-tcp.shop:9000/")) not in ("200",)
    assert code(req(mesh, f"{WEB}/")) == "200"
    assert code(req(mesh, "http://billing.shop:8080/", pod="outsider")) == "200"  # other proxies unchanged
    # the mesh-wide default: a Sidecar in the root namespace; pod IPs are outside every proxy's registry
    assert code(req(mesh, f"http://{web_ip}:8080/", pod="outsider")) == "200"
    apply(mesh, """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
""")
    assert until(lambda: code(req(mesh, f"http://{web_ip}:8080/", pod="outsider")), "502") == "502"
    assert code(req(mesh, "http://billing.shop:8080/", pod="outsider")) == "200"  # the registry's hosts work
