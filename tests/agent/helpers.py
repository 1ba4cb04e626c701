"""Test doubles with real sockets: a minimal grpc.aio ADS server (SotW and Delta), a REST API stand-in on a
unix socket, a tiny app, and an agent subprocess that is always reaped."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import grpc
from aiohttp import web
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, duration_pb2

from mizzen.model.types import CLUSTER, LISTENER

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_tmpdir() -> str:
    """A short path (unix sockets are limited to 107 bytes) that uid 1337 can traverse."""
    d = tempfile.mkdtemp(prefix="mzag-", dir="/tmp")
    os.chmod(d, 0o755)
    return d


def rmtree(d: str) -> None:
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------- xDS resources
def _any(msg: Any) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def app_cluster(name: str, port: int) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.STATIC, connect_timeout=duration_pb2.Duration(seconds=1),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port))))])]))


def http_listener(name: str, port: int, cluster: str) -> listener_pb2.Listener:
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        route_config=route_pb2.RouteConfiguration(name=name, virtual_hosts=[route_components_pb2.VirtualHost(
            name="all", domains=["*"], routes=[route_components_pb2.Route(
                match=route_components_pb2.RouteMatch(prefix="/"),
                route=route_components_pb2.RouteAction(cluster=cluster,
                                                       timeout=duration_pb2.Duration(seconds=30)))])]),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router",
                                         typed_config=_any(router_pb2.Router()))],
    )
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)),
        filter_chains=[listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=_any(hcm))])],
    )


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Answers each stream once per type (SotW or Delta) with fixed resources, but only after `release`."""

    def __init__(self, socket_path: str, resources: dict[str, list[Any]]) -> None:
        self.socket_path = socket_path
        self.resources = resources  # type_url -> messages
        self.release = asyncio.Event()
        self.requests: list[tuple[str, str, str]] = []  # (protocol, type_url, nonce)
        self.acks: list[tuple[str, str]] = []  # (protocol, type_url) acked without error
        self.nacks: list[str] = []
        self.streams = 0
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        self._server = grpc.aio.server()
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, self._server)
        self._server.add_insecure_port("unix:" + self.socket_path)
        await self._server.start()
        os.chmod(self.socket_path, 0o666)  # Envoy may run as uid 1337

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)

    async def StreamAggregatedResources(self, request_iterator, context):  # noqa: N802
        self.streams += 1
        sent: set[str] = set()
        n = 0
        async for req in request_iterator:
            self.requests.append(("sotw", req.type_url, req.response_nonce))
            if req.response_nonce:
                if req.HasField("error_detail") and req.error_detail.message:
                    self.nacks.append(req.error_detail.message)
                else:
                    self.acks.append(("sotw", req.type_url))
                continue
            await self.release.wait()
            if req.type_url in sent or req.type_url not in self.resources:
                continue
            sent.add(req.type_url)
            n += 1
            yield discovery_pb2.DiscoveryResponse(
                version_info="v1", type_url=req.type_url, nonce=str(n),
                resources=[_any(m) for m in self.resources[req.type_url]])

    async def DeltaAggregatedResources(self, request_iterator, context):  # noqa: N802
        self.streams += 1
        sent: set[str] = set()
        n = 0
        async for req in request_iterator:
            self.requests.append(("delta", req.type_url, req.response_nonce))
            if req.response_nonce:
                if req.HasField("error_detail") and req.error_detail.message:
                    self.nacks.append(req.error_detail.message)
                else:
                    self.acks.append(("delta", req.type_url))
                continue
            await self.release.wait()
            if req.type_url in sent or req.type_url not in self.resources:
                continue
            sent.add(req.type_url)
            n += 1
            yield discovery_pb2.DeltaDiscoveryResponse(
                system_version_info="v1", type_url=req.type_url, nonce=str(n),
                resources=[discovery_pb2.Resource(name=m.name, version="v1", resource=_any(m))
                           for m in self.resources[req.type_url]])


def simple_resources(listener_port: int, app_port: int) -> dict[str, list[Any]]:
    return {CLUSTER: [app_cluster("app", app_port)], LISTENER: [http_listener("inbound", listener_port, "app")]}


