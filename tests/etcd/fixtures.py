"""A real etcd cluster for tests: `mizzen etcd up` semantics through LocalCluster, on loopback ports, in a
private temp dir removed afterwards (every member process stopped)."""
from __future__ import annotations

import shutil
import tempfile
import uuid
from typing import Iterator

import pytest

from mizzen.etcd.cluster import LocalCluster


def etcd_installed() -> bool:
    return shutil.which("etcd") is not None


needs_etcd = pytest.mark.skipif(not etcd_installed(), reason="etcd is not installed (make sysdeps installs "
                                                             "Debian's etcd-server)")


def start_cluster(members: int = 3) -> tuple[LocalCluster, str]:
    d = tempfile.mkdtemp(prefix="mizzen-etcd-test-")
    c = LocalCluster(d)
    try:
        c.up(members)
    except BaseException:
        c.down(purge=True)
        shutil.rmtree(d, ignore_errors=True)
        raise
    return c, d


def stop_cluster(c: LocalCluster, d: str) -> None:
    c.down(purge=True)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[LocalCluster]:
    if not etcd_installed():
        pytest.skip("etcd is not installed (make sysdeps installs Debian's etcd-server)")
    c, d = start_cluster(3)
    yield c
    stop_cluster(c, d)


@pytest.fixture
def etcd_prefix() -> str:
    """A key prefix of its own per test, so tests sharing one cluster never see each other's keys."""
    return f"/test-{uuid.uuid4().hex[:12]}/"
