"""The REST API's authentication and tenant scope, end to end over a real unix socket: the real REST server
(SQLite store and registry, the token and pod-credential stores in the state dir) and the real client."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from mizzen.ca.identity import PodIdentity
from mizzen.client import ApiClient, HttpError, unix_request
from mizzen.model.types import Instance
from mizzen.server.auth_tokens import ADMIN, TENANT, TokenRecord, issue
from tests.authkit import admin_token
from tests.cli.conftest import Mesh

SRC = str(Path(__file__).resolve().parents[2] / "src")

SHOP = """
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {selector: {app: cart}, ports: [{port: 8080, name: http}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: shop}
spec: {host: cart, subsets: [{name: v1, labels: {version: v1}}]}
"""
BANK = """
apiVersion: v1
kind: Service
metadata: {name: ledger, namespace: bank}
spec: {selector: {app: ledger}, ports: [{port: 9090, name: http}]}
"""
VS_OWN = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart]
  http: [{route: [{destination: {host: cart, subset: v1}}], timeout: 2s}]
"""


def doc(kind: str, name: str, ns: str, spec: str = "{}", api: str = "networking.istio.io/v1") -> str:
    return f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"


@pytest.fixture
def mesh(tmp_path) -> Iterator[Mesh]:
    m = Mesh(tmp_path / "mesh").start()
    yield m
    m.stop()


class Env:
    def __init__(self, mesh: Mesh):
        self.mesh = mesh
        self.sock = str(mesh.state_dir / "api.sock")
        self.admin = self.client(admin_token(mesh.state_dir))
        self.admin.apply([("shop.yaml", SHOP), ("bank.yaml", BANK)])
        self.mesh.core.upsert_instance(inst("shop", "cart-0", "cart").to_dict())
        self.mesh.core.upsert_instance(inst("bank", "ledger-0", "ledger").to_dict())
        self.mesh.services = [{"name": "cart", "namespace": "shop"}, {"name": "ledger", "namespace": "bank"}]
        self.mesh.proxies = [{"id": "sidecar~10.244.0.2~cart-0.shop~shop.svc.cluster.local", "namespace": "shop"},
                             {"id": "sidecar~10.244.0.3~ledger-0.bank~bank.svc.cluster.local", "namespace": "bank"}]
        for p in self.mesh.proxies:
            self.mesh.sent[(p["id"], "CDS")] = {"resources": [p["namespace"]]}

    def client(self, token: Any) -> ApiClient:
        return ApiClient(addresses=[f"unix:{self.sock}"], token=token, timeout=10)

    def token(self, *namespaces: str, read_only: bool = False, expires: float | None = None) -> str:
        return issue(self.mesh.security.tokens, TokenRecord("", TENANT, tuple(namespaces), read_only,
                                                           created=1.0, expires=expires))[0]

    def pod_token(self, ns: str, pod: str, workload: str, sa: str = "default") -> str:
        return self.mesh.security.pods.issue(PodIdentity(f"{ns}.{pod}", ns, sa, workload))

    def raw(self, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        status, body = unix_request(self.sock, method, path, headers=headers, timeout=10)
        return status, json.loads(body)


def inst(ns: str, pod: str, workload: str, sa: str = "default") -> Instance:
    return Instance(id=f"{ns}.{pod}", namespace=ns, workload=workload, address="10.244.0.9", ports=(8080,),
                    labels=(("app", workload),), service_account=sa)


@pytest.fixture
def env(mesh) -> Env:
    return Env(mesh)


def refused(status: int, fn: Any, *args: Any, **kw: Any) -> HttpError:
    with pytest.raises(HttpError) as e:
        fn(*args, **kw)
    assert e.value.status == status, (e.value.status, e.value.body)
    return e.value


# ------------------------------------------------------------------------------------------- authentication
def test_no_bad_revoked_or_expired_token_is_401(env):
    st, body = env.raw("GET", "/api/v1/resources")
    assert st == 401 and "authentication required" in body["message"]
    st, _ = env.raw("GET", "/api/v1/resources", {"Authorization": "Bearer mzt_not-a-real-token-at-all-xxxxx"})
    assert st == 401
    st, _ = env.raw("GET", "/api/v1/resources", {"Authorization": "Basic YWRtaW46YWRtaW4="})
    assert st == 401
    assert env.raw("GET", "/healthz")[0] == 200  # health stays open (it says ready or not, nothing else)

    tok = env.token("shop")
    assert env.client(tok).list_resources() != []
    rec = next(r for r in env.admin.request("GET", "/api/v1/tokens")["items"] if r["role"] == "tenant")
    env.admin.request("DELETE", f"/api/v1/tokens/{rec['id']}")
    assert "invalid or revoked" in str(refused(401, env.client(tok).list_resources))

    expired = env.token("shop", expires=10.0)  # in 1970
    assert "expired" in str(refused(401, env.client(expired).list_resources))


def test_a_client_without_a_readable_credential_says_how_to_give_one(env, tmp_path):
    e = refused(401, ApiClient(str(tmp_path / "elsewhere"), addresses=[f"unix:{env.sock}"]).list_resources)
    assert "cannot read" in str(e) and "--token" in str(e)


# ------------------------------------------------------------------------------------------------- tenants
def test_a_tenant_reads_only_its_namespaces(env):
    shop = env.client(env.token("shop"))
    assert {(d["metadata"]["namespace"], d["kind"]) for d in shop.list_resources()} == {
        ("shop", "Service"), ("shop", "DestinationRule")}
    assert shop.get_resource("svc", "shop", "cart")["metadata"]["name"] == "cart"
    e = refused(403, shop.list_resources, "Service", "bank")
    assert "namespace bank is not one of the namespaces of token" in str(e)
    refused(403, shop.get_resource, "Service", "bank", "ledger")
    assert [i["id"] for i in shop.instances()] == ["shop.cart-0"]
    assert [s["name"] for s in shop.services()] == ["cart"]
    assert [p["namespace"] for p in shop.proxies()] == ["shop"]
    bank_proxy = env.mesh.proxies[1]["id"]
    assert "namespace bank" in str(refused(403, shop.proxy_resources, bank_proxy, "CDS"))
    assert shop.proxy_resources(env.mesh.proxies[0]["id"], "CDS") == {"resources": ["shop"]}
    # the admin sees everything
    assert {i["id"] for i in env.admin.instances()} == {"shop.cart-0", "bank.ledger-0"}


def test_a_tenant_changes_only_its_namespaces_all_or_nothing(env):
    shop = env.client(env.token("shop", "shop-dev"))
    rev = env.mesh.store.revision
    assert shop.apply([("vs.yaml", VS_OWN)])["applied"][0]["action"] == "created"
    assert env.mesh.store.revision == rev + 1
    rev = env.mesh.store.revision
    mixed = VS_OWN.replace("timeout: 2s", "timeout: 3s") + "---\n" + doc("DestinationRule", "ledger", "bank",
                                                                        "{host: ledger}")
    e = refused(403, shop.apply, [("mixed.yaml", mixed)])
    assert e.body["denied"] == [{"kind": "DestinationRule", "namespace": "bank", "name": "ledger",
                                 "reason": "namespace bank is not one of this token's namespaces (shop, shop-dev)"}]
    assert "nothing was changed" in str(e)
    assert env.mesh.store.revision == rev  # the VirtualService of the same apply was not changed either
    assert "2s" in json.dumps(env.admin.get_resource("vs", "shop", "cart"))
    # documents without a namespace land in -n's namespace, checked as such
    refused(403, shop.apply, [("x.yaml", VS_OWN.replace("namespace: shop", "namespace: bank"))])
    refused(403, shop.apply, [("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")])
    mesh_wide = doc("Sidecar", "default", "istio-system", "{egress: [{hosts: [./*]}]}")
    e = refused(403, shop.apply, [("mesh.yaml", mesh_wide)])
    assert "root namespace" in e.body["denied"][0]["reason"]
    # deletes: by name and by file, all-or-nothing
    refused(403, shop.delete_resource, "Service", "bank", "ledger")
    refused(403, shop.delete_files, [("both.yaml", VS_OWN + "---\n" + BANK)])
    assert env.admin.get_resource("vs", "shop", "cart") and env.admin.get_resource("svc", "bank", "ledger")
    assert shop.delete_resource("VirtualService", "shop", "cart")["revision"] > rev


def test_read_only_and_pod_credentials_change_no_config(env):
    ro = env.client(env.token("shop", read_only=True))
    assert ro.list_resources("Service", "shop")
    assert "read-only" in str(refused(403, ro.apply, [("vs.yaml", VS_OWN)]))
    refused(403, ro.delete_resource, "Service", "shop", "cart")
    pod = env.client(env.pod_token("shop", "cart-0", "cart"))
    refused(403, pod.apply, [("vs.yaml", VS_OWN)])
    refused(403, pod.list_resources)
    refused(403, pod.proxies)


def test_foreign_hosts_and_app_uids_are_refused_for_tenants(env):
    shop = env.client(env.token("shop"))
    cases = {
        "VirtualService": doc("VirtualService", "steal", "shop", "{hosts: [ledger.bank.svc.cluster.local], http: "
                                                                   "[{route: [{destination: {host: cart}}]}]}"),
        "DestinationRule": doc("DestinationRule", "steal", "shop", "{host: ledger.bank}"),
        "ServiceEntry": doc("ServiceEntry", "api", "shop", "{hosts: [api.example.com], ports: [{number: 443, "
                                                           "name: tls, protocol: TLS}], resolution: DNS}"),
        "Workload": doc("Workload", "w", "shop", "{command: [sh], securityContext: {runAsUser: 0}}",
                        api="mizzen.dev/v1"),
    }
    for kind, text in cases.items():
        e = refused(403, shop.apply, [(f"{kind}.yaml", text)])
        reason = e.body["denied"][0]["reason"]
        assert ("securityContext" in reason) if kind == "Workload" else ("other tenants' proxies" in reason), reason
    # the admin may; and a tenant may re-apply what the admin set
    env.admin.apply([("w.yaml", cases["Workload"])])
    shop.apply([("w.yaml", cases["Workload"].replace("command: [sh]", "command: [sh, -c, exit]"))])
    refused(403, shop.apply, [("w.yaml", cases["Workload"].replace("runAsUser: 0", "runAsUser: 5"))])


# ---------------------------------------------------------------------------------------------- instances
def test_only_a_pods_own_credential_registers_its_instance(env):
    tenant = env.client(env.token("shop"))
    assert "registering or withdrawing" in str(refused(403, tenant.put_instance, inst("shop", "fake-0", "cart")))
    refused(403, tenant.delete_instance, "shop.cart-0")
    pod = env.client(env.pod_token("shop", "cart-1", "cart", sa="cart"))
    assert pod.put_instance(inst("shop", "cart-1", "cart", sa="cart"))["ok"]
    refused(403, pod.put_instance, inst("shop", "cart-2", "cart", sa="cart"))  # another pod
    refused(403, pod.put_instance, inst("shop", "cart-1", "cart", sa="admin"))  # another identity
    refused(403, pod.put_instance, inst("shop", "cart-1", "ledger", sa="cart"))  # another workload
    refused(403, pod.delete_instance, "shop.cart-0")
    assert pod.delete_instance("shop.cart-1")["removed"] is True
    # a revoked pod credential (the pod was deleted) is refused
    env.admin.revoke_credential("shop.cart-1")
    refused(401, pod.put_instance, inst("shop", "cart-1", "cart", sa="cart"))
    assert env.admin.put_instance(inst("bank", "ledger-9", "ledger"))["ok"]  # the runner (admin) may


# ------------------------------------------------------------------------------------------------- tokens
def test_token_management_is_admin_only(env):
    tenant = env.client(env.token("shop"))
    e = refused(403, tenant.request, "POST", "/api/v1/tokens", {"namespaces": ["shop"]})
    assert "needs the admin credential" in str(e)
    refused(403, tenant.request, "GET", "/api/v1/tokens")
    refused(403, tenant.request, "POST", "/api/v1/credentials", {"pod": "shop.x", "namespace": "shop"})
    assert tenant.request("GET", "/api/v1/whoami") == {"role": "tenant", "id": tenant.request(
        "GET", "/api/v1/whoami")["id"], "name": "", "namespaces": ["shop"], "readOnly": False}

    made = env.admin.request("POST", "/api/v1/tokens", {"namespaces": ["bank"], "readOnly": True, "ttlSeconds": 60,
                                                         "name": "bank auditors"})
    assert made["token"].startswith("mzt_") and made["readOnly"] and made["expires"] - made["created"] == 60
    items = env.admin.request("GET", "/api/v1/tokens")["items"]
    assert all("token" not in i for i in items) and made["id"] in {i["id"] for i in items}
    assert [s["name"] for s in env.client(made["token"]).services()] == ["ledger"]
    for body, field in (({"namespaces": ["istio-system"]}, "namespaces[0]"), ({"namespaces": ["Bad_NS"]},
                        "namespaces[0]"), ({}, "namespaces"), ({"admin": True, "namespaces": ["a"]}, "namespaces"),
                        ({"namespaces": ["a"], "ttlSeconds": -1}, "ttlSeconds"), ({"namespace": ["a"]}, "namespace")):
        e = refused(400, env.admin.request, "POST", "/api/v1/tokens", body)
        assert e.body["errors"][0]["path"] == field, e.body
    boot = next(i for i in items if i["bootstrap"])
    assert "admin credential of a state dir" in str(refused(403, env.admin.request, "DELETE",
                                                            f"/api/v1/tokens/{boot['id']}"))
    second = env.admin.request("POST", "/api/v1/tokens", {"admin": True})
    other = env.client(second["token"])
    assert "making this call" in str(refused(403, other.request, "DELETE", f"/api/v1/tokens/{second['id']}"))
    assert env.admin.request("DELETE", f"/api/v1/tokens/{second['id']}") == {"revoked": second["id"]}
    refused(401, other.services)
    refused(404, env.admin.request, "DELETE", "/api/v1/tokens/tok-nothere")


def test_admin_tokens_and_the_state_dirs_credential(env, tmp_path):
    rec = issue(env.mesh.security.tokens, TokenRecord("", ADMIN, created=1.0))[0]
    assert env.client(rec).request("GET", "/api/v1/whoami")["role"] == "admin"
    # ApiClient(state_dir) uses STATE/admin.token by itself
    assert ApiClient(str(env.mesh.state_dir)).request("GET", "/api/v1/whoami")["role"] == "admin"
    assert Path(env.mesh.state_dir / "admin.token").stat().st_mode & 0o777 == 0o600


def test_routes_not_scoped_are_admin_only_and_unknown_ones_404(env):
    tenant = env.client(env.token("shop"))
    assert "needs the admin credential" in str(refused(403, tenant.request, "GET", "/api/v1/credentials"))
    refused(404, tenant.request, "GET", "/api/v1/no-such-thing")
    assert env.raw("GET", "/api/v1/no-such-thing")[0] == 401  # authentication comes first
    assert "namespace bank" in str(refused(403, tenant.services, "bank"))
    assert "namespace bank" in str(refused(403, tenant.instances, "bank"))
    assert [i["id"] for i in tenant.instances("shop")] == ["shop.cart-0"]


# ------------------------------------------------------------------------------------------------ a pod's app
APP_VIEW = "\n---\n".join([
    VS_OWN,
    doc("Workload", "cart", "shop", "{command: [sh]}", api="mizzen.dev/v1"),
    "apiVersion: v1\nkind: Secret\nmetadata: {name: cart-cert, namespace: shop}\ntype: Opaque\ndata: {a: YQ==}\n",
    doc("VirtualService", "ledger", "bank", "{hosts: [ledger], http: [{route: [{destination: {host: ledger}}]}]}"),
    doc("DestinationRule", "ledger", "bank", "{host: ledger, exportTo: [.]}"),
    doc("Sidecar", "default", "bank", "{egress: [{hosts: [./*]}]}"),
    doc("AuthorizationPolicy", "ledger", "bank", "{selector: {matchLabels: {app: ledger}}, action: DENY, rules: "
                                                 "[{from: [{source: {namespaces: [shop]}}]}]}", api="security.istio.io/v1"),
    doc("Sidecar", "default", "istio-system", "{egress: [{hosts: [./*]}]}"),
])


def app_client(env: Env, token: Any) -> ApiClient:
    return ApiClient(addresses=[f"unix:{env.mesh.state_dir / 'pod-api.sock'}"], token=token, timeout=10)


def test_a_pods_app_reads_what_routes_its_calls_and_changes_nothing(env):
    """An app credential (read-only, bound to pod shop.web-0) on the apps' socket: the routing kinds of its
    namespace, of the root namespace and those other namespaces export to it — not their Secrets, Workloads,
    policy or what they keep to themselves (exportTo: [.]); no writes, no registration; revoked with the pod."""
    env.admin.apply([("more.yaml", APP_VIEW)])
    token = env.mesh.security.pods.issue_app(PodIdentity("shop.web-0", "shop", "default", "web"))
    app = app_client(env, token)
    me = app.request("GET", "/api/v1/whoami")
    assert (me["role"], me["pod"], me["namespace"], me["readOnly"]) == ("app", "shop.web-0", "shop", True)
    seen = {(r["kind"], r["metadata"]["namespace"], r["metadata"]["name"]) for r in app.list_resources()}
    assert seen == {("Service", "shop", "cart"), ("DestinationRule", "shop", "cart"), ("VirtualService", "shop", "cart"),
                    ("Service", "bank", "ledger"), ("VirtualService", "bank", "ledger"),
                    ("Sidecar", "istio-system", "default")}
    assert [r["metadata"]["name"] for r in app.list_resources("VirtualService", "bank")] == ["ledger"]
    assert app.get_resource("VirtualService", "bank", "ledger")["spec"]["hosts"] == ["ledger"]
    for kind, ns, name in (("Workload", "shop", "cart"), ("Secret", "shop", "cart-cert"),
                           ("DestinationRule", "bank", "ledger"), ("Sidecar", "bank", "default"),
                           ("AuthorizationPolicy", "bank", "ledger")):
        assert "is not config that routes the calls" in str(refused(403, app.get_resource, kind, ns, name)), kind
    assert {i["id"] for i in app.instances()} == {"shop.cart-0", "bank.ledger-0"}  # as its Envoy would get them
    refused(403, app.apply, [("vs.yaml", VS_OWN)])
    refused(403, app.delete_resource, "VirtualService", "shop", "cart")
    refused(403, app.put_instance, inst("shop", "web-0", "web"))  # the runner (or an agent) registers pods
    refused(403, app.request, "GET", "/api/v1/tokens")
    env.admin.revoke_credential("shop.web-0")  # the pod went
    refused(401, app.list_resources)


def test_the_apps_socket_takes_app_credentials_only_and_any_uid_reaches_it(env):
    sock = env.mesh.state_dir / "pod-api.sock"
    assert sock.stat().st_mode & 0o777 == 0o666 and (env.mesh.state_dir / "api.sock").stat().st_mode & 0o777 == 0o660
    for token in (admin_token(env.mesh.state_dir), env.token("shop", read_only=True),
                  env.pod_token("shop", "cart-0", "cart")):
        assert "serves pods' apps" in str(refused(403, app_client(env, token).list_resources))
    refused(401, app_client(env, None).list_resources)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as an app's uid")
def test_an_apps_uid_reaches_the_apps_socket_not_the_api_socket():
    base = Path(tempfile.mkdtemp(prefix="mzapps-", dir="/tmp"))  # not under pytest's 0700 tmp dir
    os.chmod(base, 0o755)
    m = Mesh(base / "mesh").start()
    try:
        os.chmod(m.state_dir, 0o755)
        code = ("import sys\nfrom mizzen.client import unix_request\n"
                "for p in sys.argv[1:]:\n"
                "    try:\n        print(unix_request(p, 'GET', '/api/v1/resources', timeout=5)[0])\n"
                "    except OSError as e:\n        print(type(e).__name__)\n")
        out = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", sys.executable,
                              "-c", code, str(m.state_dir / "pod-api.sock"), str(m.state_dir / "api.sock")],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": SRC})
        # it connects to the apps' socket (and, without its credential, is told to authenticate), not to api.sock
        assert out.stdout.split() == ["401", "PermissionError"], out.stdout + out.stderr
    finally:
        m.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_the_sdk_in_a_pod_reads_the_mesh_with_its_apps_credential(env, tmp_path):
    """`mizzen.sdk.Mesh` with $MIZZEN_TOKEN_FILE (as the runner sets it in a pod) dials the apps' socket of
    the state dir with that credential, and gets the view it routes by."""
    from mizzen.sdk import Mesh as SdkMesh

    env.admin.apply([("more.yaml", APP_VIEW)])
    token_file = tmp_path / "token"
    token_file.write_text(env.mesh.security.pods.issue_app(PodIdentity("shop.web-0", "shop", "default", "web")))
    sdk = SdkMesh(state_dir=str(env.mesh.state_dir), namespace="shop", workload="web", token_file=str(token_file))
    try:
        sdk.start(wait=5)
        assert sdk.feed.status()["connected"] and sdk.feed.source == "control-plane", sdk.feed.status()
        assert sdk.feed.mode == "watch" and sdk.feed.version, sdk.feed.status()  # the watch serves apps too
        assert {"cart.shop.svc.cluster.local", "ledger.bank.svc.cluster.local"} <= set(sdk.feed.snapshot.services)
        assert sdk.feed.snapshot.config.virtual_service_for("cart.shop.svc.cluster.local") is not None
    finally:
        sdk.close()


def test_a_gateway_pod_reads_its_namespaces_secrets_and_granted_ones_of_others(env):
    """A gateway pod's agent reads the Secrets its Envoy needs: those of its namespace, and a Secret of another
    namespace only when a ReferenceGrant there lets Gateways of its namespace use that Secret (a Gateway API
    certificateRef across namespaces). A pod that is not a gateway reads no Secret."""
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {{name: {}, namespace: {}}}\ntype: Opaque\ndata: {{a: YQ==}}\n"
    env.admin.apply([("gw.yaml", "apiVersion: mizzen.dev/v1\nkind: Workload\nmetadata: {name: edge, namespace: shop}\n"
                                 "spec: {gateway: true}\n"),
                     ("s.yaml", "---\n".join(secret.format(n, ns) for n, ns in (
                         ("own", "shop"), ("granted", "bank"), ("other", "bank"))))])
    gw = env.client(env.pod_token("shop", "edge-0", "edge"))
    assert gw.get_resource("Secret", "shop", "own")["spec"]["data"] == {"a": "YQ=="}
    refused(403, gw.get_resource, "Secret", "bank", "granted")  # no ReferenceGrant yet
    env.admin.apply([("g.yaml", "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n"
                                "metadata: {name: certs, namespace: bank}\nspec:\n"
                                "  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: shop}]\n"
                                "  to: [{group: '', kind: Secret, name: granted}]\n")])
    assert gw.get_resource("Secret", "bank", "granted")["spec"]["data"] == {"a": "YQ=="}
    refused(403, gw.get_resource, "Secret", "bank", "other")  # the grant names one Secret
    sidecar = env.client(env.pod_token("shop", "cart-0", "cart"))
    refused(403, sidecar.get_resource, "Secret", "shop", "own")
    refused(403, sidecar.get_resource, "Secret", "bank", "granted")