# ---------------------------------------------------------------------- REST API stand-in and app
class FakeApi:
    """Records instance PUT/DELETE on a unix socket; `on_delete` runs inside the DELETE handler."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.events: list[tuple[float, str, str, Any]] = []  # (monotonic, method, id, body)
        self.on_delete = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_put("/api/v1/instances/{id}", self._put)
        app.router.add_delete("/api/v1/instances/{id}", self._delete)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, self.socket_path).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _put(self, request: web.Request) -> web.Response:
        self.events.append((time.monotonic(), "PUT", request.match_info["id"], await request.json()))
        return web.json_response({"ok": True})

    async def _delete(self, request: web.Request) -> web.Response:
        extra = await self.on_delete() if self.on_delete else None
        self.events.append((time.monotonic(), "DELETE", request.match_info["id"], extra))
        return web.json_response({"ok": True})


async def start_app(port: int, slow_seconds: float = 1.5) -> web.AppRunner:
    async def fast(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(slow_seconds)
        return web.Response(text="slow done")

    app = web.Application()
    app.router.add_get("/", fast)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


# ---------------------------------------------------------------------- the agent under test
def agent_config(d: str, **over: Any) -> dict[str, Any]:
    work = os.path.join(d, "pods", "reviews-v1-0")
    os.makedirs(work, exist_ok=True)
    cfg = {
        "pod": "reviews-v1-0", "namespace": "default", "workload": "reviews-v1",
        "labels": {"app": "reviews", "version": "v1"}, "ip": "127.0.0.1", "ports": [],
        "serviceAccount": "bookinfo-reviews", "interception": "loopback", "outboundPort": free_port(),
        "inboundPort": free_port(), "xdsAddress": "unix:" + os.path.join(d, "xds.sock"),
        "apiAddress": "unix:" + os.path.join(d, "api.sock"), "workDir": work,
        "adminSocket": os.path.join(work, "admin.sock"), "concurrency": 1, "logLevel": "warning",
        "envoyUid": None, "healthHost": "127.0.0.1", "healthPort": 0, "drainSeconds": 3,
        "heartbeatSeconds": 0.5, "register": False, "restartBackoffSeconds": 0.1,
    }
    cfg.update(over)
    with open(os.path.join(work, "agent.json"), "w") as f:
        json.dump(cfg, f)
    return cfg


class AgentProc:
    """`python -m mizzen.agent --config ...` as a child; `close()` reaps it and any Envoy it left."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.work = cfg["workDir"]
        self.state_path = os.path.join(self.work, "agent.state")
        self.stderr_path = os.path.join(self.work, "agent.stderr")
        self.proc: subprocess.Popen[bytes] | None = None
        self.envoy_pids: set[int] = set()

    def start(self) -> "AgentProc":
        env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"))
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mizzen.agent", "--config", os.path.join(self.work, "agent.json")],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env, cwd=self.work)
        return self

    def state(self) -> dict[str, Any] | None:
        try:
            with open(self.state_path) as f:
                st = json.load(f)
        except (OSError, ValueError):
            return None
        if st.get("envoyPid"):
            self.envoy_pids.add(st["envoyPid"])
        return st

    async def wait_state(self, pred, timeout: float = 15.0, what: str = "") -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st = self.state()
            if st is not None and pred(st):
                return st
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode} waiting for {what}:\n{self.log()}")
            await asyncio.sleep(0.02)
        raise AssertionError(f"timeout waiting for {what}; state {self.state()}\n{self.log()}")

    async def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        end = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > end:
                raise AssertionError(f"agent did not exit\n{self.log()}")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def log(self) -> str:
        out = []
        for p in (self.stderr_path, os.path.join(self.work, "envoy.log")):
            try:
                with open(p, errors="replace") as f:
                    out.append(f"==> {p}\n" + f.read()[-4000:])
            except OSError:
                pass
        return "\n".join(out)

    def close(self) -> None:
        self.state()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in self.envoy_pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        # an Envoy killed with its agent leaves its hot-restart shared memory behind
        try:
            with open(os.path.join(self.work, "base-id")) as f:
                os.unlink(f"/dev/shm/envoy_shared_memory_{int(f.read().strip()) * 10}")
        except (OSError, ValueError):
            pass


def pid_alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def proc_uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError("no Uid line")


async def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
        async with s.get(f"http://127.0.0.1:{port}{path}") as r:
            return r.status, await r.text()
