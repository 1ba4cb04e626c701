"""A stand-in for the agents of the rig's two sidecars (until the agent's main loop mounts `Telemetry`):
one process running `mizzen.agent.telemetry.Telemetry` for each, with its HTTP routes on a port.

    python -m tests.telemetry.agentproc CONFIG.json      # {"sidecars": [{"socket", "httpPort", "workload",
                                                         #   "namespace", "labels", "envoyAdmin"}],
                                                         #   "instances": [...], "services": [...]}
Prints "ready" once every receiver listens; stops on SIGTERM.
"""
from __future__ import annotations

import asyncio
import json
import signal
import sys

from aiohttp import web

from mizzen.agent.telemetry import Telemetry, envoy_runtime_setter, http_get
from mizzen.telemetry import native
from mizzen.telemetry.aggregate import SelfInfo
from mizzen.telemetry.peers import Directory, WorkloadInfo


async def main(path: str) -> None:
    cfg = json.load(open(path))
    directory = Directory(cfg.get("instances", ()), cfg.get("services", ()))

    async def fetch() -> Directory:
        return directory

    runners, tels = [], []
    for sc in cfg["sidecars"]:
        me = SelfInfo(WorkloadInfo.from_labels(sc["workload"], sc["namespace"], sc.get("labels", {})),
                      {int(k): v for k, v in sc.get("portServices", {}).items()})
        admin = f"http://127.0.0.1:{sc['envoyAdmin']}" if sc.get("envoyAdmin") else None
        envoy = http_get(f"{admin}/stats/prometheus") if admin else None
        t = Telemetry(me, sc["socket"], fetch_directory=fetch, envoy_stats=envoy,
                      envoy_native=http_get(admin + native.STATS_PATH) if admin else None,
                      envoy_runtime=envoy_runtime_setter(admin) if admin else None,
                      top_sampling_seconds=cfg.get("topSamplingSeconds", 120.0))
        await t.start()
        app = web.Application()
        app.add_routes(t.routes())
        r = web.AppRunner(app, access_log=None)
        await r.setup()
        await web.TCPSite(r, "127.0.0.1", sc["httpPort"]).start()
        runners.append(r)
        tels.append(t)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    await stop.wait()
    for t in tels:
        await t.stop()
    for r in runners:
        await r.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
