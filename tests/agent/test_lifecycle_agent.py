"""The agent's lifecycle controls with a real Envoy: withdraw-but-keep-serving (control socket and SIGUSR1),
hot restart of Envoy under keep-alive load, and the app's health reflected in the registration."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import aiohttp
import pytest

from .helpers import (AdsServer, AgentProc, FakeApi, agent_config, free_port, http_get, pid_alive, rmtree,
                      short_tmpdir, simple_resources, start_app)

pytestmark = pytest.mark.timeout(90)


async def _eventually(pred, timeout: float = 15.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timeout: {what}")
        await asyncio.sleep(0.02)


async def _control(cfg: dict, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    sock = os.path.join(cfg["workDir"], "agent.sock")
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock)) as s:
        async with s.request(method, "http://agent" + path, json=body,
                             timeout=aiohttp.ClientTimeout(total=90)) as r:
            return r.status, await r.json(content_type=None)


async def _setup(**over):
    d = short_tmpdir()
    listener_port, app_port = free_port(), free_port()
    ads = AdsServer(os.path.join(d, "xds.sock"), simple_resources(listener_port, app_port))
    ads.release.set()
    await ads.start()
    api = FakeApi(os.path.join(d, "api.sock"))
    await api.start()
    cfg = agent_config(d, register=True, ports=[9080], portMap={"9080": app_port},
                       registerPortMap={"9080": listener_port}, **over)
    return d, listener_port, app_port, ads, api, cfg


@pytest.mark.parametrize("how", ["socket", "SIGUSR1"])
def test_withdraw_keeps_serving_and_drain_skips_the_second_withdrawal(how):
    asyncio.run(_withdraw(how))


async def _withdraw(how: str) -> None:
    d, listener_port, app_port, ads, api, cfg = await _setup(drainSeconds=2)
    app = await start_app(app_port)
    agent = AgentProc(cfg)
    try:
        agent.start()
        await agent.wait_state(lambda s: s.get("registered"), what="registered")
        if how == "socket":
            status, body = await _control(cfg, "POST", "/withdraw")
            assert status == 200 and body["withdrawn"], body
        else:
            agent.proc.send_signal(signal.SIGUSR1)
        await agent.wait_state(lambda s: s.get("withdrawn") and not s.get("registered"), what="withdrawn")
        n = len(api.events)
        assert api.events[-1][1] == "DELETE"
        await asyncio.sleep(1.5)  # heartbeats (0.5 s) have stopped, Envoy still serves
        assert len(api.events) == n, api.events[n:]
        assert await http_get(listener_port, "/") == (200, "hello")
        assert agent.state()["state"] == "ready"
        agent.proc.send_signal(signal.SIGTERM)
        assert await agent.wait_exit() == 0, agent.log()
        assert [e[1] for e in api.events].count("DELETE") == 1
        assert "already withdrawn" in agent.log()
    finally:
        agent.close()
        await app.cleanup()
        await api.stop()
        await ads.stop()
        rmtree(d)


def test_hot_restart_under_keepalive_load_loses_nothing():
    asyncio.run(_hot_restart())


async def _hot_restart() -> None:
    d, listener_port, app_port, ads, api, cfg = await _setup(drainSeconds=1, parentShutdownSeconds=3)
    app = await start_app(app_port)
    agent = AgentProc(cfg)
    ok, errors = 0, []
    stop = asyncio.Event()

    async def client() -> None:
        nonlocal ok
        async with aiohttp.ClientSession() as s:  # keep-alive connections to Envoy's listener
            while not stop.is_set():
                try:
                    async with s.get(f"http://127.0.0.1:{listener_port}/") as r:
                        await r.read()
                        if r.status == 200:
                            ok += 1
                        else:
                            errors.append(r.status)
                except aiohttp.ClientError as e:
                    errors.append(repr(e))
                await asyncio.sleep(0.005)

    try:
        agent.start()
        st = await agent.wait_state(lambda s: s["state"] == "ready" and s.get("registered"), what="ready")
        old_pid = st["envoyPid"]
        assert st["epoch"] == 0
        clients = [asyncio.create_task(client()) for _ in range(4)]
        await asyncio.sleep(0.5)
        status, body = await _control(cfg, "POST", "/hot-restart", {})
        assert status == 200, body
        assert body["epoch"] == 1 and body["envoyPid"] != old_pid
        st = await agent.wait_state(lambda s: s["epoch"] == 1, what="epoch 1 in agent.state")
        assert st["envoyPid"] == body["envoyPid"] and st["state"] == "ready"
        await _eventually(lambda: not pid_alive(old_pid), 20, "the parent Envoy exits after its drain")
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*clients)
        assert errors == [], errors[:10]
        assert ok > 50
        # a second hot restart works too, and the agent still stops cleanly afterwards
        status, body = await _control(cfg, "POST", "/hot-restart", {})
        assert status == 200 and body["epoch"] == 2, body
        agent.proc.send_signal(signal.SIGTERM)
        assert await agent.wait_exit(30) == 0, agent.log()
        assert not pid_alive(body["envoyPid"])
    finally:
        stop.set()
        agent.close()
        await app.cleanup()
        await api.stop()
        await ads.stop()
        rmtree(d)


def test_app_down_is_registered_unhealthy_then_healthy_again():
    asyncio.run(_app_health())


async def _app_health() -> None:
    d, listener_port, app_port, ads, api, cfg = await _setup(heartbeatSeconds=5, appProbeSeconds=0.1)
    app = await start_app(app_port)
    agent = AgentProc(cfg)
    try:
        agent.start()
        await agent.wait_state(lambda s: s.get("registered") and s.get("appUp"), what="registered")
        await app.cleanup()
        app = None
        await _eventually(lambda: any(e[1] == "PUT" and e[3]["healthy"] is False for e in api.events),
                          what="PUT healthy=false")
        assert agent.state()["appUp"] is False
        app = await start_app(app_port)
        await _eventually(lambda: api.events[-1][1] == "PUT" and api.events[-1][3]["healthy"] is True,
                          what="PUT healthy=true")
        agent.proc.send_signal(signal.SIGTERM)
        assert await agent.wait_exit() == 0, agent.log()
    finally:
        agent.close()
        if app is not None:
            await app.cleanup()
        await api.stop()
        await ads.stop()
        rmtree(d)


def test_hot_restart_tries_once_more_when_the_new_envoy_crashes():
    asyncio.run(_hot_restart_crash())


async def _hot_restart_crash() -> None:
    """The new epoch's process dies of SIGSEGV before it serves (a wrapper kills itself on its first run, then
    execs the real Envoy): the old process keeps serving throughout, the agent logs Envoy's crash and starts
    the same epoch once more, and the hot restart succeeds. A binary that crashes every time fails the hot
    restart with the signal in the error, and the old process still serves."""
    from mizzen.envoybin import find_envoy
    d, listener_port, app_port, ads, api, cfg = await _setup(drainSeconds=1, parentShutdownSeconds=3)
    app = await start_app(app_port)
    agent = AgentProc(cfg)
    once, always = os.path.join(d, "crash-once.sh"), os.path.join(d, "crash-always.sh")
    mark = os.path.join(d, "crashed")
    with open(once, "w") as f:
        f.write(f"#!/bin/sh\nif [ ! -e {mark} ]; then : > {mark}; kill -SEGV $$; fi\nexec {find_envoy()} \"$@\"\n")
    with open(always, "w") as f:
        f.write("#!/bin/sh\nkill -SEGV $$\n")
    for p in (once, always):
        os.chmod(p, 0o755)
    try:
        agent.start()
        st = await agent.wait_state(lambda s: s["state"] == "ready" and s.get("registered"), what="ready")
        old_pid = st["envoyPid"]
        status, body = await _control(cfg, "POST", "/hot-restart", {"envoy": always, "timeout": 20})
        assert status != 200 and "(-11)" in json.dumps(body), body
        assert pid_alive(old_pid) and await http_get(listener_port, "/") == (200, "hello")
        assert agent.state()["epoch"] == 0
        assert agent.log().count("starting epoch 1 once more") == 1, agent.log()

        status, body = await _control(cfg, "POST", "/hot-restart", {"envoy": once, "timeout": 30})
        assert status == 200 and body["epoch"] == 1 and body["envoyPid"] != old_pid, body
        assert os.path.exists(mark)
        assert agent.log().count("starting epoch 1 once more") == 2
        await _eventually(lambda: not pid_alive(old_pid), 20, "the parent Envoy exits after its drain")
        assert await http_get(listener_port, "/") == (200, "hello")
    finally:
        agent.close()
        await app.cleanup()
        await api.stop()
        await ads.stop()
        rmtree(d)
