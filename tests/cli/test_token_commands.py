"""`mizzen token ...` and the CLI's credentials (--token, $MIZZEN_TOKEN, the state dir's admin.token) against
the real REST server: a refused call exits non-zero with the server's reason."""
from __future__ import annotations

import json

VS_BANK = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ledger, namespace: bank}
spec: {hosts: [ledger], http: [{route: [{destination: {host: ledger}}]}]}
"""
VS_SHOP = VS_BANK.replace("ledger", "cart").replace("bank", "shop")


def test_token_create_use_list_revoke(cli):
    r = cli("token", "create", "--namespaces", "shop,shop-dev", "--ttl", "12h", "--name", "team shop")
    assert r.exit_code == 0, r.output
    token = r.stdout.strip()
    assert token.startswith("mzt_") and "\n" not in token  # alone on stdout: `export MIZZEN_TOKEN=$(...)`
    assert "namespaces shop, shop-dev" in r.stderr and "shown only now" in r.stderr

    r = cli("token", "whoami", "--token", token)
    assert r.exit_code == 0 and r.stdout.strip().endswith("namespaces shop, shop-dev"), r.output
    assert cli("apply", "-f", "-", "--token", token, input=VS_SHOP).exit_code == 0

    # a refused call: exit 1, the reason, and what was refused
    r = cli("apply", "-f", "-", input=VS_SHOP + "---\n" + VS_BANK, env={"MIZZEN_TOKEN": token})
    assert r.exit_code == 1
    assert "Error from server (Forbidden)" in r.stderr and "nothing was changed" in r.stderr
    assert "VirtualService bank/ledger: namespace bank is not one of this token's namespaces" in r.stderr
    r = cli("get", "vs", "-n", "bank", "--token", token)
    assert r.exit_code == 1 and "namespace bank is not one of the namespaces of token" in r.stderr
    r = cli("get", "vs", "-A", "-o", "json", "--token", token)
    assert [d["metadata"]["namespace"] for d in json.loads(r.stdout)["items"]] == ["shop"]

    r = cli("token", "list", "-o", "json")  # the admin credential, by default
    items = json.loads(r.stdout)
    tenant = next(t for t in items if t["role"] == "tenant")
    assert tenant["name"] == "team shop" and "token" not in tenant
    assert any(t["bootstrap"] for t in items)
    table = cli("token", "list").stdout
    assert tenant["id"] in table and "shop,shop-dev" in table and "(state dir)" in table

    r = cli("token", "create", "--namespaces", "x", "--token", token)
    assert r.exit_code == 1 and "needs the admin credential" in r.stderr
    assert cli("token", "revoke", tenant["id"]).stdout.strip() == f"token {tenant['id']} revoked"
    r = cli("get", "vs", "--token", token)
    assert r.exit_code == 1 and "Error from server (Unauthorized)" in r.stderr and "revoked" in r.stderr


def test_bad_arguments_are_refused_before_any_call(cli):
    r = cli("token", "create")
    assert r.exit_code != 0 and "--namespaces" in r.output
    r = cli("token", "create", "--namespaces", "a", "--ttl", "soon")
    assert r.exit_code != 0 and "a duration such as" in r.output
    r = cli("token", "create", "--namespaces", "istio-system")
    assert r.exit_code == 1 and "root namespace" in r.stderr


def test_without_a_readable_credential_the_cli_says_what_to_do(cli, tmp_path):
    other = tmp_path / "not-the-mesh"
    other.mkdir()
    r = cli("get", "vs", "--state-dir", str(other), "--server", f"unix:{cli.state_dir / 'api.sock'}",
            state_dir=False)
    assert r.exit_code == 1
    assert "Error from server (Unauthorized)" in r.stderr and "cannot read" in r.stderr and "--token" in r.stderr


def test_the_group_takes_the_state_dir_and_token_too(cli):
    token = cli("token", "create", "--namespaces", "shop").stdout.strip()
    r = cli("token", "--state-dir", str(cli.state_dir), "--token", token, "whoami", state_dir=False)
    assert r.exit_code == 0 and "namespaces shop" in r.stdout, r.output
