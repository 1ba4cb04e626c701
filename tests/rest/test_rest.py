"""The REST API on a real unix socket, with a real SqliteStore + EmbeddedRegistry, via a real aiohttp client."""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from typing import Any, AsyncIterator

import aiohttp
import pytest

from mizzen.api import Issue
from mizzen.registry import EmbeddedRegistry
from mizzen.server.core import ControlPlaneCore
from mizzen.server.rest import make_app, serve
from mizzen.store import SqliteStore
from tests.authkit import api_security

VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"""
DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
"""
BAD = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 0
    - destination: {host: reviews, subset: v2}
      weight: 0
"""


class Env:
    def __init__(self, tmp: str, session: aiohttp.ClientSession, core: ControlPlaneCore, state: dict[str, Any],
                 auth: Any = None):
        self.tmp, self.session, self.core, self.state, self.auth = tmp, session, core, state, auth

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.request(method, "http://mesh" + path, **kw) as r:
            return r.status, await r.json()


@contextlib.asynccontextmanager
async def running(tmp_path) -> AsyncIterator[Env]:
    store = SqliteStore(tmp_path / "store.db")
    registry = EmbeddedRegistry(tmp_path / "registry.db")
    core = ControlPlaneCore(store, registry)
    state: dict[str, Any] = {"ready": False, "proxies": [], "sent": {}}
    sec = api_security(tmp_path)
    app = make_app(core, auth=sec.auth, ready=lambda: state["ready"],
                   services=lambda: [{"name": "reviews", "namespace": "default", "vip": "10.96.0.10",
                                      "hostname": "reviews.default.svc.cluster.local", "ports": []}],
                   proxies=lambda: state["proxies"],
                   proxy_resources=lambda pid, t: state["sent"].get((pid, t)))
    sock = str(tmp_path / "api.sock")
    runner = await serve(app, sock, None)
    try:
        assert sec.admin is not None
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock),
                                         headers={"Authorization": f"Bearer {sec.admin.token}"}) as session:
            yield Env(str(tmp_path), session, core, state, sec.auth)
    finally:
        await runner.cleanup()
        store.close()
        registry.close()
        sec.close()


def run(coro_fn, tmp_path) -> None:
    async def main() -> None:
        async with running(tmp_path) as env:
            await coro_fn(env)
    asyncio.run(asyncio.wait_for(main(), 20))


def files(*texts: str, ns: str | None = None) -> dict[str, Any]:
    return {"files": [{"name": f"f{i}.yaml", "text": t} for i, t in enumerate(texts)], "namespace": ns}


def test_healthz_503_until_ready(tmp_path):
    async def t(env: Env) -> None:
        assert await env.call("GET", "/healthz") == (503, {"ready": False})
        env.state["ready"] = True
        assert await env.call("GET", "/healthz") == (200, {"ready": True})
    run(t, tmp_path)


def test_socket_mode_and_stale_socket(tmp_path):
    sock = str(tmp_path / "api.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(sock)  # bound, never listening: a leftover from a crashed control plane
    stale.close()

    async def t(env: Env) -> None:
        # no longer world-writable: root (and the API group) connect; a token decides the rest
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
        assert (await env.call("GET", "/healthz"))[0] == 503
        # a second server on the same live socket is refused instead of stealing it
        with pytest.raises(RuntimeError, match="already listening"):
            await serve(make_app(env.core, auth=env.auth, ready=lambda: True, services=list, proxies=list,
                                 proxy_resources=lambda a, b: None), sock, None)
        assert (await env.call("GET", "/healthz"))[0] == 503  # the refused server left ours alone
    run(t, tmp_path)
    assert not os.path.exists(sock)  # a clean stop removes the socket


def test_tcp_listener(tmp_path):
    async def main() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        store, reg = SqliteStore(tmp_path / "s.db"), EmbeddedRegistry(tmp_path / "r.db")
        sec = api_security(tmp_path)
        runner = await serve(make_app(ControlPlaneCore(store, reg), auth=sec.auth, ready=lambda: True,
                                      services=list, proxies=list, proxy_resources=lambda a, b: None), None,
                             ("127.0.0.1", port))
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    assert r.status == 200 and await r.json() == {"ready": True}
        finally:
            await runner.cleanup()
            store.close()
            reg.close()
            sec.close()
    asyncio.run(main())


def test_apply_get_list_delete(tmp_path):
    async def t(env: Env) -> None:
        st, body = await env.call("POST", "/api/v1/apply", json=files(VS, DR))
        assert st == 200, body
        assert body["revision"] == 1
        assert body["applied"] == [
            {"kind": "VirtualService", "namespace": "default", "name": "reviews", "action": "created"},
            {"kind": "DestinationRule", "namespace": "default", "name": "reviews", "action": "created"}]
        st, body = await env.call("POST", "/api/v1/apply", json=files(VS, DR))
        assert [a["action"] for a in body["applied"]] == ["unchanged", "unchanged"] and body["revision"] == 1

        st, doc = await env.call("GET", "/api/v1/resources/VirtualService/default/reviews")
        assert st == 200
        assert doc["spec"]["http"][0]["route"][0]["destination"] == {"host": "reviews", "subset": "v1"}
        assert doc["metadata"]["resourceVersion"] == "1"
        # short names work in URLs too
        assert (await env.call("GET", "/api/v1/resources/vs/default/reviews"))[1] == doc

        st, body = await env.call("GET", "/api/v1/resources", params={"kind": "DestinationRule"})
        assert [d["kind"] for d in body["items"]] == ["DestinationRule"]
        st, body = await env.call("GET", "/api/v1/resources")
        assert len(body["items"]) == 2
        st, body = await env.call("GET", "/api/v1/resources", params={"kind": "vs", "namespace": "other"})
        assert body == {"items": []}

        assert await env.call("DELETE", "/api/v1/resources/vs/default/reviews") == (200, {"revision": 2})
        st, body = await env.call("DELETE", "/api/v1/resources/vs/default/reviews")
        assert st == 404 and body["missing"] == [{"kind": "VirtualService", "namespace": "default", "name": "reviews"}]
        assert (await env.call("GET", "/api/v1/resources/vs/default/reviews"))[0] == 404
    run(t, tmp_path)


def test_reapplying_get_output_is_a_noop(tmp_path):
    async def t(env: Env) -> None:
        await env.call("POST", "/api/v1/apply", json=files(VS))
        _, doc = await env.call("GET", "/api/v1/resources/vs/default/reviews")
        import yaml
        st, body = await env.call("POST", "/api/v1/apply", json=files(yaml.safe_dump(doc)))
        assert st == 200 and body["applied"][0]["action"] == "unchanged", body
    run(t, tmp_path)


def test_invalid_apply_changes_nothing(tmp_path):
    async def t(env: Env) -> None:
        await env.call("POST", "/api/v1/apply", json=files(VS))
        # one good file (a changed VS) and one bad file: nothing is applied
        changed = VS.replace("subset: v1", "subset: v2")
        st, body = await env.call("POST", "/api/v1/apply", json=files(changed, DR, BAD))
        assert st == 400
        assert body["errors"] == [{"message": "total destination weight = 0", "file": "f2.yaml", "document": 0,
                                   "kind": "VirtualService", "namespace": "default", "name": "broken",
                                   "path": "spec.http[0].route"}]
        assert str(Issue(**body["errors"][0])).startswith("f2.yaml (document 1): VirtualService default/broken")
        _, doc = await env.call("GET", "/api/v1/resources/vs/default/reviews")
        assert doc["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v1"
        assert (await env.call("GET", "/api/v1/resources/dr/default/reviews"))[0] == 404
        assert env.core.store.revision == 1
    run(t, tmp_path)


def test_cross_file_duplicate_and_namespace(tmp_path):
    async def t(env: Env) -> None:
        st, body = await env.call("POST", "/api/v1/apply", json=files(VS, VS))
        assert st == 400 and "defined twice" in body["errors"][0]["message"]
        st, body = await env.call("POST", "/api/v1/apply", json=files(VS, ns="shop"))
        assert st == 200 and body["applied"][0]["namespace"] == "shop"
    run(t, tmp_path)


def test_bad_requests(tmp_path):
    async def t(env: Env) -> None:
        st, body = await env.call("POST", "/api/v1/apply", data=b"{nope")
        assert st == 400 and "JSON" in body["errors"][0]["message"]
        st, body = await env.call("POST", "/api/v1/apply", json={"files": "x"})
        assert st == 400 and body["errors"][0]["path"] == "files"
        st, body = await env.call("POST", "/api/v1/apply", json=files("# only a comment\n"))
        assert st == 400 and body["errors"][0]["message"] == "no objects passed to apply"
        st, body = await env.call("GET", "/api/v1/resources", params={"kind": "pods"})
        assert st == 400 and "unknown kind" in body["errors"][0]["message"]
        st, body = await env.call("GET", "/api/v1/nothing-here")
        assert st == 404 and "message" in body
    run(t, tmp_path)


def test_delete_files_all_or_nothing(tmp_path):
    async def t(env: Env) -> None:
        await env.call("POST", "/api/v1/apply", json=files(VS, DR))
        gone = DR.replace("name: reviews", "name: ratings")
        st, body = await env.call("POST", "/api/v1/delete", json=files(VS, gone))
        assert st == 404
        assert body["missing"] == [{"kind": "DestinationRule", "namespace": "default", "name": "ratings"}]
        assert len((await env.call("GET", "/api/v1/resources"))[1]["items"]) == 2
        # delete accepts a file that no longer validates: only kind and name matter
        st, body = await env.call("POST", "/api/v1/delete", json=files(VS.replace("hosts:", "hostz:"), DR))
        assert st == 200, body
        assert body["deleted"] == [{"kind": "VirtualService", "namespace": "default", "name": "reviews"},
                                   {"kind": "DestinationRule", "namespace": "default", "name": "reviews"}]
        assert body["revision"] == 2
        assert (await env.call("GET", "/api/v1/resources"))[1]["items"] == []
    run(t, tmp_path)


def test_a_kind_list_applies_and_deletes_as_its_items(tmp_path):
    """`kubectl get -o yaml` writes a `kind: List`: apply and the lenient delete unwrap it the same way."""
    import yaml

    listed = yaml.safe_dump({"apiVersion": "v1", "kind": "List",
                             "items": [yaml.safe_load(VS), yaml.safe_load(DR)]})

    async def t(env: Env) -> None:
        st, body = await env.call("POST", "/api/v1/apply", json=files(listed))
        assert st == 200 and [a["kind"] for a in body["applied"]] == ["VirtualService", "DestinationRule"], body
        st, body = await env.call("POST", "/api/v1/delete", json=files(listed.replace("hosts:", "hostz:")))
        assert st == 200 and [d["kind"] for d in body["deleted"]] == ["VirtualService", "DestinationRule"], body
    run(t, tmp_path)


def test_validators_reject_the_whole_apply(tmp_path):
    def no_subset_without_rule(new, current):
        rules = {(r.namespace, r.spec.host) for r in [*new, *current] if r.kind == "DestinationRule"}
        return [Issue("subset without a DestinationRule", "<check>", None, r.kind, r.namespace, r.name)
                for r in new if r.kind == "VirtualService" and (r.namespace, "reviews") not in rules]

    async def t(env: Env) -> None:
        env.core.validators.append(no_subset_without_rule)
        st, body = await env.call("POST", "/api/v1/apply", json=files(VS))
        assert st == 400 and body["errors"][0]["message"] == "subset without a DestinationRule"
        assert env.core.store.revision == 0
        assert (await env.call("POST", "/api/v1/apply", json=files(DR)))[0] == 200
        assert (await env.call("POST", "/api/v1/apply", json=files(VS)))[0] == 200  # sees the stored DR
    run(t, tmp_path)


def test_instances(tmp_path):
    inst = {"id": "default.reviews-v1-0", "namespace": "default", "workload": "reviews-v1",
            "address": "10.244.0.2", "ports": [9080], "labels": {"app": "reviews", "version": "v1"}}

    async def t(env: Env) -> None:
        assert await env.call("PUT", "/api/v1/instances/default.reviews-v1-0", json=inst) == \
            (200, {"ok": True, "changed": True})
        v = env.core.registry.version
        assert await env.call("PUT", "/api/v1/instances/default.reviews-v1-0", json=inst) == \
            (200, {"ok": True, "changed": False})
        assert env.core.registry.version == v
        st, body = await env.call("GET", "/api/v1/instances")
        assert [i["id"] for i in body["items"]] == ["default.reviews-v1-0"]
        assert body["items"][0]["labels"] == {"app": "reviews", "version": "v1"}
        st, body = await env.call("PUT", "/api/v1/instances/default.other", json=inst)
        assert st == 400 and body["errors"][0]["path"] == "id"
        st, body = await env.call("PUT", "/api/v1/instances/x", json={"id": "x"})
        assert st == 400 and body["errors"][0]["path"] == "address"
        assert await env.call("DELETE", "/api/v1/instances/default.reviews-v1-0") == \
            (200, {"ok": True, "removed": True})
        assert await env.call("DELETE", "/api/v1/instances/default.reviews-v1-0") == \
            (200, {"ok": True, "removed": False})
        assert (await env.call("GET", "/api/v1/instances"))[1] == {"items": []}
    run(t, tmp_path)


def test_services_and_proxies(tmp_path):
    async def t(env: Env) -> None:
        st, body = await env.call("GET", "/api/v1/services")
        assert body["items"][0]["vip"] == "10.96.0.10"
        pid = "sidecar~10.244.0.2~reviews-v1-0.default~default.svc.cluster.local"
        env.state["proxies"] = [{"id": pid, "connected": True, "types": {}}]
        env.state["sent"][(pid, "CDS")] = {"resources": [{"name": "outbound|9080||reviews"}]}
        assert (await env.call("GET", "/api/v1/proxies"))[1]["items"][0]["id"] == pid
        st, body = await env.call("GET", f"/api/v1/proxies/{pid}/resources", params={"type": "cds"})
        assert st == 200 and body["resources"][0]["name"] == "outbound|9080||reviews"
        st, _ = await env.call("GET", f"/api/v1/proxies/{pid}/resources", params={"type": "LDS"})
        assert st == 404
        st, _ = await env.call("GET", f"/api/v1/proxies/{pid}/resources")
        assert st == 400
    run(t, tmp_path)


def test_long_state_dir_path(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(str(deep / "api.sock")) > 108
    # aiohttp's UnixConnector cannot reach a deep path either: connect through /proc/self/fd
    fd = os.open(deep, os.O_PATH)
    try:
        async def main() -> None:
            store = SqliteStore(deep / "store.db")
            reg = EmbeddedRegistry(deep / "registry.db")
            sec = api_security(tmp_path)
            runner = await serve(make_app(ControlPlaneCore(store, reg), auth=sec.auth, ready=lambda: True,
                                          services=list, proxies=list, proxy_resources=lambda a, b: None),
                                 str(deep / "api.sock"))
            try:
                conn = aiohttp.UnixConnector(path=f"/proc/self/fd/{fd}/api.sock")
                async with aiohttp.ClientSession(connector=conn) as s:
                    async with s.get("http://mesh/healthz") as r:
                        assert r.status == 200
            finally:
                await runner.cleanup()
                store.close()
                reg.close()
                sec.close()
        asyncio.run(main())
    finally:
        os.close(fd)
