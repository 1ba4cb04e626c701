"""Where a control plane keeps its config and its registry: SQLite files in the state dir (the embedded
default), or an etcd cluster shared by every control plane and host that names it (`--store etcd://...`).

`open_backends(state_dir, store_url)` opens both (and, on demand, the Consul KV store) on one backend:
- SQLite: `store.db`, `registry.db`, `consul-kv.db` in the state dir. Other replicas' commits are picked
  up by polling the files (`watch_driven` False: the control plane runs its refresh loop).
- etcd: `EtcdStore`, `EtcdRegistry` (instances under leases, TTL from the URL's `ttl`) and `EtcdKV` on one
  shared `EtcdClient`; every change arrives through etcd watches (`watch_driven` True: no polling).
  Opening loads the whole prefix at one revision; when no member answers it raises `StoreUnavailable`,
  and the control plane serves nothing until it can load (never an empty config).

`store_url_with_tls(url, ca, cert, key)` folds `--etcd-ca/--etcd-cert/--etcd-key` into the URL's query, so one
string names the store everywhere (runner → control planes, hosts).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlencode

from ..client.layout import StateLayout
from ..registry.base import Registry
from ..store.base import ConfigStore, StoreUnavailable

log = logging.getLogger("mizzen.controlplane")


def is_etcd(url: str | None) -> bool:
    return bool(url) and str(url).split("://", 1)[0] in ("etcd", "etcds")


def store_url_with_tls(url: str, ca: str | None = None, cert: str | None = None, key: str | None = None) -> str:
    """`etcd://h:p,...[/prefix][?query]` with `ca`/`cert`/`key` (absolute paths) added to its query. Checks the
    URL (ValueError naming the problem) and that the files exist."""
    from ..etcd.client import parse_url

    extra = {}
    for name, path in (("ca", ca), ("cert", cert), ("key", key)):
        if path:
            if not os.path.isfile(path):
                raise ValueError(f"--etcd-{name} {path}: no such file")
            extra[name] = os.path.abspath(path)
    if (cert is None) != (key is None):
        raise ValueError("--etcd-cert and --etcd-key go together (a client certificate and its key)")
    if extra:
        url = url + ("&" if "?" in url else "?") + urlencode(extra)
    parse_url(url)  # raises ValueError naming what is wrong
    return url


def display_url(url: str | None) -> str:
    """The store as `mizzen status` shows it: the URL without its query (file paths, timeouts)."""
    if not url:
        return "sqlite"
    return url.split("?", 1)[0]


@dataclass
class Backends:
    kind: str  # "sqlite" | "etcd"
    store: Any  # ConfigStore (+ refresh(), available on etcd)
    registry: Any  # Registry (+ refresh(), available on etcd)
    url: str
    _kv_factory: Callable[[], Any]
    _client: Any = None
    _kv: Any = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def watch_driven(self) -> bool:
        """Other writers' changes arrive by themselves (etcd watches); SQLite files must be polled."""
        return self.kind == "etcd"

    @property
    def available(self) -> bool:
        """The backend is reachable now (etcd: the store's watch is connected). SQLite: always."""
        return bool(getattr(self.store, "available", True))

    def kv(self) -> Any:
        """The Consul KV store on the same backend (opened on first use)."""
        if self._kv is None:
            self._kv = self._kv_factory()
        return self._kv

    def health(self) -> dict[str, Any]:
        return {"backend": self.kind, "url": display_url(self.url if self.kind == "etcd" else None),
                "available": self.available, "revision": self.store.revision,
                "registryVersion": self.registry.version}

    def close(self) -> None:
        for c in (self._kv, self.registry, self.store):
            if c is not None:
                try:
                    c.close()
                except Exception:  # closing must not hide the reason we stop
                    log.exception("closing %s failed", type(c).__name__)
        if self._client is not None:
            self._client.close()


def open_backends(state_dir: str | os.PathLike[str], store_url: str | None = None) -> Backends:
    """Open the store and the registry. Raises StoreUnavailable (etcd unreachable, nothing loaded) or
    ValueError (a malformed URL)."""
    layout = StateLayout(os.fspath(state_dir))
    if not is_etcd(store_url):
        if store_url not in (None, "", "sqlite"):
            raise ValueError(f"--store {store_url!r}: expected sqlite (the default) or etcd://host:port,...")
        from ..consulapi.kv import SqliteKV
        from ..registry.embedded import EmbeddedRegistry
        from ..store.sqlite import SqliteStore

        os.makedirs(layout.root, exist_ok=True)
        store: ConfigStore = SqliteStore(layout.store_db)
        try:
            registry: Registry = EmbeddedRegistry(layout.registry_db)
        except BaseException:
            store.close()
            raise
        return Backends("sqlite", store, registry, "sqlite", lambda: SqliteKV(layout.consul_kv_db))
    from ..consulapi.kv import EtcdKV
    from ..etcd.client import parse_url
    from ..registry.etcd import EtcdRegistry
    from ..store.etcd import EtcdStore

    assert store_url is not None
    url = parse_url(store_url)
    client = url.client()
    opened: list[Any] = []
    try:
        st = EtcdStore(client, prefix=url.prefix)
        opened.append(st)
        reg = EtcdRegistry(client, prefix=url.prefix, ttl=url.ttl)
        opened.append(reg)
    except BaseException:
        for o in opened:
            o.close()
        client.close()
        raise
    return Backends("etcd", st, reg, store_url, lambda: EtcdKV(client, prefix=url.prefix), _client=client)


__all__ = ["Backends", "open_backends", "is_etcd", "store_url_with_tls", "display_url", "StoreUnavailable"]
