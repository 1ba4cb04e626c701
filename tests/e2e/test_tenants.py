"""Tokens and tenants on a real mesh (issue 9 §7): the admin credential `mizzen up` writes, a tenant token through
the CLI (403 with the reason outside its namespaces, nothing applied), instance registration only with a pod's
own credential (the agents register with theirs; the runner registers the sidecar-less pod as admin), and apps
as an unprivileged user: from inside a pod, as the app's user, the CA key, the admin credential, the pods'
credentials, the API socket and other pods' sockets are all out of reach — and traffic still flows."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mizzen.client import ApiClient, HttpError
from mizzen.model.types import Instance

from .mesh import ROOT, Mesh, can_run_netns, running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

APP = ROOT / "tests" / "e2e" / "apps" / "policy_app.py"
MESH = textwrap.dedent(f"""\
    apiVersion: v1
    kind: Service
    metadata: {{name: cart, namespace: shop}}
    spec: {{selector: {{app: cart}}, ports: [{{port: 8080, name: http}}]}}
    ---
    apiVersion: mizzen.dev/v1
    kind: Workload
    metadata: {{name: cart, namespace: shop, labels: {{app: cart}}}}
    spec: {{command: [{sys.executable}, {APP}], ports: [{{containerPort: 8080}}], serviceAccount: cart}}
    ---
    apiVersion: v1
    kind: Service
    metadata: {{name: ledger, namespace: bank}}
    spec: {{selector: {{app: ledger}}, ports: [{{port: 8080, name: http}}]}}
    ---
    apiVersion: mizzen.dev/v1
    kind: Workload
    metadata: {{name: ledger, namespace: bank, labels: {{app: ledger}}}}
    spec: {{command: [{sys.executable}, {APP}], ports: [{{containerPort: 8080}}]}}
    ---
    apiVersion: mizzen.dev/v1
    kind: Workload
    metadata: {{name: legacy, namespace: bank, labels: {{app: legacy}}}}
    spec: {{command: [{sys.executable}, {APP}], ports: [{{containerPort: 8080}}], sidecar: false}}
    """)
VS_SHOP = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop}
spec: {hosts: [cart], http: [{route: [{destination: {host: cart}}], timeout: 5s}]}
"""
VS_BANK = VS_SHOP.replace("cart", "ledger").replace("shop", "bank")
VS_STEAL = VS_SHOP.replace("name: cart,", "name: steal,").replace("hosts: [cart]", "hosts: [ledger.bank]")

# run inside a pod as the app's user: what can it reach? (one line per probe: "<name> ok|denied|<error>")
PROBE = textwrap.dedent("""\
    import json, os, socket, sys, urllib.request
    state, me, other = sys.argv[1], sys.argv[2], sys.argv[3]
    def attempt(name, fn):
        try:
            fn()
            print(name, "ok")
        except PermissionError:
            print(name, "denied")
        except Exception as e:
            print(name, type(e).__name__)
    def read(p):
        return lambda: open(p, "rb").read()
    def connect(p):
        def f():
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(p)
            finally:
                s.close()
        return f
    print("uid", os.getuid(), os.getgid(), os.getgroups())
    attempt("ca-key", read(os.path.join(state, "ca", "ca-key.pem")))
    attempt("admin-token", read(os.path.join(state, "admin.token")))
    attempt("tokens-db", read(os.path.join(state, "tokens.db")))
    attempt("own-credential", read(os.path.join(state, "pods", me, "secrets", "token")))
    attempt("other-credential", read(os.path.join(state, "pods", other, "secrets", "token")))
    attempt("list-state-dir", lambda: os.listdir(state))
    attempt("api-sock", connect(os.path.join(state, "api.sock")))
    attempt("other-envoy-admin", connect(os.path.join(state, "pods", other, "admin.sock")))
    attempt("other-agent", connect(os.path.join(state, "pods", other, "agent.sock")))
    attempt("home", lambda: open(os.path.join(os.environ["HOME"], "scratch"), "w").write("x"))
    attempt("call-ledger", lambda: urllib.request.urlopen("http://ledger.bank:8080/", timeout=10).read())
    attempt("own-app-credential", read(os.environ["MIZZEN_TOKEN_FILE"]))  # `mizzen exec` sets it, as for the app
    attempt("pod-api-sock", connect(os.path.join(state, "pod-api.sock")))
    from mizzen.client import unix_request
    token = open(os.environ["MIZZEN_TOKEN_FILE"]).read().strip()
    status, body = unix_request(os.path.join(state, "pod-api.sock"), "GET", "/api/v1/whoami",
                                headers={"Authorization": "Bearer " + token}, timeout=10)
    print("whoami", status, json.loads(body).get("role"), json.loads(body).get("pod"))
    """)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    with running_mesh(tmp_path_factory.mktemp("tenants"), text=MESH) as m:
        # a mesh CA in the state dir (the keys an app must not read), plugged in from a root made offline
        subprocess.run([sys.executable, "-m", "mizzen.cli.main", "ca", "init", "--state-dir", str(m.state_dir)],
                       check=True, capture_output=True, timeout=60)
        assert (m.state_dir / "ca" / "ca-key.pem").exists()
        yield m


def tenant_token(mesh: Mesh, *args: str) -> str:
    return mesh.cli("token", "create", *args).stdout.strip()


def test_up_writes_the_admin_credential_and_closes_the_socket(mesh):
    st = os.stat(mesh.state_dir / "admin.token")
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert stat.S_IMODE(os.stat(mesh.state_dir / "api.sock").st_mode) == 0o660
    assert mesh.cli("token", "whoami").stdout.startswith("admin ")  # the CLI's default: STATE/admin.token
    # every pod registered (agents with their own credentials, `legacy` by the runner)
    ids = {i["id"] for i in ApiClient(str(mesh.state_dir)).instances()}
    assert ids == {"shop.cart-0", "bank.ledger-0", "bank.legacy-0"}


