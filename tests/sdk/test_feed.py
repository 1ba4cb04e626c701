"""The SDK's feed (sdk/feed.py) on the REST API's watch, against a real control-plane REST server (SqliteStore +
EmbeddedRegistry + aiohttp on a unix socket, in a thread) and the real sync client: one request per change and
none in between, polling when the control plane refuses watches, an outage and a restart (same view, same
version: nothing rebuilt), and a stop that does not wait for the watch in flight."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from mizzen.client import ApiClient
from mizzen.model.types import Instance
from mizzen.sdk.feed import Feed
from mizzen.server.rest import make_app, serve, serve_apps
from mizzen.server.watch import WATCHES, Watches
from tests.authkit import api_security
from tests.cli.conftest import Mesh

HANG_GUARD = 20.0
VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %s}
spec:
  hosts: [%s]
  http:
  - route: [{destination: {host: %s}}]
"""


class WatchMesh(Mesh):
    """The CLI tests' in-process control plane, with the watch bound as given."""

    def __init__(self, state_dir: Path, max_watchers: int = 256):
        super().__init__(state_dir)
        self.max_watchers = max_watchers

    async def _start(self) -> None:
        from mizzen.registry import EmbeddedRegistry
        from mizzen.server.core import ControlPlaneCore
        from mizzen.store import SqliteStore

        self.store = SqliteStore(self.state_dir / "store.db")
        self.registry = EmbeddedRegistry(self.state_dir / "registry.db")
        self.core = ControlPlaneCore(self.store, self.registry)
        self.security = api_security(self.state_dir)
        app = make_app(self.core, auth=self.security.auth, ready=lambda: True, services=lambda: [],
                       proxies=lambda: [], proxy_resources=lambda p, t: None, max_watchers=self.max_watchers)
        self.watches: Watches = app[WATCHES]
        self._runner = await serve(app, str(self.state_dir / "api.sock"), None)
        apps = make_app(self.core, auth=self.security.auth, ready=lambda: True, services=lambda: [],
                        proxies=lambda: [], proxy_resources=lambda p, t: None, apps_only=True)
        self._apps_runner = await serve_apps(apps, str(self.state_dir / "pod-api.sock"))

    def apply(self, name: str) -> None:
        self.core.apply([("vs.yaml", VS % (name, name, name))])


def until(cond: Callable[[], Any], what: str) -> None:
    end = time.monotonic() + HANG_GUARD  # a hang guard, not a timing goal
    while not cond():
        assert time.monotonic() < end, f"never: {what}"
        time.sleep(0.01)


def hosts(feed: Feed) -> set[str]:
    return {h for h in ("a", "b", "c") if feed.snapshot.config.virtual_service_for(f"{h}.default.svc.cluster.local")}


def test_the_feed_follows_changes_with_one_watch_each_and_no_request_in_between(tmp_path):
    mesh = WatchMesh(tmp_path / "mesh").start()
    mesh.apply("a")
    feed = Feed(ApiClient(str(mesh.state_dir), timeout=2), interval=0.05, wait=120).start()
    try:
        assert feed.mode == "watch" and feed.source == "control-plane" and hosts(feed) == {"a"}
        until(lambda: mesh.watches.waiting == 1, "the feed's watch waits")
        fetches, generation = feed.fetches, feed.generation
        mesh.apply("b")
        until(lambda: "b" in hosts(feed), "the feed sees b")
        until(lambda: mesh.watches.waiting == 1 and feed.fetches == fetches + 1, "the next watch waits")
        assert feed.generation == generation + 1 and feed.version is not None
        # an instance: the same way (the registry is part of the view)
        mesh.core.upsert_instance(Instance(id="default.a-0", namespace="default", workload="a", address="10.0.0.1",
                                           ports=(8080,), labels=(("app", "a"),)).to_dict())
        until(lambda: feed.generation == generation + 2, "the feed sees the instance")
        until(lambda: mesh.watches.waiting == 1 and feed.fetches == fetches + 2, "the next watch waits")
        assert [i.id for i in feed.snapshot.endpoints.instances] == ["default.a-0"]
        # an apply that changes nothing moves no revision: the watch goes on waiting, no request is made
        mesh.apply("b")
        assert feed.fetches == fetches + 2 and feed.failures == 0
    finally:
        feed.stop()
        mesh.stop()


def test_a_control_plane_that_refuses_watches_is_polled(tmp_path):
    mesh = WatchMesh(tmp_path / "mesh", max_watchers=0).start()  # every waiting watch: 429
    mesh.apply("a")
    feed = Feed(ApiClient(str(mesh.state_dir), timeout=2), interval=0.05).start()
    try:
        until(lambda: feed.mode == "poll", "the feed falls back to polling")
        mesh.apply("b")
        until(lambda: hosts(feed) == {"a", "b"}, "the polling feed sees b")
        assert feed.connected and feed.failures == 0 and mesh.watches.waiting == 0
    finally:
        feed.stop()
        mesh.stop()


def test_an_outage_and_a_restart_keep_the_view_and_a_stop_does_not_wait_for_the_watch(tmp_path):
    state = tmp_path / "mesh"
    mesh = WatchMesh(state).start()
    mesh.apply("a")
    snap_file = tmp_path / "snap.json"
    feed = Feed(ApiClient(str(state), timeout=2), snapshot_file=str(snap_file), interval=0.05, wait=120).start()
    try:
        until(lambda: mesh.watches.waiting == 1, "the feed's watch waits")
        generation, version = feed.generation, feed.version
        mesh.stop()  # the control plane goes away: its shutdown answers the watch, then nothing answers
        until(lambda: not feed.connected, "the feed notices the outage")
        assert hosts(feed) == {"a"} and feed.source == "control-plane" and snap_file.exists()
        mesh = WatchMesh(state).start()  # back, same store: the same view has the same version
        until(lambda: feed.connected and mesh.watches.waiting == 1, "the feed watches again")
        assert (feed.generation, feed.version, feed.mode) == (generation, version, "watch")  # nothing rebuilt
    finally:
        feed.stop()
    # stopped with a watch in flight: the feed returned at once and applies nothing more
    assert mesh.watches.waiting == 1
    mesh.apply("c")
    until(lambda: mesh.watches.waiting == 0, "the watch in flight is answered")
    until(lambda: feed._thread is not None and not feed._thread.is_alive(), "the feed's thread ends")
    assert "c" not in hosts(feed) and feed.generation == generation
    mesh.stop()
