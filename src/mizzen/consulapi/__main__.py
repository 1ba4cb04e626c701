"""`python -m mizzen.consulapi --listen 127.0.0.1:8500 (--state-dir DIR | --store etcd://...)`: the Consul API
as its own small server process, over a state dir's SQLite registry or an etcd cluster (until the control
plane mounts it: `mizzen up --consul-api`).

ACLs are on: Consul clients authenticate with Mizzen API tokens (`X-Consul-Token`, `Authorization: Bearer`,
`?token=`) from the mesh's token store (the state dir's `tokens.db`, or `<prefix>tokens/` in etcd); a tenant
token sees and changes only its namespaces (acl.py). `--no-acl` turns them off (a Consul agent without ACLs)."""
from __future__ import annotations

import argparse
import logging
import os

from aiohttp import web

from .acl import ConsulAcl
from .server import ConsulAPI


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m mizzen.consulapi", description=__doc__)
    ap.add_argument("--listen", default="127.0.0.1:8500", help="HOST:PORT")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--state-dir", help="use registry.db and consul-kv.db in this dir (SQLite)")
    src.add_argument("--store", help="etcd://host:port[,host:port...][/prefix][?ttl=S&timeout=S&ca=..]")
    ap.add_argument("--node", default="mizzen")
    ap.add_argument("--no-acl", action="store_true", help="accept every caller (no Consul ACLs)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    host, _, port = a.listen.rpartition(":")
    from ..server.auth import Authenticator
    from ..server.auth_tokens import EtcdTokenStore, SqliteTokenStore, TokenStore

    tokens: TokenStore
    if a.store:
        from ..etcd.client import parse_url
        from ..registry.etcd import EtcdRegistry
        from .kv import EtcdKV
        url = parse_url(a.store)
        client = url.client()
        registry, kv = EtcdRegistry(client, prefix=url.prefix, ttl=url.ttl), EtcdKV(client, prefix=url.prefix)
        tokens = EtcdTokenStore(client, prefix=url.prefix)
    else:
        from ..client.layout import StateLayout
        from ..registry.embedded import EmbeddedRegistry
        from .kv import SqliteKV
        os.makedirs(a.state_dir, exist_ok=True)
        registry = EmbeddedRegistry(os.path.join(a.state_dir, "registry.db"))
        kv = SqliteKV(os.path.join(a.state_dir, "consul-kv.db"))
        tokens = SqliteTokenStore(StateLayout(a.state_dir).tokens_db)
    acl = None if a.no_acl else ConsulAcl(Authenticator(tokens).authenticate)
    api = ConsulAPI(registry, kv, node=a.node, advertise=a.listen, acl=acl)
    web.run_app(api.app(), host=host or "127.0.0.1", port=int(port), print=None)


if __name__ == "__main__":
    main()