def test_a_tenant_token_through_the_cli(mesh):
    token = tenant_token(mesh, "--namespaces", "shop")
    r = mesh.cli("apply", "-f", "-", "--token", token, input=VS_SHOP)
    assert "virtualservice.networking.istio.io/cart created" in r.stdout
    r = mesh.cli("apply", "-f", "-", "--token", token, input=VS_SHOP + "---\n" + VS_BANK, check=False)
    assert r.returncode == 1 and "Error from server (Forbidden)" in r.stderr
    assert "VirtualService bank/ledger: namespace bank is not one of this token's namespaces (shop)" in r.stderr
    r = mesh.cli("apply", "-f", "-", "--token", token, input=VS_STEAL, check=False)
    assert r.returncode == 1 and "ledger.bank is not a service of this token's namespaces" in r.stderr
    assert mesh.get_json("vs", "-n", "bank")["items"] == []  # nothing of the refused applies landed
    r = mesh.cli("get", "svc", "-n", "bank", "--token", token, check=False)
    assert r.returncode == 1 and "namespace bank is not one of the namespaces of token" in r.stderr
    r = mesh.cli("get", "instances", "-A", "-o", "json", "--token", token)
    assert [i["id"] for i in json.loads(r.stdout)] == ["shop.cart-0"]
    r = mesh.cli("delete", "svc", "ledger", "-n", "bank", "--token", token, check=False)
    assert r.returncode == 1 and "Forbidden" in r.stderr
    assert mesh.cli("delete", "vs", "cart", "-n", "shop", "--token", token).returncode == 0
    # a tenant cannot register instances, not even in its own namespace
    api = ApiClient(str(mesh.state_dir), token=token)
    with pytest.raises(HttpError) as e:
        api.put_instance(Instance("shop.fake-0", "shop", "cart", "10.244.9.9", (8080,), (("app", "cart"),)))
    assert e.value.status == 403 and "pod's own credential" in str(e.value)
    # revoked: refused at once
    tid = next(t["id"] for t in json.loads(mesh.cli("token", "list", "-o", "json").stdout) if t["role"] == "tenant")
    mesh.cli("token", "revoke", tid)
    r = mesh.cli("get", "vs", "-n", "shop", "--token", token, check=False)
    assert r.returncode == 1 and "Unauthorized" in r.stderr


def test_a_pod_credential_registers_only_its_own_pod(mesh):
    cred = (mesh.state_dir / "pods" / "cart-0" / "secrets" / "token").read_text().strip()
    assert stat.S_IMODE(os.stat(mesh.state_dir / "pods" / "cart-0" / "secrets").st_mode) == 0o700
    api = ApiClient(str(mesh.state_dir), token=cred)
    mine = Instance.from_dict(next(i for i in ApiClient(str(mesh.state_dir)).instances() if i["id"] == "shop.cart-0"))
    assert api.put_instance(mine)["ok"]  # what its agent does on every heartbeat
    for fake in (Instance("bank.ledger-0", "bank", "ledger", "10.244.9.9", (8080,), (("app", "ledger"),)),
                 Instance("shop.cart-9", "shop", "cart", "10.244.9.9", (8080,), (("app", "cart"),),
                          service_account="cart")):
        with pytest.raises(HttpError) as e:
            api.put_instance(fake)
        assert e.value.status == 403
    with pytest.raises(HttpError):
        api.delete_instance("bank.legacy-0")
    with pytest.raises(HttpError):
        api.apply([("vs.yaml", VS_SHOP)])


def test_apps_run_as_an_unprivileged_user_and_reach_nothing_of_the_mesh(mesh):
    st = mesh.status()
    pods = {p["name"]: p for p in st["pods"]}
    uid = pods["cart-0"]["runAsUser"]
    assert uid and uid >= 200000 and pods["ledger-0"]["runAsUser"] == uid  # the mesh's app user
    for c in st["components"]:
        if c["kind"] == "app" and c.get("pid"):
            for line in Path(f"/proc/{c['pid']}/status").read_text().splitlines():
                if line.startswith("Uid:"):
                    assert line.split()[1:] == [str(uid)] * 4, (c["name"], line)
    probe = mesh.state_dir.parent / "probe.py"
    probe.write_text(PROBE)
    os.chmod(probe, 0o644)
    p = mesh.exec("cart-0", sys.executable, str(probe), str(mesh.state_dir), "cart-0", "ledger-0")
    assert p.returncode == 0, p.stderr
    got = dict(line.split(" ", 1) for line in p.stdout.strip().splitlines())
    assert got.pop("uid") == f"{uid} {uid} []"
    assert got == {"ca-key": "denied", "admin-token": "denied", "tokens-db": "denied", "own-credential": "denied",
                   "other-credential": "denied", "list-state-dir": "denied", "api-sock": "denied",
                   "other-envoy-admin": "denied", "other-agent": "denied", "home": "ok", "call-ledger": "ok",
                   # its app's own read-only credential, on the apps' socket (what mizzen.sdk uses)
                   "own-app-credential": "ok", "pod-api-sock": "ok", "whoami": "200 app shop.cart-0"}, got
    # `--root` is the operator's way in (e.g. iptables); then the same file is readable
    r = mesh.cli("exec", "cart-0", "--root", "--", "cat", str(mesh.state_dir / "admin.token"))
    assert r.stdout.strip().startswith("mzt_")
