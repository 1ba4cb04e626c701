"""Run the console on its own, next to a control plane:

    python -m mizzen.console --state-dir .mizzen [--port 15080] [--windows http://agent:15020 ...]
                             [--traces http://127.0.0.1:PORT] [--tap-admin ns/workload=http://127.0.0.1:ADMIN ...]

Prints the URL once it serves. `--tap-admin` taps through an Envoy admin endpoint directly (the agent's tap
endpoint replaces it when the agent mounts telemetry).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal

from aiohttp import web

from ..agent.telemetry import tap_events
from ..telemetry.tap import tap_request
from .app import make_app
from .sources import HttpTraces, RestClient, http_windows, no_windows


def _tap_source(admins: dict[str, str]):
    def tap(workload: str, namespace: str, path: str, method: str, max_events: int, max_seconds: float):
        url = admins.get(f"{namespace}/{workload}")
        if url is None:
            raise LookupError(f"no sidecar to tap for workload {namespace}/{workload}")
        return tap_events(url.rstrip("/") + "/tap", tap_request(path, method), max_events=max_events,
                          max_seconds=max_seconds, reporter=workload)
    return tap


def _admin_token(state_dir: str) -> str | None:
    try:
        with open(os.path.join(state_dir, "admin.token")) as f:
            return f.read().strip() or None
    except OSError:
        return None


async def main(a: argparse.Namespace) -> None:
    apis = a.api or [f"unix:{os.path.join(a.state_dir, 'api.sock')}"]
    admins = dict(x.split("=", 1) for x in a.tap_admin)
    token = a.token or _admin_token(a.state_dir)
    ca = a.ca_cert or os.path.join(a.state_dir, "ca", "root-cert.pem")
    rest = RestClient(apis, token=token, ca_file=ca if os.path.exists(ca) else None)
    app = make_app(rest, windows=http_windows(a.windows) if a.windows else no_windows,
                   traces=HttpTraces(a.traces) if a.traces else None, tap=_tap_source(admins) if admins else None)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, a.host, a.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"http://{a.host}:{port}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m mizzen.console")
    ap.add_argument("--state-dir", default=os.environ.get("MIZZEN_STATE_DIR", ".mizzen"))
    ap.add_argument("--api", action="append", default=[], help="unix:/path/api.sock or https://host:port")
    ap.add_argument("--token", default=os.environ.get("MIZZEN_TOKEN"),
                    help="API token (default $MIZZEN_TOKEN, else the state dir's admin.token)")
    ap.add_argument("--ca-cert", default=None, help="the mesh root for an https --api (default STATE/ca/root-cert.pem)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=15080)
    ap.add_argument("--windows", action="append", default=[], help="an agent's base URL (GET /telemetry/window)")
    ap.add_argument("--traces", help="a trace receiver's base URL (GET /api/v1/traces)")
    ap.add_argument("--tap-admin", action="append", default=[], metavar="NS/WORKLOAD=URL")
    asyncio.run(main(ap.parse_args()))
