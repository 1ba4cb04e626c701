"""`mizzen ratelimit`: run the global rate-limit service in the foreground (server/ratelimit.py)."""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import click


def _addr(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


@click.command("ratelimit")
@click.option("--limits", "limits_file", type=click.Path(dir_okay=False),
              help="Read RateLimit resources from this YAML file (re-read when it changes) instead of the "
                   "control plane.")
@click.option("--state-dir", default=lambda: os.environ.get("MIZZEN_STATE_DIR", ".mizzen"), show_default=".mizzen",
              type=click.Path(file_okay=False), help="Mesh whose control plane serves the RateLimit resources.")
@click.option("--socket", "unix_path", type=click.Path(dir_okay=False),
              help="Serve gRPC on this unix socket (default STATE_DIR/ratelimit.sock unless --port is given).")
@click.option("--port", default=None, help="Serve gRPC on TCP [HOST:]PORT.")
@click.option("--api", "api", default=None, metavar="HOST:PORT[,...]",
              help="The control planes' REST API (TLS) when they run elsewhere (a host of a multi-host mesh); "
                   "default: the state dir's API sockets.")
@click.option("--redis", "redis_url", default=None, metavar="URL",
              help="Share counters in Redis (redis://host:port/db); default: in memory, one instance.")
@click.option("--redis-timeout", default=0.1, show_default=True, help="Seconds per Redis call before failureMode.")
@click.option("--redis-batch/--no-redis-batch", default=True, show_default=True,
              help="Send the decisions of concurrent requests to Redis as one pipeline.")
@click.option("--admin-socket", type=click.Path(dir_okay=False), default=None,
              help="Admin HTTP (healthz, stats, limits) on this unix socket.")
@click.option("--admin-port", default=None, help="Admin HTTP on TCP [HOST:]PORT.")
@click.option("--poll-interval", default=1.0, show_default=True, help="Seconds between reloads of the limits.")
@click.option("--delay-mode", type=click.Choice(["header", "hold"]), default="header", show_default=True,
              help="header: answer at once with x-envoy-fault-delay-request for the fault filter; hold: answer "
                   "after the delay.")
@click.option("--codec", type=click.Choice(["wire", "protobuf"]), default="wire", show_default=True,
              help="wire: a hand-written codec on raw bytes; protobuf: the generated classes (for comparison)")
@click.option("--server", "server_kind", type=click.Choice(["aio", "sync"]), default="aio", show_default=True,
              help="aio: grpc.aio; sync: grpc's thread-pool server (in-memory counters only; for comparison)")
@click.option("--engine", type=click.Choice(["auto", "native", "python"]),
              default=lambda: os.environ.get("MIZZEN_RLS_ENGINE", "auto"), show_default="auto",
              help="native: the C++ in-memory service (build/mizzen-rls, `make native`), supervised by this process; "
                   "python: this process serves; auto: native when it is built and supports the limits and options "
                   "(no priority classes, no Redis, delay mode header), else python (the log says why).")
@click.option("--native-threads", default=1, show_default=True, help="Serving threads of the native engine.")
@click.option("--log-level", default="info", show_default=True)
def ratelimit(limits_file: str | None, state_dir: str, unix_path: str | None, port: str | None, api: str | None,
              redis_url: str | None, redis_timeout: float, redis_batch: bool, admin_socket: str | None,
              admin_port: str | None,
              poll_interval: float, delay_mode: str, codec: str, server_kind: str, engine: str, native_threads: int,
              log_level: str) -> None:
    """Run the global rate-limit service (Envoy's envoy.service.ratelimit.v3 API)."""
    from ..client.layout import StateLayout
    from ..server.ratelimit import Settings, run
    from ..server.ratelimit_source import ApiSource, FileSource

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if limits_file:
        source: Any = FileSource(limits_file)
    elif api:
        source = ApiSource.joined(os.path.abspath(state_dir), [a.strip() for a in api.split(",") if a.strip()])
    else:
        source = ApiSource.of_state_dir(os.path.abspath(state_dir))
    if not unix_path and not port:
        unix_path = StateLayout(state_dir).ratelimit_socket()
    settings = Settings(source, redis_url, redis_timeout, unix_path, _addr(port), admin_socket, _addr(admin_port),
                        poll_interval, delay_mode, codec, server_kind, redis_batch=redis_batch, engine=engine,
                        native_threads=native_threads)
    asyncio.run(run(settings))
