"""`GET /api/v1/watch` (server/watch.py), the SDK's long-poll, on a real unix socket over the real control-plane
core (SqliteStore + EmbeddedRegistry, real tokens), through a real aiohttp client: a watch answers when its
caller's view changes — config or instances it can see — and not on changes it cannot see; it ends after `wait`
with nothing new; waiting requests are bounded; shutting the API down answers them. Every step is ordered by
what the server did (its revisions, its count of quiet wake-ups); timeouts are only hang guards."""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import aiohttp

from mizzen.model.types import Instance
from mizzen.registry import EmbeddedRegistry
from mizzen.server.auth_tokens import TENANT, TokenRecord, issue
from mizzen.server.core import ControlPlaneCore
from mizzen.server.rest import make_app, serve
from mizzen.server.watch import WATCHES, Watches
from mizzen.store import SqliteStore
from tests.authkit import api_security

HANG_GUARD = 20.0


def vs(ns: str, name: str, host: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [{host}]
  http:
  - route: [{{destination: {{host: {host}}}}}]
"""


def inst(ns: str, pod: str) -> dict[str, Any]:
    return Instance(id=f"{ns}.{pod}", namespace=ns, workload=pod.rsplit("-", 1)[0], address="10.244.0.9",
                    ports=(8080,), labels=(("app", pod.rsplit("-", 1)[0]),)).to_dict()


class Api:
    def __init__(self, sock: str, core: ControlPlaneCore, watches: Watches, admin: str, tenant: str):
        self.sock, self.core, self.watches = sock, core, watches
        self.admin, self.tenant = admin, tenant

    async def call(self, method: str, path: str, token: str, **kw: Any) -> tuple[int, Any, Any]:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.sock),
                                         headers={"Authorization": f"Bearer {token}"}) as s:
            async with s.request(method, "http://mesh" + path, **kw) as r:
                return r.status, await r.json(), r.headers

    async def watch(self, token: str, version: str | None = None, wait: str = "60") -> tuple[int, Any]:
        q = {"wait": wait} if version is None else {"version": version, "wait": wait}
        st, body, _ = await self.call("GET", "/api/v1/watch", token, params=q)
        return st, body

    async def apply(self, text: str) -> int:
        st, body, _ = await self.call("POST", "/api/v1/apply", self.admin,
                                      json={"files": [{"name": "x.yaml", "text": text}]})
        assert st == 200, body
        return int(body["revision"])

    async def until(self, cond, what: str) -> None:
        """Wait for a condition the server sets (a hang guard, not a timing goal)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + HANG_GUARD
        while not cond():
            assert loop.time() < end, f"never: {what}"
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def serving(tmp_path, **kw: Any) -> AsyncIterator[tuple[Api, Any]]:
    store = SqliteStore(tmp_path / "store.db")
    registry = EmbeddedRegistry(tmp_path / "registry.db")
    core = ControlPlaneCore(store, registry)
    sec = api_security(tmp_path)
    app = make_app(core, auth=sec.auth, ready=lambda: True, services=lambda: [], proxies=lambda: [],
                   proxy_resources=lambda pid, t: None, **kw)
    runner = await serve(app, str(tmp_path / "api.sock"), None)
    tenant = issue(sec.tokens, TokenRecord("", TENANT, ("shop",), True, created=1.0))[0]
    assert sec.admin is not None
    try:
        yield Api(str(tmp_path / "api.sock"), core, app[WATCHES], sec.admin.token, tenant), runner
    finally:
        await runner.cleanup()
        store.close()
        registry.close()
        sec.close()


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, HANG_GUARD * 2))


