"""The agent's access-log receiver over a real gRPC stream (unix socket), its directory refresh on unknown
peers, the merged scrape (with a real HTTP server for the app's metrics) and the JSON endpoints."""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile

import grpc
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from mizzen.agent.telemetry import Telemetry, http_get
from mizzen.telemetry.aggregate import SelfInfo
from mizzen.telemetry.envoy import als_log_name
from mizzen.telemetry.peers import Directory, WorkloadInfo
from tests.telemetry.entries import A_IP, INSTANCES, REVIEWS, SERVICES, http_entry

ME = SelfInfo(WorkloadInfo.from_labels("reviews-v1", "default", {"app": "reviews", "version": "v1"}), {9080: REVIEWS})


def _messages(n: int, downstream: str):
    first = als_pb2.StreamAccessLogsMessage()
    first.identifier.log_name = als_log_name("inbound")
    first.http_logs.log_entry.append(http_entry(downstream=downstream, cluster="inbound|9080||"))
    yield first
    for i in range(n - 1):
        m = als_pb2.StreamAccessLogsMessage()
        m.http_logs.log_entry.append(http_entry(downstream=downstream, cluster="inbound|9080||", path=f"/p{i}"))
        yield m


def test_stream_holds_a_new_peer_until_the_refresh_and_serves_the_merged_scrape():
    async def run() -> None:
        d = tempfile.mkdtemp(prefix="mzals-", dir="/tmp")
        calls = []

        async def fetch() -> Directory:
            calls.append(1)
            # the first directory does not know the caller yet (it registered after the agent started)
            return Directory(INSTANCES if len(calls) > 1 else INSTANCES[1:], SERVICES)

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(text="# TYPE app_jobs_total counter\napp_jobs_total 7\n")
        app_metrics = web.Application()
        app_metrics.router.add_get("/metrics", metrics)
        app_srv = TestServer(app_metrics)
        await app_srv.start_server()
        t = Telemetry(ME, os.path.join(d, "als.sock"), fetch_directory=fetch, min_refresh_seconds=1.5,
                      refresh_seconds=60, app_metrics=http_get(str(app_srv.make_url("/metrics"))))
        await t.start()
        try:
            await asyncio.sleep(0.1)
            async with grpc.aio.insecure_channel("unix:" + t.socket_path) as ch:
                await als_pb2_grpc.AccessLogServiceStub(ch).StreamAccessLogs(_messages(3, A_IP))
            # the caller is new: its records wait for the refresh they wake (rate-limited to min_refresh_seconds
            # after the first, at start), not counted as from an unknown workload
            assert t.entries == 3 and t.held_records == 3 and t.agg.unknown_peers == 0
            assert sum(r["requests"] for r in t.agg.window.snapshot(t.clock())["rows"]) == 0
            for _ in range(120):
                if len(calls) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert len(calls) == 2
            async with grpc.aio.insecure_channel("unix:" + t.socket_path) as ch:
                await als_pb2_grpc.AccessLogServiceStub(ch).StreamAccessLogs(_messages(2, A_IP))
            assert t.held_records == 3  # known now: counted at once

            web_app = web.Application()
            web_app.add_routes(t.routes())
            async with TestClient(TestServer(web_app)) as client:
                text = await (await client.get("/stats/prometheus")).text()
                fams = {f.name: f for f in text_string_to_metric_families(text)}
                by_src = {s.labels["source_workload"]: s.value for s in fams["istio_requests"].samples}
                assert by_src == {"productpage-v1": 5}
                assert fams["app_jobs"].samples[0].value == 7  # the app's own metrics are merged in
                assert fams["mizzen_agent_accesslog_entries"].samples[0].value == 5
                assert fams["mizzen_agent_telemetry_held_records"].samples[0].value == 3
                win = await (await client.get("/telemetry/window")).json()
                assert win["workload"] == "reviews-v1" and sum(r["requests"] for r in win["rows"]) == 5
                top = await (await client.get("/telemetry/top?n=2")).json()
                assert top["total"] == 5 and len(top["paths"]) == 2
                assert (await client.get("/telemetry/top?n=x")).status == 400
        finally:
            await t.stop()
            await app_srv.close()
            shutil.rmtree(d, ignore_errors=True)

    asyncio.run(run())


def test_a_caller_outside_the_mesh_is_held_once_and_a_failing_refresh_holds_no_longer_than_the_bound():
    async def run() -> None:
        d = tempfile.mkdtemp(prefix="mzals-", dir="/tmp")
        outsider = "192.0.2.7"  # never registered
        fail = []

        async def fetch() -> Directory:
            if fail:
                raise ConnectionRefusedError("control plane away")
            return Directory(INSTANCES, SERVICES)
        t = Telemetry(ME, os.path.join(d, "als.sock"), fetch_directory=fetch, min_refresh_seconds=0.2,
                      refresh_seconds=60, max_hold_seconds=1.0)
        await t.start()
        try:
            async def send(n: int, ip: str) -> None:
                async with grpc.aio.insecure_channel("unix:" + t.socket_path) as ch:
                    await als_pb2_grpc.AccessLogServiceStub(ch).StreamAccessLogs(_messages(n, ip))

            async def until(cond) -> None:
                for _ in range(200):
                    if cond():
                        return
                    await asyncio.sleep(0.05)
                raise AssertionError("not met within 10 s")
            await asyncio.sleep(0.1)
            await send(2, outsider)
            assert t.held_records == 2
            await until(lambda: t.agg.unknown_peers == 2)  # the refresh did not name it: counted as unknown
            await send(3, outsider)
            assert t.held_records == 2 and t.agg.unknown_peers == 5  # settled: not held again
            # the control plane is away: a new address is held, then counted (as unknown) after max_hold_seconds
            fail.append(1)
            await send(1, "192.0.2.8")
            assert t.held_records == 3 and t.agg.unknown_peers == 5
            await until(lambda: t.agg.unknown_peers == 6)
            assert not t._held
        finally:
            await t.stop()
            shutil.rmtree(d, ignore_errors=True)

    asyncio.run(run())


def test_an_unreachable_app_or_envoy_is_named_in_the_scrape_not_fatal():
    async def run() -> None:
        d = tempfile.mkdtemp(prefix="mzals-", dir="/tmp")
        t = Telemetry(ME, os.path.join(d, "als.sock"), envoy_stats=http_get("http://127.0.0.1:9/stats/prometheus"))
        try:
            text = await t.prometheus_text()
            assert text.startswith("# envoy metrics unavailable:")
            assert "mizzen_agent_accesslog_streams 0" in text
        finally:
            shutil.rmtree(d, ignore_errors=True)

    asyncio.run(run())
