"""`mizzen.client`: the state-dir layout, and the one failover policy of the sync and asyncio clients against
real HTTP servers on unix sockets (try in order, prefer the replica that answered last, a connection
failure moves on, an HTTP error answer is final, a hung replica eats only its share of the time)."""
from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import pytest
from aiohttp import web

from mizzen.client import ApiClient, HttpError, MeshUnavailable, StateLayout, Unavailable, replica_name
from mizzen.client.aio import AsyncApiClient
from mizzen.model.types import Instance
from mizzen.unixpath import SocketInUse, bind_unix_socket, serve_app


class Replica:
    """A stand-in REST server of one control-plane replica (a real aiohttp server on a unix socket, in a
    thread) that records what it is asked and answers `status`."""

    def __init__(self, path: str, name: str, status: int = 200):
        self.path, self.name, self.status = path, name, status
        self.hits: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits.append(f"{request.method} {request.path}")
        if self.status >= 400:
            return web.json_response({"message": f"{self.name} says no"}, status=self.status)
        return web.json_response({"items": [{"id": f"p~{self.name}", "connected": True}], "by": self.name})

    def start(self) -> "Replica":
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = self._loop.run_until_complete(serve_app(app, self.path, mode=0o600))
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10)
        return self

    def stop(self, leave_socket: bool = False) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if leave_socket:  # as after a SIGKILL: a dead socket file, connections refused
            s = socket.socket(socket.AF_UNIX)
            s.bind(self.path)
            s.close()


