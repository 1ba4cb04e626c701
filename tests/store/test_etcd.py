"""What the etcd backend adds to the store contract: etcd revisions, watch-driven change notification
between replicas (no polling), one transaction per apply and its size caps, failing fast without etcd."""
from __future__ import annotations

import threading
import time

import pytest

from mizzen.api import InvalidConfig, Resource, ResourceKey, from_dict
from mizzen.etcd.client import EtcdClient
from mizzen.store import StoreUnavailable
from mizzen.store.etcd import EtcdStore

from .test_contract import vs

pytestmark = pytest.mark.usefixtures("etcd_cluster")


def many_vs(n: int) -> list[Resource]:
    return [from_dict({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                       "metadata": {"name": f"svc-{i}", "namespace": "default"},
                       "spec": {"hosts": [f"svc-{i}"], "http": [{"route": [{"destination": {"host": f"svc-{i}"}}]}]}})
            for i in range(n)]


@pytest.fixture
def pair(etcd_cluster, etcd_prefix):
    a = EtcdStore.open(etcd_cluster.endpoints, prefix=etcd_prefix)
    b = EtcdStore.open(etcd_cluster.endpoints[::-1], prefix=etcd_prefix)
    yield a, b
    a.close()
    b.close()


def test_revisions_are_etcd_revisions(etcd_cluster, pair, etcd_prefix):
    a, _ = pair
    res = a.apply([vs("x"), vs("y")])
    c = EtcdClient(etcd_cluster.endpoints)
    try:
        kv = c.get(f"{etcd_prefix}config/res/VirtualService/default/x".encode())
        assert kv is not None and kv.mod_revision == res.revision
        assert c.get(f"{etcd_prefix}config/rev".encode()).mod_revision == res.revision
        # an unrelated key moves etcd's revision, not the store's
        c.put(f"{etcd_prefix}unrelated".encode(), b"1")
        assert a.apply([vs("x")]).revision == res.revision
    finally:
        c.close()


def test_the_watch_tells_another_replica_without_polling(pair):
    a, b = pair
    got = threading.Event()
    seen: list[tuple[int, list[str]]] = []

    def on_commit(rev: int) -> None:
        seen.append((rev, [r.name for r in b.list()]))
        got.set()

    b.subscribe(on_commit)
    r1 = a.apply([vs("one"), vs("two")]).revision
    assert got.wait(5), "replica b was not told of a's commit"
    assert seen == [(r1, ["one", "two"])] and b.revision == r1
    got.clear()
    r2 = a.delete([ResourceKey("VirtualService", "default", "one")])
    assert got.wait(5) and seen[-1] == (r2, ["two"])
    assert b.get(ResourceKey("VirtualService", "default", "two")).revision == r1


def test_a_big_apply_is_one_transaction(pair):
    a, b = pair
    many = many_vs(1000)
    res = a.apply(many)
    assert {r.revision for r, _ in res.actions} == {res.revision}
    assert b.wait_synced(res.revision) and len(b.list()) == 1000
    assert [c.revision for c in a.changes_since(res.revision - 1)] == [res.revision] * 1000


def test_an_apply_over_the_clusters_cap_is_refused_whole(pair):
    a, _ = pair
    keep = a.apply([vs("keep")]).revision
    too_many = many_vs(4100)  # mizzen etcd up: --max-txn-ops 4096
    with pytest.raises(InvalidConfig, match="max-txn-ops"):
        a.apply(too_many)
    assert a.revision == keep and [r.name for r in a.list()] == ["keep"]
    a.refresh()
    assert [r.name for r in a.list()] == ["keep"]


def test_no_etcd_fails_fast_with_store_unavailable():
    t = time.monotonic()
    with pytest.raises(StoreUnavailable, match="store unavailable"):
        EtcdStore.open(["127.0.0.1:1", "127.0.0.1:2"], prefix="/nothing/")
    assert time.monotonic() - t < 3
