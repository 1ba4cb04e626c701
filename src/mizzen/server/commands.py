"""`mizzen controlplane`: run the control plane in the foreground."""
from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import click


def _addr(value: str | None, default_host: str = "127.0.0.1") -> tuple[str, int] | None:
    if not value or value in ("0", "off"):
        return None
    if ":" in value:
        host, port = value.rsplit(":", 1)
        return host or default_host, int(port)
    return default_host, int(value)


@click.command("controlplane")
@click.option("--state-dir", default=lambda: os.environ.get("MIZZEN_STATE_DIR", ".mizzen"), show_default=".mizzen",
              type=click.Path(file_okay=False), help="Where the store, registry and sockets live.")
@click.option("--xds-port", default=None, help="Also serve xDS on TCP [HOST:]PORT (unix socket always).")
@click.option("--xds-socket", default=None, type=click.Path(dir_okay=False),
              help="Unix socket for xDS (default STATE_DIR/xds.sock).")
@click.option("--api-socket", default=None, type=click.Path(dir_okay=False),
              help="Unix socket for the REST API (default STATE_DIR/api.sock); a second replica needs its own.")
@click.option("--api-port", default=None,
              help="Also serve the REST API on TCP [HOST:]PORT, over TLS with a certificate from the mesh CA.")
@click.option("--api-group", default=None, metavar="GROUP",
              help="group of the REST API socket (mode 0660); default: the group `mizzen` if it exists, else "
                   "root's (only root connects); callers also need a token")
@click.option("--api-tls-name", "api_tls_names", multiple=True, metavar="NAME",
              help="an extra DNS name or IP in the TLS certificate of the TCP API listener (repeatable)")
@click.option("--replica", default=0, show_default=True, type=click.IntRange(0, 2),
              help="Which replica this is: 0 serves STATE_DIR/api.sock and xds.sock, i serves api-<i>.sock and "
                   "xds-<i>.sock (named controlplane-<i>); --xds-socket/--api-socket override.")
@click.option("--debounce-ms", default=100, show_default=True, help="Quiet period before a push.")
@click.option("--max-wait-ms", default=1000, show_default=True, help="Longest a change waits for a push.")
@click.option("--log-level", default="info", show_default=True)
def controlplane(state_dir: str, xds_port: str | None, xds_socket: str | None, api_socket: str | None,
                 api_port: str | None, api_group: str | None, api_tls_names: tuple[str, ...], replica: int,
                 debounce_ms: int, max_wait_ms: int, log_level: str) -> None:
    """Run the control plane: config store, registry, xDS (SotW + Delta) and the REST API."""
    from .controlplane import Settings, run

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(Path(state_dir).resolve(), _addr(xds_port), _addr(api_port),
                        debounce_ms / 1000.0, max_wait_ms / 1000.0,
                        Path(xds_socket).resolve() if xds_socket else None,
                        Path(api_socket).resolve() if api_socket else None, replica=replica, api_group=api_group,
                        api_tls_names=api_tls_names)
    try:
        import uvloop  # type: ignore

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(settings))
