"""The agent end to end with a real Envoy: readiness gating on the first CDS/LDS, registration and drain order,
restart of a killed Envoy, and no Envoy left behind when the agent is SIGKILLed."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from mizzen.client.aio import AsyncEnvoyAdmin as AdminClient

from .helpers import (AdsServer, AgentProc, FakeApi, agent_config, free_port, http_get, pid_alive, proc_uid,
                      rmtree, short_tmpdir, simple_resources, start_app)

pytestmark = pytest.mark.timeout(60)
IS_ROOT = os.geteuid() == 0


async def _eventually(pred, timeout: float = 10.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timeout: {what}")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("protocol", ["DELTA_GRPC", "GRPC"])
def test_readiness_gated_on_first_cds_and_lds(protocol):
    # As root, the Delta case runs Envoy as uid 1337 (as in netns mode) to prove the permissions work.
    uid = 1337 if IS_ROOT and protocol == "DELTA_GRPC" else None
    asyncio.run(_readiness(protocol, uid))


async def _readiness(protocol: str, uid: int | None) -> None:
    d = short_tmpdir()
    listener_port, app_port = free_port(), free_port()
    ads = AdsServer(os.path.join(d, "xds.sock"), simple_resources(listener_port, app_port))
    await ads.start()
    app = await start_app(app_port)
    agent = AgentProc(agent_config(d, xdsProtocol=protocol, envoyUid=uid))
    try:
        agent.start()
        st = await agent.wait_state(lambda s: s.get("healthPort") and s.get("envoyPid"), what="envoy started")
        health = st["healthPort"]
        await _eventually(lambda: ads.requests, what="envoy asks the control plane")
        await asyncio.sleep(0.3)
        status, body = await http_get(health, "/healthz/ready")
        assert status == 503, body
        assert agent.state()["state"] == "starting"
        if uid is not None:
            assert proc_uid(st["envoyPid"]) == uid

        ads.release.set()
        st = await agent.wait_state(lambda s: s["state"] == "ready", what="ready")
        status, body = await http_get(health, "/healthz/ready")
        assert status == 200, body
        kinds = {t.rsplit(".", 1)[1] for _, t in ads.acks}
        assert {"Cluster", "Listener"} <= kinds and not ads.nacks
        assert ads.requests[0][0] == ("delta" if protocol == "DELTA_GRPC" else "sotw")
        # the pushed listener really serves: the request reaches the app through Envoy
        assert await http_get(listener_port, "/") == (200, "hello")

        agent.proc.send_signal(signal.SIGTERM)
        assert await agent.wait_exit() == 0, agent.log()
        assert agent.state()["state"] == "stopped"
        assert not pid_alive(st["envoyPid"])
    finally:
        agent.close()
        await app.cleanup()
        await ads.stop()
        rmtree(d)


def test_register_and_drain_order():
    asyncio.run(_drain())


async def _drain() -> None:
    d = short_tmpdir()
    listener_port, app_port = free_port(), free_port()
    ads = AdsServer(os.path.join(d, "xds.sock"), simple_resources(listener_port, app_port))
    ads.release.set()
    await ads.start()
    api = FakeApi(os.path.join(d, "api.sock"))
    cfg = agent_config(d, register=True, ports=[9080], portMap={"9080": app_port},
                       registerPortMap={"9080": listener_port}, drainSeconds=4, withdrawDelaySeconds=0.3)
    admin = AdminClient(cfg["adminSocket"])

    async def envoy_alive_at_delete():
        ok, _ = await admin.ready()
        return {"envoyAnswered": ok}

    api.on_delete = envoy_alive_at_delete
    await api.start()
    agent = AgentProc(cfg)
    app = None
    states: list[str] = []
    try:
        agent.start()
        st = await agent.wait_state(lambda s: s["state"] == "ready", what="ready")
        states.append("ready")
        envoy_pid = st["envoyPid"]
        await asyncio.sleep(0.3)
        assert not api.events, "registered before the app listened"
        app = await start_app(app_port, slow_seconds=1.5)  # the runner starts the app once ready
        await _eventually(lambda: api.events, what="registration PUT")
        _, method, iid, body = api.events[0]
        assert (method, iid) == ("PUT", "default.reviews-v1-0")
        assert body["address"] == "127.0.0.1" and body["ports"] == [9080]
        assert body["portMap"] == {"9080": listener_port} and body["workload"] == "reviews-v1"
        assert body["labels"] == {"app": "reviews", "version": "v1"} and body["healthy"] is True
        await _eventually(lambda: len(api.events) >= 2, what="heartbeat re-PUT")

        # a request in flight through Envoy when SIGTERM arrives must complete
        inflight = asyncio.create_task(http_get(listener_port, "/slow"))
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        while agent.proc.poll() is None:
            s = agent.state()
            if s and s["state"] != states[-1]:
                states.append(s["state"])
                if s["state"] == "draining":
                    status, _ = await http_get(st["healthPort"], "/healthz/ready")
                    assert status == 503
            await asyncio.sleep(0.01)
        assert agent.proc.returncode == 0, agent.log()
        s = agent.state()
        if s["state"] != states[-1]:
            states.append(s["state"])
        assert states == ["ready", "draining", "stopped"]
        assert await inflight == (200, "slow done")
        assert time.monotonic() - t0 < 4 + 5 + 1  # drainSeconds + stop grace + slack

        deletes = [e for e in api.events if e[1] == "DELETE"]
        assert len(deletes) == 1 and deletes[0][2] == "default.reviews-v1-0"
        assert deletes[0][3] == {"envoyAnswered": True}, "Envoy was gone before the withdrawal"
        assert api.events[-1][1] == "DELETE", "a PUT landed after the DELETE"
        assert not pid_alive(envoy_pid)
        log = agent.log()
        order = [log.index(m) for m in ("drain +", "withdrew default.reviews-v1-0", "envoy healthcheck/fail",
                                        "envoy drain_listeners?graceful", "stopping envoy", "envoy exited")]
        assert order == sorted(order), log
    finally:
        agent.close()
        await admin.close()
        if app is not None:
            await app.cleanup()
        await api.stop()
        await ads.stop()
        rmtree(d)


def test_killed_envoy_is_restarted_and_dies_with_the_agent():
    asyncio.run(_restart())


async def _restart() -> None:
    d = short_tmpdir()
    listener_port, app_port = free_port(), free_port()
    ads = AdsServer(os.path.join(d, "xds.sock"), simple_resources(listener_port, app_port))
    ads.release.set()
    await ads.start()
    agent = AgentProc(agent_config(d))
    try:
        agent.start()
        st = await agent.wait_state(lambda s: s["state"] == "ready", what="ready")
        first = st["envoyPid"]
        os.kill(first, signal.SIGKILL)
        st = await agent.wait_state(lambda s: s["state"] == "ready" and s.get("envoyPid") not in (None, first)
                                    and s["restarts"] == 1, what="restarted envoy ready")
        second = st["envoyPid"]
        assert not pid_alive(first)
        assert ads.streams >= 2
        status, _ = await http_get(st["healthPort"], "/healthz/ready")
        assert status == 200
        # SIGKILL the agent: PR_SET_PDEATHSIG takes Envoy down with it
        agent.proc.kill()
        agent.proc.wait(5)
        await _eventually(lambda: not pid_alive(second), timeout=5, what="envoy died with its agent")
    finally:
        agent.close()
        await ads.stop()
        rmtree(d)


def test_registration_retries_until_api_is_up_and_second_signal_cuts_drain_short():
    asyncio.run(_retry_and_hurry())


async def _retry_and_hurry() -> None:
    d = short_tmpdir()
    listener_port, app_port = free_port(), free_port()
    ads = AdsServer(os.path.join(d, "xds.sock"), simple_resources(listener_port, app_port))
    ads.release.set()
    await ads.start()
    app = await start_app(app_port, slow_seconds=20)
    api = FakeApi(os.path.join(d, "api.sock"))
    # no ports: registers as soon as Envoy is ready; a long drain that a second SIGTERM must cut short
    agent = AgentProc(agent_config(d, register=True, ports=[], drainSeconds=30, withdrawDelaySeconds=0))
    try:
        agent.start()
        await agent.wait_state(lambda s: s["state"] == "ready", what="ready")
        await asyncio.sleep(0.7)  # the API is down: PUTs fail and are retried
        await api.start()
        await _eventually(lambda: api.events, what="registration after the API came up")
        assert api.events[0][1] == "PUT" and api.events[0][3]["ports"] == []
        await agent.wait_state(lambda s: s["registered"], what="registered in agent.state")

        inflight = asyncio.create_task(http_get(listener_port, "/slow", timeout=30))
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        await agent.wait_state(lambda s: s["state"] == "draining", what="draining")
        await asyncio.sleep(0.3)
        assert agent.proc.poll() is None, "the drain should wait for the in-flight request"
        agent.proc.send_signal(signal.SIGTERM)
        assert await agent.wait_exit(10) == 0, agent.log()
        assert time.monotonic() - t0 < 5
        assert agent.state()["state"] == "stopped"
        assert "registration failed (will retry)" in agent.log()
        inflight.cancel()
        await asyncio.gather(inflight, return_exceptions=True)
    finally:
        agent.close()
        await app.cleanup()
        await api.stop()
        await ads.stop()
        rmtree(d)
