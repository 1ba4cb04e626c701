"""Consul ACL tokens are Mizzen API tokens: py-consul (unmodified) with `token=` against the Consul API with ACLs
on, over the real token store. A tenant token registers and sees only its namespaces' services and KV keys."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Iterator

import consul
import pytest
from consul.exceptions import ACLPermissionDenied

from mizzen.consulapi.acl import ConsulAcl
from mizzen.consulapi.kv import SqliteKV
from mizzen.registry import EmbeddedRegistry
from mizzen.server.auth import Authenticator
from mizzen.server.auth_tokens import ADMIN, TENANT, SqliteTokenStore, TokenRecord, issue
from tests.consulapi.conftest import Served, free_port


class Acl:
    def __init__(self, served: Served, tokens: SqliteTokenStore):
        self.served, self.tokens = served, tokens
        self.admin = issue(tokens, TokenRecord("", ADMIN, created=1.0))[0]

    def tenant(self, *namespaces: str, read_only: bool = False) -> str:
        return issue(self.tokens, TokenRecord("", TENANT, tuple(namespaces), read_only, created=1.0))[0]

    def client(self, token: str | None) -> consul.Consul:
        return consul.Consul(host="127.0.0.1", port=self.served.port, token=token)

    def put(self, path: str, body: dict, headers: dict[str, str]) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.served.port}{path}", data=json.dumps(body).encode(),
                                     method="PUT", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()


@pytest.fixture
def acl(tmp_path) -> Iterator[Acl]:
    from mizzen.consulapi.server import ConsulAPI

    registry, kv = EmbeddedRegistry(tmp_path / "registry.db"), SqliteKV(tmp_path / "consul-kv.db")
    tokens = SqliteTokenStore(tmp_path / "tokens.db")
    port = free_port()
    api = ConsulAPI(registry, kv, advertise=f"127.0.0.1:{port}", refresh=1.0,
                    acl=ConsulAcl(Authenticator(tokens).authenticate))
    s = Served(api, registry, kv, port)
    yield Acl(s, tokens)
    s.stop()
    registry.close()
    kv.close()
    tokens.close()


def test_no_token_or_an_unknown_one_is_refused(acl):
    for token in (None, "mzt_unknown-token-aaaaaaaaaaaaaaaaaaaaa"):
        with pytest.raises(ACLPermissionDenied):
            acl.client(token).agent.service.register("web", service_id="web-1", port=8080)
        with pytest.raises(ACLPermissionDenied):
            acl.client(token).catalog.services()
    # all three of Consul's token carriers work
    for headers in ({"X-Consul-Token": acl.admin}, {"Authorization": f"Bearer {acl.admin}"}):
        assert acl.put("/v1/agent/service/register", {"Name": "a", "ID": "a-1"}, headers)[0] == 200
    assert acl.put(f"/v1/agent/service/register?token={acl.admin}", {"Name": "b", "ID": "b-1"}, {})[0] == 200


def test_a_tenant_registers_and_sees_only_its_namespaces(acl):
    admin = acl.client(acl.admin)
    team = acl.client(acl.tenant("default"))
    other = acl.client(acl.tenant("shop"))
    team.agent.service.register("web", service_id="web-1", address="127.0.0.1", port=8080,
                                check=consul.Check.ttl("10s"))
    team.agent.check.ttl_pass("service:web-1")
    # py-consul registers in `default`: a token for `shop` may not
    with pytest.raises(ACLPermissionDenied):
        other.agent.service.register("api", service_id="api-1", port=9090)
    # Consul Enterprise's Namespace field puts it in `shop`
    status, _ = acl.put("/v1/agent/service/register", {"Name": "api", "ID": "api-1", "Port": 9090,
                                                      "Namespace": "shop"}, {"X-Consul-Token": other.token})
    assert status == 200
    assert acl.served.registry.get("shop.consul-api-1") is not None

    assert set(admin.catalog.services()[1]) == {"web", "api"}
    assert set(team.catalog.services()[1]) == {"web"} and set(other.catalog.services()[1]) == {"api"}
    assert [e["Service"]["ID"] for e in team.health.service("web")[1]] == ["web-1"]
    assert other.health.service("web")[1] == []
    assert set(other.agent.services()) == {"api-1"}
    # another tenant's service and checks can be neither deregistered nor updated
    with pytest.raises(ACLPermissionDenied):
        other.agent.service.deregister("web-1")
    with pytest.raises(ACLPermissionDenied):
        other.agent.check.ttl_fail("service:web-1")
    with pytest.raises(ACLPermissionDenied):
        other.agent.maintenance(True)  # node-level: admin only
    assert acl.served.registry.get("default.consul-web-1").healthy is True
    ro = acl.client(acl.tenant("default", read_only=True))
    assert set(ro.catalog.services()[1]) == {"web"}
    with pytest.raises(ACLPermissionDenied):
        ro.agent.service.deregister("web-1")
    team.agent.service.deregister("web-1")
    assert acl.served.registry.get("default.consul-web-1") is None


def test_kv_keys_are_namespaced_by_their_first_segment(acl):
    admin, shop = acl.client(acl.admin), acl.client(acl.tenant("shop"))
    assert admin.kv.put("bank/secret", "42") and admin.kv.put("shop-other/x", "1")
    assert shop.kv.put("shop/config/color", "blue")
    with pytest.raises(ACLPermissionDenied):
        shop.kv.put("bank/secret", "0")
    with pytest.raises(ACLPermissionDenied):
        shop.kv.put("toplevel", "0")
    with pytest.raises(ACLPermissionDenied):
        shop.kv.delete("shop", recurse=True)  # the bare prefix would also take shop-other/...
    assert shop.kv.get("bank/secret")[1] is None
    assert [e["Key"] for e in shop.kv.get("", recurse=True)[1]] == ["shop/config/color"]
    assert shop.kv.get("", keys=True)[1] == ["shop/config/color"]
    assert shop.kv.delete("shop/", recurse=True)
    assert admin.kv.get("bank/secret")[1]["Value"] == b"42" and admin.kv.get("shop-other/x")[1] is not None
