"""`mizzen controlplane`: run the control plane in the foreground."""
from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click


def _addr(value: str | None, default_host: str = "127.0.0.1") -> tuple[str, int] | None:
    if not value or value in ("0", "off"):
        return None
    if ":" in value:
        host, port = value.rsplit(":", 1)
        return host or default_host, int(port)
    return default_host, int(value)


def seconds(text: str, option: str = "duration") -> float:
    """A Go/Istio duration ('20s', '30m', '1h30m': the one parser, `api.duration`), a number of days ('90d',
    for certificate lifetimes) or a plain number of seconds -> seconds (> 0)."""
    from ..api.duration import duration_seconds

    t = str(text).strip()
    try:
        if t.endswith("d") and t[:-1].replace(".", "", 1).isdigit():
            value = float(t[:-1]) * 86400
        elif t.replace(".", "", 1).isdigit():
            value = float(t)
        else:
            value = duration_seconds(t)
    except ValueError:
        raise ValueError(f"{option}: {text!r} is not a duration (e.g. 20s, 30m, 24h, 90d)") from None
    if value <= 0:
        raise ValueError(f"{option}: {text!r} must be positive")
    return value


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
@click.option("--debounce-leading", is_flag=True,
              help="Push a change that comes after a quiet period at once (debounce only what follows it).")
@click.option("--trust-domain", default="cluster.local", show_default=True,
              help="SPIFFE trust domain of the mesh's workload identities (spiffe://TD/ns/NS/sa/SA).")
@click.option("--cert-ttl", default="24h", show_default=True,
              help="Default validity of workload certificates (e.g. 24h, 30m, 20s); agents renew at half of it.")
@click.option("--max-cert-ttl", default="90d", show_default=True, help="Longest validity an agent may ask for.")
@click.option("--ca-port", default=None, help="Also serve certificate signing (TLS) on TCP [HOST:]PORT.")
@click.option("--outbound-traffic-policy", type=click.Choice(["ALLOW_ANY", "REGISTRY_ONLY"]), default="ALLOW_ANY",
              show_default=True, help="mesh-wide egress default for proxies whose Sidecar sets no "
                                      "outboundTrafficPolicy: pass unknown destinations through, or refuse them")
@click.option("--monitoring-port", default="15014", show_default=True,
              help="[HOST:]PORT of /metrics and the sidecars' scrape relay (replica i: PORT + i; in use: any free "
                   "port); 'off' for none.")
@click.option("--console-port", default="15080", show_default=True,
              help="Loopback port of the web console (replica 0; in use: any free port); 'off' for none.")
@click.option("--otlp-port", default=None, help="Also receive OTLP/gRPC spans on TCP [HOST:]PORT (unix socket "
              "STATE_DIR/otlp.sock always, on replica 0).")
@click.option("--log-level", default="info", show_default=True)
def controlplane(state_dir: str, xds_port: str | None, xds_socket: str | None, api_socket: str | None,
                 api_port: str | None, api_group: str | None, api_tls_names: tuple[str, ...], replica: int,
                 store_url: str | None, etcd_ca: str | None, etcd_cert: str | None, etcd_key: str | None,
                 consul_api: str | None, debounce_ms: int, max_wait_ms: int, trust_domain: str, cert_ttl: str,
                 max_cert_ttl: str, ca_port: str | None, outbound_traffic_policy: str, monitoring_port: str,
                 console_port: str, otlp_port: str | None, log_level: str, debounce_leading: bool) -> None:
    """Run the control plane: config store, registry, xDS (SotW + Delta), the REST API, the mesh CA, its metrics,
    the trace collector and the console."""
    from .controlplane import Settings, run

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..ca.identity import InvalidIdentity, check_trust_domain

    try:
        check_trust_domain(trust_domain)
        ttl, max_ttl = seconds(cert_ttl, "--cert-ttl"), seconds(max_cert_ttl, "--max-cert-ttl")
    except (InvalidIdentity, ValueError) as e:
        raise click.BadParameter(str(e)) from None
    if ttl > max_ttl:
        raise click.BadParameter(f"--cert-ttl {cert_ttl} is longer than --max-cert-ttl {max_cert_ttl}")
    settings = Settings(Path(state_dir).resolve(), _addr(xds_port), _addr(api_port),
                        debounce_ms / 1000.0, max_wait_ms / 1000.0,
                        Path(xds_socket).resolve() if xds_socket else None,
                        Path(api_socket).resolve() if api_socket else None, replica=replica, api_group=api_group,
                        debounce_leading=debounce_leading,
                        api_tls_names=api_tls_names,
                        trust_domain=trust_domain, workload_ttl_seconds=ttl, max_workload_ttl_seconds=max_ttl,
                        ca_tcp=_addr(ca_port), outbound_traffic_policy=outbound_traffic_policy,
                        observability=_observability(monitoring_port, console_port, otlp_port),
                        store_url=resolve_store_url(store_url, etcd_ca, etcd_cert, etcd_key),
                        consul_api=_addr(consul_api))
    try:
        import uvloop  # type: ignore

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(settings))
    # Stopped cleanly (stores closed, sockets removed): exit without the interpreter's teardown, which freed every
    # object of a large heap one by one -- with 2000 proxies connected, 1.4 s more before a restart could begin.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _observability(monitoring: str, console: str, otlp: str | None):
    from .observability import ObservabilitySettings

    mon = _addr(monitoring)
    con = _addr(console)
    return ObservabilitySettings(monitoring_host=mon[0] if mon else "127.0.0.1",
                                 monitoring_port=mon[1] if mon else None, console_port=con[1] if con else None,
                                 otlp_tcp=_addr(otlp))
