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


def resolve_store_url(url: str | None, ca: str | None, cert: str | None, key: str | None) -> str | None:
    """--store with the --etcd-* TLS files folded into its URL; a bad one is a usage error naming it."""
    from .backends import is_etcd, store_url_with_tls

    if not url or url == "sqlite":
        if ca or cert or key:
            raise click.BadParameter("--etcd-ca/--etcd-cert/--etcd-key need --store etcd://...", param_hint="--store")
        return None
    if not is_etcd(url):
        raise click.BadParameter(f"{url!r}: expected sqlite or etcd://host:port[,host:port...]", param_hint="--store")
    try:
        return store_url_with_tls(url, ca, cert, key)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--store") from None


@click.command("controlplane")
@click.option("--state-dir", default=lambda: os.environ.get("MIZZEN_STATE_DIR", ".mizzen"), show_default=".mizzen",
              type=click.Path(file_okay=False), help="Where the store, registry and sockets live.")
@click.option("--xds-port", default=None, help="Also serve xDS on TCP [HOST:]PORT (unix socket always).")
@click.option("--xds-socket", default=None, type=click.Path(dir_okay=False),
              help="Unix socket for xDS (default STATE_DIR/xds.sock).")
@click.option("--api-socket", default=None, type=click.Path(dir_okay=False),
              help="Unix socket for the REST API (default STATE_DIR/api.sock); a second replica needs its own.")
@click.option("--api-port", default=None, help="Also serve the REST API on TCP [HOST:]PORT.")
@click.option("--replica", default=0, show_default=True, type=click.IntRange(0, 2),
              help="Which replica this is: 0 serves STATE_DIR/api.sock and xds.sock, i serves api-<i>.sock and "
                   "xds-<i>.sock (named controlplane-<i>); --xds-socket/--api-socket override.")
@click.option("--store", "store_url", default=lambda: os.environ.get("MIZZEN_STORE"), show_default="sqlite",
              help="Config store and registry: sqlite (files in the state dir) or "
                   "etcd://host:port[,host:port...][/prefix][?ttl=S] (shared by every control plane naming it).")
@click.option("--etcd-ca", default=None, type=click.Path(dir_okay=False), help="CA bundle of the etcd members (TLS).")
@click.option("--etcd-cert", default=None, type=click.Path(dir_okay=False), help="Client certificate for etcd.")
@click.option("--etcd-key", default=None, type=click.Path(dir_okay=False), help="Key of --etcd-cert.")
@click.option("--consul-api", default=None, metavar="HOST:PORT",
              help="Also serve the Consul HTTP API (agent, health, catalog, KV) on this address.")
@click.option("--debounce-ms", default=100, show_default=True, help="Quiet period before a push.")
@click.option("--max-wait-ms", default=1000, show_default=True, help="Longest a change waits for a push.")
@click.option("--log-level", default="info", show_default=True)
def controlplane(state_dir: str, xds_port: str | None, xds_socket: str | None, api_socket: str | None,
                 api_port: str | None, replica: int, store_url: str | None, etcd_ca: str | None,
                 etcd_cert: str | None, etcd_key: str | None, consul_api: str | None, debounce_ms: int,
                 max_wait_ms: int, log_level: str) -> None:
    """Run the control plane: config store, registry, xDS (SotW + Delta) and the REST API."""
    from .controlplane import Settings, run

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(Path(state_dir).resolve(), _addr(xds_port), _addr(api_port),
                        debounce_ms / 1000.0, max_wait_ms / 1000.0,
                        Path(xds_socket).resolve() if xds_socket else None,
                        Path(api_socket).resolve() if api_socket else None, replica=replica,
                        store_url=resolve_store_url(store_url, etcd_ca, etcd_cert, etcd_key),
                        consul_api=_addr(consul_api))
    try:
        import uvloop  # type: ignore

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(settings))