def test_a_watch_answers_when_its_callers_view_changes_and_not_before(tmp_path):
    async def main() -> None:
        async with serving(tmp_path) as (api, _):
            r0 = await api.apply(vs("shop", "cart", "cart.shop.svc.cluster.local"))
            st, first = await api.watch(api.tenant)  # no version: the view, at once
            assert st == 200 and first["changed"] and first["revision"] == r0
            assert [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in first["resources"]] == [("shop", "cart")]
            v0 = first["version"]

            pending = asyncio.ensure_future(api.watch(api.tenant, v0))
            await api.until(lambda: api.watches.waiting == 1, "the watch waits")
            # config the tenant cannot see: the watch looks, finds its view unchanged, and keeps waiting
            r1 = await api.apply(vs("bank", "ledger", "ledger.bank.svc.cluster.local"))
            await api.until(lambda: api.watches.quiet_wakes >= 1, "the watch looked at the bank change")
            assert not pending.done() and api.watches.waiting == 1
            # an instance it cannot see: the same
            api.core.upsert_instance(inst("bank", "ledger-0"))
            await api.until(lambda: api.watches.quiet_wakes >= 2, "the watch looked at the bank instance")
            assert not pending.done()
            # its own namespace's instance: the answer, with that instance and the revisions it saw
            api.core.upsert_instance(inst("shop", "cart-0"))
            st, changed = await pending
            assert st == 200 and changed["changed"] and changed["version"] != v0
            assert changed["revision"] == r1 > r0 and changed["registryVersion"] == api.core.registry.version
            assert [i["id"] for i in changed["instances"]] == ["shop.cart-0"]  # the bank one is not shown
            assert [d["metadata"]["name"] for d in changed["resources"]] == ["cart"]

            # config it sees: the next watch (from the version it has) answers with it
            pending = asyncio.ensure_future(api.watch(api.tenant, changed["version"]))
            await api.until(lambda: api.watches.waiting == 1, "the second watch waits")
            r2 = await api.apply(vs("shop", "basket", "basket.shop.svc.cluster.local"))
            st, third = await pending
            assert st == 200 and third["revision"] == r2
            assert sorted(d["metadata"]["name"] for d in third["resources"]) == ["basket", "cart"]
            # a caller that already has the newest view, on any replica or after a restart: the same version
            st, again = await api.watch(api.tenant)
            assert again["version"] == third["version"]
            # the admin sees both namespaces: another view, another version
            st, admin = await api.watch(api.admin)
            assert admin["version"] != third["version"] and len(admin["resources"]) == 3
    run(main())


def test_a_watch_without_a_change_ends_after_wait_with_nothing_new(tmp_path):
    async def main() -> None:
        async with serving(tmp_path) as (api, _):
            await api.apply(vs("shop", "cart", "cart.shop.svc.cluster.local"))
            _, first = await api.watch(api.admin)
            st, body = await api.watch(api.admin, first["version"], wait="200ms")
            assert st == 200 and body == {"version": first["version"], "changed": False,
                                          "revision": first["revision"],
                                          "registryVersion": first["registryVersion"]}
            # an outdated version answers at once, whatever the wait
            st, body = await api.watch(api.admin, "0" * 32, wait="300")
            assert st == 200 and body["changed"] and body["version"] == first["version"]
            for bad in ("soon", "-1", "nan", "inf"):
                st, err = await api.watch(api.admin, first["version"], wait=bad)
                assert st == 400 and err["errors"][0]["path"] == "wait", (bad, err)
    run(main())


def test_waiting_watches_are_bounded_and_a_shutdown_answers_them(tmp_path):
    async def main() -> None:
        async with serving(tmp_path, max_watchers=1) as (api, runner):
            _, first = await api.watch(api.admin)
            pending = asyncio.ensure_future(api.watch(api.admin, first["version"]))
            await api.until(lambda: api.watches.waiting == 1, "the first watch waits")
            st, body, headers = await api.call("GET", "/api/v1/watch", api.admin,
                                               params={"version": first["version"], "wait": "60"})
            assert st == 429 and body["maxWatchers"] == 1 and headers["Retry-After"] == "5", body
            st, now = await api.watch(api.admin)  # a read without a version never waits: always served
            assert st == 200 and now["version"] == first["version"]
            # a caller that goes away frees its place (the server looks every second)
            pending.cancel()
            await api.until(lambda: api.watches.waiting == 0, "the server lets the gone caller's watch go")
            pending = asyncio.ensure_future(api.watch(api.admin, first["version"]))
            await api.until(lambda: api.watches.waiting == 1, "another watch takes the place")
            # the API shuts down (the control plane stops): the waiting watch answers, nothing new
            await runner.cleanup()
            st, body = await pending
            assert st == 200 and body["changed"] is False and body["version"] == first["version"]
            assert api.watches.waiting == 0
    run(main())
