"""`mizzen etcd up|down|status`: a local etcd cluster for development and tests."""
from __future__ import annotations

import json

import click

from .cluster import ClusterError, LocalCluster


@click.group()
def etcd() -> None:
    """A local etcd cluster on loopback ports (Debian's etcd-server)."""


@etcd.command()
@click.option("--members", default=3, show_default=True, type=click.IntRange(1, 7), help="cluster size")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False), help="where members keep their data")
@click.option("--timeout", default=30.0, show_default=True, help="seconds to wait until every member serves")
def up(members: int, data_dir: str, timeout: float) -> None:
    """Start the cluster (or its stopped members) and print the client endpoints, one per line."""
    c = LocalCluster(data_dir)
    if c.members and len(c.members) != members:
        raise click.ClickException(f"{data_dir} already holds a {len(c.members)}-member cluster; "
                                   f"`mizzen etcd down --data-dir {data_dir} --purge` first")
    try:
        endpoints = c.up(members, timeout=timeout)
    except ClusterError as e:
        c.down()
        raise click.ClickException(str(e)) from None
    for e in endpoints:
        click.echo(e)


@etcd.command()
@click.option("--data-dir", required=True, type=click.Path(file_okay=False))
@click.option("--purge", is_flag=True, help="also delete the data dir")
def down(data_dir: str, purge: bool) -> None:
    """Stop every member (SIGTERM, SIGKILL after 10 s)."""
    c = LocalCluster(data_dir)
    if not c.members:
        raise click.ClickException(f"no etcd cluster in {data_dir} (no cluster.json)")
    c.down(purge=purge)


@etcd.command()
@click.option("--data-dir", required=True, type=click.Path(file_okay=False))
def status(data_dir: str) -> None:
    """The members, their endpoints and whether they run (JSON)."""
    c = LocalCluster(data_dir)
    click.echo(json.dumps({"members": c.status(), "leader": c.leader() if c.members else None}, indent=1))
