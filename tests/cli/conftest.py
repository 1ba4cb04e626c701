"""A real control-plane REST server (SqliteStore + EmbeddedRegistry + aiohttp on a unix socket) in a thread,
and a real Envoy with its admin API on a unix pipe, for the CLI tests."""
from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner, Result

from mizzen.client import unix_request
from mizzen.cli.main import build_cli
from mizzen.registry import EmbeddedRegistry
from mizzen.server.core import ControlPlaneCore
from mizzen.server.rest import make_app, serve, serve_apps
from mizzen.store import SqliteStore
from tests.authkit import api_security
from tests.envoy_bin import envoy_binary


class Mesh:
    """The control plane's REST side, serving `<state_dir>/api.sock` (and the apps' `pod-api.sock`) from its own
    event-loop thread.
    `proxies` and `sent` stand in for the ADS server's view (the lead's code)."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.proxies: list[dict[str, Any]] = []
        self.sent: dict[tuple[str, str], Any] = {}
        self.services: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as e:  # surfaced by start()
            self._error = e
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.run_until_complete(self._apps_runner.cleanup())
        self.store.close()
        self.registry.close()
        self.security.close()
        self._loop.close()

    async def _start(self) -> None:
        self.store = SqliteStore(self.state_dir / "store.db")
        self.registry = EmbeddedRegistry(self.state_dir / "registry.db")
        self.core = ControlPlaneCore(self.store, self.registry)
        self.security = api_security(self.state_dir)  # STATE/admin.token: the CLI's default credential
        app = make_app(self.core, auth=self.security.auth, ready=lambda: True, services=lambda: self.services,
                       proxies=lambda: self.proxies, proxy_resources=lambda p, t: self.sent.get((p, t)))
        self._runner = await serve(app, str(self.state_dir / "api.sock"), None)
        apps = make_app(self.core, auth=self.security.auth, ready=lambda: True, services=lambda: self.services,
                        proxies=lambda: self.proxies, proxy_resources=lambda p, t: self.sent.get((p, t)),
                        apps_only=True)  # the pods' apps' socket, as the control plane serves it
        self._apps_runner = await serve_apps(apps, str(self.state_dir / "pod-api.sock"))

    def start(self) -> Mesh:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        self._started.wait(10)
        if self._error:
            raise self._error
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def mesh(tmp_path) -> Iterator[Mesh]:
    m = Mesh(tmp_path / "mesh").start()
    yield m
    m.stop()


class Cli:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.app = build_cli()

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
                 state_dir: bool = True) -> Result:
        """Run `mizzen ARGS --state-dir <mesh>` (without --state-dir when state_dir=False)."""
        full = [*args, "--state-dir", str(self.state_dir)] if state_dir else list(args)
        return CliRunner().invoke(self.app, full, input=input, env=env, catch_exceptions=False)


@pytest.fixture
def cli(mesh) -> Cli:
    return Cli(mesh.state_dir)


BOOTSTRAP = """
admin:
  address: {pipe: {path: "%(admin)s"}}
static_resources:
  listeners:
  - name: virtualInbound
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          route_config:
            name: "9080"
            virtual_hosts:
            - name: reviews.default.svc.cluster.local:9080
              domains: [reviews, "reviews:9080", reviews.default.svc.cluster.local]
              routes:
              - match: {prefix: /}
                route: {cluster: "outbound|9080|v1|reviews.default.svc.cluster.local"}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
    - filter_chain_match: {server_names: [example.com]}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: "outbound|9080|v1|reviews.default.svc.cluster.local"
  clusters:
  - name: "outbound|9080|v1|reviews.default.svc.cluster.local"
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: "outbound|9080|v1|reviews.default.svc.cluster.local"
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 19081}}}
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 19082}}}
  - name: blackhole
    type: STATIC
    connect_timeout: 1s
"""


@pytest.fixture(scope="module")
def envoy_pod(tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """A real Envoy for pod `reviews-v1-0`, admin on `<state>/pods/reviews-v1-0/admin.sock`."""
    state = tmp_path_factory.mktemp("envoy-state")
    pod = state / "pods" / "reviews-v1-0"
    pod.mkdir(parents=True)
    admin = pod / "admin.sock"
    (pod / "envoy.yaml").write_text(BOOTSTRAP % {"admin": admin})
    log = open(pod / "envoy.log", "wb")
    proc = subprocess.Popen([envoy_binary(), "-c", str(pod / "envoy.yaml"), "--disable-hot-restart",
                             "--concurrency", "1", "-l", "warning"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError("envoy exited: " + (pod / "envoy.log").read_text()[-2000:])
            try:
                if os.path.exists(admin) and unix_request(str(admin), "GET", "/ready", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("envoy did not become ready: " + (pod / "envoy.log").read_text()[-2000:])
            time.sleep(0.05)
        yield state, "reviews-v1-0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
