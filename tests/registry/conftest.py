"""The registry contract runs against every backend: SQLite (the default) and etcd (a real 3-member cluster)."""
from __future__ import annotations

from typing import Callable, Iterator

import pytest

from tests.etcd.fixtures import etcd_cluster, etcd_prefix  # noqa: F401  (fixtures)


@pytest.fixture(params=["sqlite", "etcd"])
def open_registry(request, tmp_path) -> Iterator[Callable[[], object]]:
    """A factory: each call opens another registry on the same backend location (a replica, or a reopen)."""
    opened: list[object] = []
    if request.param == "sqlite":
        from mizzen.registry import EmbeddedRegistry

        def make() -> object:
            r = EmbeddedRegistry(tmp_path / "registry.db")
            opened.append(r)
            return r
    else:
        cluster = request.getfixturevalue("etcd_cluster")
        prefix = request.getfixturevalue("etcd_prefix")
        from mizzen.registry.etcd import EtcdRegistry

        def make() -> object:
            r = EtcdRegistry.open(cluster.endpoints, prefix=prefix)
            opened.append(r)
            return r
    make.backend = request.param  # type: ignore[attr-defined]
    yield make
    for r in opened:
        r.close()


@pytest.fixture
def reg(open_registry):
    return open_registry()
