"""A real Envoy (--concurrency 1) configured only through our ADS server, SotW and Delta.

Proves delivery with real HTTP through the Envoy listener to loopback backends, then swaps the route to a new
cluster under continuous traffic (make-before-break: no request may fail), checks the old cluster is removed
in Envoy (admin /clusters), and moves endpoints with an EDS-only push.
"""
import asyncio
import json
import signal
import socket
import subprocess
import time

import aiohttp
import pytest
from aiohttp import web

from mizzen.model.types import Proxy
from mizzen.server.ads import AdsServer
from tests.envoy_bin import envoy_binary

from .xds_helpers import cluster, endpoints, listener, routes, target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Source:
    def __init__(self, t):
        self.t, self.generation = t, 1

    def ready(self):
        return True

    def resources_for(self, proxy):
        return self.t


def bootstrap(admin_port: int, xds_addr: str, delta: bool) -> str:
    if xds_addr.startswith("unix:"):
        address = {"pipe": {"path": xds_addr[5:]}}
    else:
        host, port = xds_addr.rsplit(":", 1)
        address = {"socket_address": {"address": host, "port_value": int(port)}}
    pid = "sidecar~127.0.0.1~test-0.default~default.svc.cluster.local"
    return json.dumps({
        "node": {"id": pid, "cluster": "test", "metadata": Proxy(pid, workload="test").node_metadata()},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {"api_type": "DELTA_GRPC" if delta else "GRPC", "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
                           "set_node_on_first_message_only": True},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": [{
            "name": "xds", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]},
        }]},
    })


async def backend(body: str):
    async def handle(_):
        return web.Response(text=body)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def make_target(cluster_name, backend_port, listen_port):
    return target([cluster(cluster_name)], [endpoints(cluster_name, [("127.0.0.1", backend_port)])],
                  [listener("listener-http", listen_port, "http-routes")], [routes("http-routes", cluster_name)])


async def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = await pred()
        if v:
            return v
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def scenario(tmp_path, delta: bool):
    runners = []
    proc = None
    ads = None
    log_path = tmp_path / "envoy.log"
    try:
        ra, port_a = await backend("A")
        rb, port_b = await backend("B")
        runners += [ra, rb]
        listen, admin = free_port(), free_port()
        src = Source(make_target("svc-a", port_a, listen))
        sends = []
        ads = AdsServer(src, on_send=lambda pid, r: sends.append(r))
        addr = f"unix:{tmp_path / 'xds.sock'}" if delta else "127.0.0.1:0"
        (bound,) = await ads.start([addr])
        cfg = tmp_path / "envoy.json"
        cfg.write_text(bootstrap(admin, bound, delta))
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen([envoy_binary(), "-c", str(cfg), "--concurrency", "1", "--disable-hot-restart",
                                     "-l", "warning"], stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{listen}/x"

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            async def get():
                try:
                    async with http.get(url) as r:
                        return r.status, await r.text()
                except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                    return 0, repr(e)

            async def body_is(b):
                assert proc.poll() is None, "envoy exited"
                st, text = await get()
                return st == 200 and text == b

            await wait_for(lambda: body_is("A"), 15, "traffic through Envoy to backend A")
            await wait_for(lambda: _synced(ads), 5, "all types SYNCED")
            (status,) = ads.statuses()
            assert status["protocol"] == ("delta" if delta else "sotw") and status["connected"]

            # make-before-break swap under continuous traffic
            results = []
            stop = asyncio.Event()

            async def traffic():
                while not stop.is_set():
                    results.append(await get())

            t = asyncio.create_task(traffic())
            await asyncio.sleep(0.2)
            mark = len(sends)
            src.t = make_target("svc-b", port_b, listen)
            ads.notify()
            await wait_for(lambda: body_is("B"), 10, "traffic switched to backend B")
            await wait_for(lambda: _synced(ads), 5, "all types SYNCED after the swap")
            await asyncio.sleep(0.2)
            stop.set()
            await t
            bad = [r for r in results if r[0] != 200]
            assert not bad, f"{len(bad)} failed requests during the swap: {bad[:3]}"
            assert {b for _, b in results} == {"A", "B"}
            # the order of what we sent: new cluster, then routes, then the removal
            swap = [(r.short, r.resources, r.removed) for r in sends[mark:]]
            i_rds = next(i for i, s in enumerate(swap) if s[0] == "RDS")
            cds = [i for i, s in enumerate(swap) if s[0] == "CDS"]
            assert cds[0] < i_rds < cds[-1], swap
            if delta:
                assert swap[cds[0]][1:] == (("svc-b",), ()) and swap[cds[-1]][1:] == ((), ("svc-a",))
            else:
                assert swap[cds[0]][1] == ("svc-a", "svc-b") and swap[cds[-1]][1] == ("svc-b",)

            async with http.get(f"http://127.0.0.1:{admin}/clusters?format=json") as r:
                names = {c["name"] for c in (await r.json(content_type=None))["cluster_statuses"]}
            assert "svc-b" in names and "svc-a" not in names

            # endpoint-only push: svc-b now points at backend A's port
            n = len(sends)
            t2 = make_target("svc-b", port_b, listen)
            t2 = {**t2, "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment":
                  {"svc-b": endpoints("svc-b", [("127.0.0.1", port_a)])}}
            src.t = t2
            ads.notify()
            await wait_for(lambda: body_is("A"), 10, "EDS update applied")
            assert [r.short for r in sends[n:]] == ["EDS"]
            await wait_for(lambda: _synced(ads), 5, "SYNCED after EDS push")

            async with http.get(f"http://127.0.0.1:{admin}/config_dump") as r:
                dump = await r.json(content_type=None)
            kinds = {c["@type"].rsplit(".", 1)[-1] for c in dump["configs"]}
            assert {"ClustersConfigDump", "ListenersConfigDump", "RoutesConfigDump"} <= kinds

            # control-plane restart: Envoy reconnects and reports what it has; nothing is resent
            await ads.stop(0)
            sends2 = []
            ads = AdsServer(src, on_send=lambda pid, r: sends2.append(r))
            await ads.start([bound])
            await wait_for(lambda: _synced(ads), 15, "Envoy reconnected and SYNCED")
            await asyncio.sleep(0.3)
            assert [r for r in sends2 if r.resources or r.removed] == [], [str(r) for r in sends2]
            assert await body_is("A")
    except BaseException:
        if log_path.exists():
            print(log_path.read_text()[-4000:])
        raise
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if ads is not None:
            await ads.stop(0)
        for r in runners:
            await r.cleanup()


async def _synced(ads):
    st = ads.statuses()
    return bool(st) and st[0]["connected"] and st[0]["phase"] == "DONE" and \
        all(v["state"] == "SYNCED" for v in st[0]["types"].values())


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_envoy_receives_config_and_swaps_without_errors(tmp_path, delta):
    asyncio.run(asyncio.wait_for(scenario(tmp_path, delta), 60))
