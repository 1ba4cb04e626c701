"""The control plane fetches RequestAuthentication jwksUris itself (a real HTTP server on loopback), inlines the
keys into the sidecars' jwt_authn config, pushes a change of keys, keeps the last good keys when the server
fails, and starts from its cache after a restart."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from mizzen.model.types import LISTENER, Proxy
from mizzen.server.controlplane import ControlPlane, Settings
from mizzen.server.jwks import JwksFetcher
from mizzen.translate.filters.jwt import UNUSABLE_JWKS

KEYS_A = json.dumps({"keys": [{"kty": "RSA", "kid": "a", "n": "AQAB0", "e": "AQAB"}]})
KEYS_B = json.dumps({"keys": [{"kty": "RSA", "kid": "b", "n": "AQAB1", "e": "AQAB"}]})


class JwksServer:
    """An HTTP server on 127.0.0.1 whose answer the test sets (`keys`, `status`), counting requests."""

    def __init__(self) -> None:
        self.keys, self.status, self.requests = KEYS_A, 200, 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> str:
        async def handle(_request: web.Request) -> web.Response:
            self.requests += 1
            return web.Response(text=self.keys, status=self.status, content_type="application/json")

        app = web.Application()
        app.router.add_get("/jwks.json", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}/jwks.json"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def until(cond, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_fetcher_fetches_refreshes_keeps_last_good_and_caches(tmp_path: Path) -> None:
    async def main() -> None:
        srv = JwksServer()
        uri = await srv.start()
        changes = []
        f = JwksFetcher(lambda: changes.append(1), cache_path=str(tmp_path / "cache.json"),
                        refresh_seconds=0.2, retry_min=0.05, retry_max=0.1)
        try:
            f.want({uri: 2.0})
            await until(lambda: f.current.get(uri) is not None and f.current[uri].keys == KEYS_A)
            srv.keys = KEYS_B  # a refresh picks up new keys
            await until(lambda: f.current[uri].keys == KEYS_B)
            srv.status = 500  # a failing server: the last good keys stay, the error is recorded
            await until(lambda: f.current[uri].error != "")
            assert f.current[uri].keys == KEYS_B and "HTTP 500" in f.current[uri].error
            srv.status, srv.keys = 200, "<html>not keys</html>"
            await until(lambda: "not a JSON Web Key Set" in f.current[uri].error)
            srv.keys = KEYS_A
            await until(lambda: f.current[uri].keys == KEYS_A and not f.current[uri].error)
            n = srv.requests
            f.want({})  # no RequestAuthentication names it any more: fetching stops
            await asyncio.sleep(0.5)
            assert srv.requests <= n + 1 and uri not in f.current
        finally:
            await f.close()
            await srv.stop()
        assert changes
        # a new fetcher (a restarted control plane) starts from the cache, before fetching anything
        g = JwksFetcher(lambda: None, cache_path=str(tmp_path / "cache.json"))
        g.preload({uri: 2.0})
        assert g.current[uri].keys == KEYS_A
        await g.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_unreachable_uri_is_an_error_and_no_keys(tmp_path: Path) -> None:
    async def main() -> None:
        srv = JwksServer()
        uri = await srv.start()
        await srv.stop()  # nothing listens there any more
        f = JwksFetcher(lambda: None, retry_min=0.05, retry_max=0.1)
        try:
            f.want({uri: 1.0})
            await until(lambda: uri in f.current and f.current[uri].error)
            assert f.current[uri].keys == "" and uri in f.current[uri].error
        finally:
            await f.close()

    asyncio.run(asyncio.wait_for(main(), 30))


CONFIG = """apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  ports: [{port: 8080, name: http}]
  selector: {app: api}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: api-jwt}
spec:
  selector: {matchLabels: {app: api}}
  jwtRules: [{issuer: "https://issuer.test", jwksUri: "URI", timeout: 2s}]
"""


def jwks_in_view(cp: ControlPlane, proxy: Proxy) -> str | None:
    lst = listener_pb2.Listener.FromString(cp.resources_for(proxy)[LISTENER]["virtualInbound"].payload)
    for fc in lst.filter_chains:
        hcm = hcm_pb2.HttpConnectionManager()
        fc.filters[-1].typed_config.Unpack(hcm)
        for f in hcm.http_filters:
            if f.name == "envoy.filters.http.jwt_authn":
                cfg = jwt_pb2.JwtAuthentication()
                f.typed_config.Unpack(cfg)
                return cfg.providers["origins-0"].local_jwks.inline_string
    return None


def test_control_plane_inlines_fetched_keys_and_pushes_new_ones(tmp_path: Path) -> None:
    proxy = Proxy(id="api", namespace="default", labels=(("app", "api"),), ports=(8080,))

    async def main() -> None:
        srv = JwksServer()
        uri = await srv.start()
        cp = ControlPlane(Settings(tmp_path, debounce_quiet=0.02, debounce_max_wait=0.2))
        cp.core.apply([("c.yaml", CONFIG.replace("URI", uri))])
        await cp.start()
        try:
            await until(lambda: jwks_in_view(cp, proxy) == KEYS_A)
            before = cp.generation
            srv.keys = KEYS_B
            cp.jwks.refresh_seconds = 0.05  # the next refresh comes at once
            for t in cp.jwks._tasks.values():
                t.cancel()
            cp.jwks._tasks.clear()
            cp.jwks.want({uri: 2.0})
            await until(lambda: jwks_in_view(cp, proxy) == KEYS_B)
            assert cp.generation > before
        finally:
            await cp.stop()
            await srv.stop()
        # restarted with the JWKS server down: the cached keys are in the very first snapshot
        cp2 = ControlPlane(Settings(tmp_path))
        await cp2.start()
        try:
            assert jwks_in_view(cp2, proxy) == KEYS_B
        finally:
            await cp2.stop()
        # a fresh state dir and no server: tokens cannot verify until a fetch succeeds
        fresh = tmp_path / "fresh"
        cp3 = ControlPlane(Settings(fresh))
        cp3.core.apply([("c.yaml", CONFIG.replace("URI", uri))])
        await cp3.start()
        try:
            assert jwks_in_view(cp3, proxy) == UNUSABLE_JWKS
        finally:
            await cp3.stop()

    asyncio.run(asyncio.wait_for(main(), 60))
