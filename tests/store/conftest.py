"""The store contract runs against every backend: SQLite (the default) and etcd (a real 3-member cluster)."""
from __future__ import annotations

from typing import Callable, Iterator

import pytest

from tests.etcd.fixtures import etcd_cluster, etcd_prefix  # noqa: F401  (fixtures)

BACKENDS = ["sqlite", "etcd"]


@pytest.fixture(params=BACKENDS)
def open_store(request, tmp_path) -> Iterator[Callable[[], object]]:
    """A factory: each call opens another store on the same backend location (a replica, or a reopen)."""
    opened: list[object] = []
    if request.param == "sqlite":
        from mizzen.store import SqliteStore

        def make() -> object:
            s = SqliteStore(tmp_path / "store.db")
            opened.append(s)
            return s
    else:
        cluster = request.getfixturevalue("etcd_cluster")
        prefix = request.getfixturevalue("etcd_prefix")
        from mizzen.store.etcd import EtcdStore

        def make() -> object:
            s = EtcdStore.open(cluster.endpoints, prefix=prefix)
            opened.append(s)
            return s
    make.backend = request.param  # type: ignore[attr-defined]
    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(open_store):
    return open_store()