@pytest.fixture
def state(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    return str(d)


def test_layout_names_every_file_and_replica(state):
    L = StateLayout(state)
    assert [L.api_socket(i) for i in range(3)] == [f"{state}/api.sock", f"{state}/api-1.sock", f"{state}/api-2.sock"]
    assert L.xds_sockets(2) == [f"{state}/xds.sock", f"{state}/xds-1.sock"]
    assert [replica_name(i) for i in range(3)] == ["controlplane", "controlplane-1", "controlplane-2"]
    assert L.controlplane_log(1) == f"{state}/logs/controlplane-1.log"
    assert L.controlplane_pid(0) == f"{state}/controlplane.pid"
    assert (L.runner_socket, L.runner_pid, L.status_file) == (f"{state}/runner.sock", f"{state}/runner.pid",
                                                             f"{state}/status.json")
    pod = L.pod("web-0")
    assert (pod.agent_json, pod.admin_socket, pod.agent_socket, pod.access_log) == (
        f"{state}/pods/web-0/agent.json", f"{state}/pods/web-0/admin.sock", f"{state}/pods/web-0/agent.sock",
        f"{state}/pods/web-0/access.log")
    with pytest.raises(ValueError):
        L.api_socket(3)
    assert StateLayout("rel").root == os.path.abspath("rel")


def test_sync_client_fails_over_and_prefers_the_replica_that_answered_last(state):
    L = StateLayout(state)
    api = ApiClient(state, timeout=5)
    with pytest.raises(MeshUnavailable, match=f"no mesh running in {state}"):
        api.services()
    r1 = Replica(L.api_socket(1), "r1").start()
    r0 = None
    try:
        assert api.request("GET", "/api/v1/services")["by"] == "r1"  # api.sock absent: replica 1 answers
        r0 = Replica(L.api_socket(0), "r0").start()
        assert api.request("GET", "/api/v1/services")["by"] == "r1"  # the one that answered last first
        r1.stop(leave_socket=True)  # connection refused: on to the next
        assert api.request("GET", "/api/v1/services")["by"] == "r0"
        assert api.request("GET", "/api/v1/services")["by"] == "r0"
        assert r0.hits == ["GET /api/v1/services"] * 2
    finally:
        if r0:
            r0.stop()


def test_an_http_error_answer_is_final(state):
    L = StateLayout(state)
    r0 = Replica(L.api_socket(0), "r0", status=409).start()
    r1 = Replica(L.api_socket(1), "r1").start()
    try:
        with pytest.raises(HttpError) as e:
            ApiClient(state).apply([("f.yaml", "")])
        assert (e.value.status, str(e.value), e.value.body) == (409, "r0 says no", {"message": "r0 says no"})
        assert e.value.request == "POST /api/v1/apply" and r1.hits == []
    finally:
        r0.stop()
        r1.stop()


def test_a_hung_replica_takes_only_its_share_of_the_time(state):
    L = StateLayout(state)
    hung = socket.socket(socket.AF_UNIX)
    hung.bind(L.api_socket(0))
    hung.listen(8)  # accepts connections (the kernel does), never answers
    r1 = Replica(L.api_socket(1), "r1").start()
    try:
        t0 = time.monotonic()
        assert ApiClient(state, timeout=2.0).request("GET", "/healthz")["by"] == "r1"
        assert 0.9 < time.monotonic() - t0 < 1.9  # half of the budget for each of the two
    finally:
        hung.close()
        r1.stop()


def test_a_control_plane_that_does_not_answer_in_time_is_not_reported_as_no_mesh(state):
    """A busy control plane (its socket accepts, nothing answers before the timeout) is not "no mesh running":
    the error says it did not answer in time, and is not MeshUnavailable (callers treat that as offline)."""
    L = StateLayout(state)
    hung = socket.socket(socket.AF_UNIX)
    hung.bind(L.api_socket(0))
    hung.listen(8)
    try:
        with pytest.raises(Unavailable, match="no answer in time") as e:
            ApiClient(state, replicas=1, timeout=0.5).request("GET", "/healthz")
        assert not isinstance(e.value, MeshUnavailable)
    finally:
        hung.close()


def test_proxies_are_merged_across_replicas(state):
    L = StateLayout(state)
    r0, r1 = Replica(L.api_socket(0), "r0").start(), Replica(L.api_socket(1), "r1").start()
    try:
        api = ApiClient(state)
        assert sorted(p["id"] for p in api.proxies()) == ["p~r0", "p~r1"]
        api.proxy_resources("p~r1", "EDS")  # asked where that proxy is connected
        assert r1.hits[-1] == "GET /api/v1/proxies/p~r1/resources"
    finally:
        r0.stop()
        r1.stop()


def test_async_client_shares_the_policy(state):
    L = StateLayout(state)
    inst = Instance(id="default.web-0", namespace="default", workload="web", address="10.244.0.2", ports=(80,))

    async def main() -> None:
        client = AsyncApiClient([f"unix:{L.api_socket(0)}", f"unix:{L.api_socket(1)}"], timeout=3)
        try:
            with pytest.raises(Unavailable):
                await client.put_instance(inst)
            r1 = await asyncio.to_thread(lambda: Replica(L.api_socket(1), "r1").start())
            await client.put_instance(inst)
            assert r1.hits == ["PUT /api/v1/instances/default.web-0"] and client.failover.preferred == 1
            r1.status = 400
            with pytest.raises(HttpError, match="r1 says no"):
                await client.delete_instance(inst.id)
            await asyncio.to_thread(r1.stop)
        finally:
            await client.close()

    asyncio.run(main())


def test_bind_unix_socket_refuses_a_live_server_and_replaces_a_stale_one(state):
    path = os.path.join(state, "x.sock")
    live = bind_unix_socket(path, mode=0o640)
    try:
        assert os.stat(path).st_mode & 0o777 == 0o640
        with pytest.raises(SocketInUse, match="already listening"):
            bind_unix_socket(path)
    finally:
        live.close()
    again = bind_unix_socket(path)  # stale now: nobody listens
    again.close()
    with open(os.path.join(state, "plain"), "w"):
        pass
    with pytest.raises(SocketInUse, match="not a socket"):
        bind_unix_socket(os.path.join(state, "plain"))


def test_deep_state_dirs_work_beyond_sun_path(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    L = StateLayout(str(deep))
    assert len(L.api_socket(0)) > 108
    r0 = Replica(L.api_socket(0), "r0").start()
    try:
        assert ApiClient(str(deep)).request("GET", "/healthz")["by"] == "r0"
    finally:
        r0.stop()



RATELIMIT = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: api, namespace: shop}
spec:
  workloadSelector: {labels: {app: api}}
  mode: global
  limits:
  - {name: per-caller, key: [sourceWorkload], requestsPerUnit: 30, unit: second}
"""


def test_the_rate_limit_service_reads_its_limits_through_the_client(mesh, tmp_path):
    """server/ratelimit_source.ApiSource polls the real REST API with AsyncApiClient."""
    from mizzen.server.ratelimit_source import ApiSource, SourceError

    async def load(source: ApiSource):
        return await source.load()

    down = ApiSource.of_state_dir(str(tmp_path))
    with pytest.raises(SourceError, match="no control-plane API answered"):
        asyncio.run(load(down))
    ApiClient(str(mesh.state_dir)).apply([("rl.yaml", RATELIMIT)])
    source = ApiSource.of_state_dir(str(mesh.state_dir))
    assert source.sockets[0] == str(mesh.state_dir / "api.sock")
    table = asyncio.run(load(source))
    assert table is not None and len(table) == 1
    assert asyncio.run(load(source)) is None  # unchanged since the last load


def _fill_accept_queue(path: str) -> tuple[socket.socket, list[socket.socket]]:
    """A listening unix socket whose accept queue is full: the next connect() fails at once with EAGAIN."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(0)
    pending = []
    while True:
        c = socket.socket(socket.AF_UNIX)
        c.setblocking(False)
        try:
            c.connect(path)
        except BlockingIOError:
            c.close()
            return srv, pending
        pending.append(c)


def test_a_swamped_control_plane_is_retried_until_it_accepts_and_never_called_no_mesh(state):
    """A full accept queue (EAGAIN on connect, seen as a 'no mesh running' at `mizzen up` on a loaded machine)
    is a live, busy server: the client tries again within its timeout; if the queue never drains the error
    says so and is not MeshUnavailable."""
    L = StateLayout(state)
    srv, pending = _fill_accept_queue(L.api_socket(0))
    try:
        with pytest.raises(Unavailable, match="connection queue is full") as e:
            ApiClient(state, replicas=1, timeout=0.6).request("GET", "/healthz")
        assert not isinstance(e.value, MeshUnavailable)

        def drain_then_answer() -> None:  # the server catches up after 0.5 s and answers every connection
            time.sleep(0.5)
            for c in pending:
                c.close()
            srv.settimeout(5)
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                with conn:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    if data:
                        body = b'{"ready": true}'
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
                        return

        t = threading.Thread(target=drain_then_answer, daemon=True)
        t.start()
        assert ApiClient(state, replicas=1, timeout=5.0).request("GET", "/healthz") == {"ready": True}
        t.join(5)
    finally:
        for c in pending:
            c.close()
        srv.close()


def test_a_stale_socket_is_no_mesh_running_at_once(state):
    """A socket file nobody listens on (a SIGKILLed control plane): "no mesh running", without waiting."""
    L = StateLayout(state)
    s = socket.socket(socket.AF_UNIX)
    s.bind(L.api_socket(0))
    s.close()
    t0 = time.monotonic()
    with pytest.raises(MeshUnavailable):
        ApiClient(state, replicas=1, timeout=5.0).request("GET", "/healthz")
    assert time.monotonic() - t0 < 4.0  # not the whole timeout: a hang guard, refused connections end at once
