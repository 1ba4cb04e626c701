from __future__ import annotations

import sqlite3

import pytest

from mizzen.api import Resource, ResourceKey, load_text
from mizzen.store import HistoryCompacted, NotFound, SqliteStore


def vs(name: str, host: str = "reviews", subset: str = "v1", ns: str = "default") -> Resource:
    text = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [{host}]
  http:
  - route:
    - destination: {{host: {host}, subset: {subset}}}
"""
    return load_text(text).resources[0]


def dr(name: str, ns: str = "default") -> Resource:
    return load_text(f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {ns}}}
spec: {{host: {name}, subsets: [{{name: v1, labels: {{version: v1}}}}]}}
""").resources[0]


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "store.db")
    yield s
    s.close()


def test_apply_actions_and_revisions(store):
    assert store.revision == 0
    r1 = store.apply([vs("reviews"), dr("reviews")])
    assert r1.revision == 1
    assert [a for _, a in r1.actions] == ["created", "created"]
    assert all(r.revision == 1 for r, _ in r1.actions)

    # same content again: nothing changes, revision does not move
    r2 = store.apply([vs("reviews"), dr("reviews")])
    assert r2.revision == 1 and not r2.changed
    assert [a for _, a in r2.actions] == ["unchanged", "unchanged"]

    r3 = store.apply([vs("reviews", subset="v2"), dr("reviews")])
    assert r3.revision == 2
    assert [a for _, a in r3.actions] == ["configured", "unchanged"]
    got = store.get(ResourceKey("VirtualService", "default", "reviews"))
    assert got is not None and got.revision == 2
    assert got.spec.http[0].route[0].destination.subset == "v2"
    assert store.get(ResourceKey("DestinationRule", "default", "reviews")).revision == 1


def test_list_sorted_and_filtered(store):
    store.apply([vs("b"), vs("a", ns="zeta"), vs("a"), dr("x"), dr("y", ns="other")])
    assert [str(r.key) for r in store.list()] == [
        "DestinationRule/default/x", "DestinationRule/other/y",
        "VirtualService/default/a", "VirtualService/default/b", "VirtualService/zeta/a"]
    assert [r.name for r in store.list("VirtualService", "default")] == ["a", "b"]
    assert [str(r.key) for r in store.list(namespace="other")] == ["DestinationRule/other/y"]
    assert store.list("Sidecar") == []


def test_duplicate_key_in_one_apply_is_rejected(store):
    with pytest.raises(ValueError):
        store.apply([vs("a"), vs("a", subset="v2")])
    assert store.revision == 0 and store.list() == []


def test_apply_is_all_or_nothing_when_sqlite_fails_midway(tmp_path):
    path = tmp_path / "store.db"
    s = SqliteStore(path)
    s.apply([vs("keep")])
    # a real SQLite failure in the middle of the transaction, after earlier rows were written
    db = sqlite3.connect(path)
    db.execute("CREATE TRIGGER boom BEFORE INSERT ON resources WHEN NEW.name = 'boom' "
               "BEGIN SELECT RAISE(ABORT, 'boom'); END")
    db.commit()
    db.close()
    calls: list[int] = []
    s.subscribe(calls.append)
    with pytest.raises(sqlite3.DatabaseError):
        s.apply([vs("first"), vs("keep", subset="v9"), vs("boom")])
    assert s.revision == 1 and calls == []
    assert [r.name for r in s.list()] == ["keep"]
    assert s.get(ResourceKey("VirtualService", "default", "keep")).spec.http[0].route[0].destination.subset == "v1"
    s.close()
    with SqliteStore(path) as again:
        assert again.revision == 1
        assert [r.name for r in again.list()] == ["keep"]
        assert [c.key.name for c in again.changes_since(0)] == ["keep"]


def test_delete_all_or_nothing(store):
    store.apply([vs("a"), vs("b")])
    missing = ResourceKey("VirtualService", "default", "nope")
    with pytest.raises(NotFound) as e:
        store.delete([ResourceKey("VirtualService", "default", "a"), missing])
    assert e.value.keys == [missing]
    assert store.revision == 1 and len(store.list()) == 2
    rev = store.delete([ResourceKey("VirtualService", "default", "a")])
    assert rev == 2 and [r.name for r in store.list()] == ["b"]
    # re-creating after a delete is "created" again
    assert store.apply([vs("a")]).actions[0][1] == "created"


def test_durable_across_reopen(tmp_path):
    path = tmp_path / "store.db"
    with SqliteStore(path) as s:
        s.apply([vs("a"), dr("a")])
        s.apply([vs("a", subset="v3")])
        s.delete([ResourceKey("DestinationRule", "default", "a")])
        before = [(r.to_dict(), r.revision) for r in s.list()]
        assert s.revision == 3
    with SqliteStore(path) as s2:
        assert s2.revision == 3
        assert [(r.to_dict(), r.revision) for r in s2.list()] == before
        assert s2.apply([vs("a", subset="v3")]).actions[0][1] == "unchanged"
        assert s2.apply([vs("b")]).revision == 4


def test_wal_mode(store, tmp_path):
    db = sqlite3.connect(tmp_path / "store.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_subscribers_get_each_commit_synchronously(store):
    seen: list[tuple[int, int]] = []
    # the callback reads the store: it must already see the committed state
    unsubscribe = store.subscribe(lambda rev: seen.append((rev, len(store.list()))))
    store.apply([vs("a")])
    store.apply([vs("a")])  # no-op: no callback
    store.apply([vs("b")])
    store.delete([ResourceKey("VirtualService", "default", "a")])
    assert seen == [(1, 1), (2, 2), (3, 1)]
    unsubscribe()
    store.apply([vs("c")])
    assert len(seen) == 3


def test_failing_subscriber_does_not_undo_the_commit(store):
    def bad(rev: int) -> None:
        raise RuntimeError("subscriber bug")

    got: list[int] = []
    store.subscribe(bad)
    store.subscribe(got.append)
    assert store.apply([vs("a")]).revision == 1
    assert got == [1] and store.revision == 1


def test_changes_since(store):
    store.apply([vs("a"), dr("a")])
    store.apply([vs("a", subset="v2")])
    store.delete([ResourceKey("DestinationRule", "default", "a")])
    ch = store.changes_since(0)
    assert [(c.revision, str(c.key), c.op) for c in ch] == [
        (1, "DestinationRule/default/a", "put"), (1, "VirtualService/default/a", "put"),
        (2, "VirtualService/default/a", "put"), (3, "DestinationRule/default/a", "delete")]
    assert [c.revision for c in store.changes_since(2)] == [3]
    assert store.changes_since(3) == []


def test_change_log_is_bounded(tmp_path):
    with SqliteStore(tmp_path / "s.db", history=3) as s:
        for i in range(6):
            s.apply([vs("a", subset=f"v{i}")])
        assert s.revision == 6
        assert [c.revision for c in s.changes_since(3)] == [4, 5, 6]
        with pytest.raises(HistoryCompacted):
            s.changes_since(2)
        n = sqlite3.connect(tmp_path / "s.db").execute("SELECT count(*) FROM changes").fetchone()[0]
        assert n == 3


def test_metadata_round_trip_and_other_kinds(store):
    text = """
apiVersion: v1
kind: Service
metadata: {name: reviews, labels: {app: reviews}}
spec:
  selector: {app: reviews}
  ports: [{port: 9080, name: http}]
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {name: reviews-v1, namespace: shop}
spec: {replicas: 2, command: [python3, -m, http.server], ports: [{containerPort: 9080}]}
"""
    res = load_text(text).resources
    store.apply(res)
    assert [r.to_dict() for r in store.list()] == sorted([r.to_dict() for r in res], key=lambda d: d["kind"])


def test_two_processes_on_one_store_see_each_others_writes(tmp_path) -> None:
    """Two control-plane replicas share one store file: refresh() picks up the other's commits."""
    from mizzen.api import load_text
    from mizzen.store.sqlite import SqliteStore

    vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {n}}}\nspec: {{hosts: [{n}]}}\n"
    a, b = SqliteStore(tmp_path / "s.db"), SqliteStore(tmp_path / "s.db")
    seen: list[int] = []
    b.subscribe(seen.append)
    a.apply(load_text(vs.format(n="one")).resources)
    assert b.list() == [] and b.refresh() and seen == [1]
    assert [r.name for r in b.list()] == ["one"] and not b.refresh()
    # b writes without refreshing first: its commit lands after a's and b's cache holds both
    a.apply(load_text(vs.format(n="two")).resources)
    res = b.apply(load_text(vs.format(n="three")).resources)
    assert res.revision == 3 and [r.name for r in b.list()] == ["one", "three", "two"]
    assert a.refresh() and [r.revision for r in a.list()] == [1, 3, 2]
    a.close()
    b.close()


def test_conditional_write_refuses_when_another_replica_committed(tmp_path) -> None:
    from mizzen.store import RevisionConflict

    a, b = SqliteStore(tmp_path / "s.db"), SqliteStore(tmp_path / "s.db")
    try:
        a.apply([vs("one")])
        assert b.refresh() and b.revision == 1
        a.apply([vs("two")])  # b's cache still says revision 1
        with pytest.raises(RevisionConflict) as e:
            b.apply([vs("three")], if_revision=1)
        assert (e.value.expected, e.value.actual) == (1, 2)
        with pytest.raises(RevisionConflict):
            b.delete([ResourceKey("VirtualService", "default", "one")], if_revision=1)
        assert a.refresh() is False and [r.name for r in a.list()] == ["one", "two"]  # nothing written
        assert b.apply([vs("three")], if_revision=b.revision).revision == 3  # b re-read: accepted
    finally:
        a.close()
        b.close()


def test_core_revalidates_when_a_replica_commits_during_validation(tmp_path) -> None:
    """Replica B validates an apply while replica A commits a resource that conflicts with it: B's write is
    refused (revision moved), B re-reads, validates again and rejects the apply instead of storing both."""
    from mizzen.api import InvalidConfig, Issue
    from mizzen.registry.embedded import EmbeddedRegistry
    from mizzen.server.core import ControlPlaneCore

    a, b = SqliteStore(tmp_path / "s.db"), SqliteStore(tmp_path / "s.db")
    reg = EmbeddedRegistry(tmp_path / "r.db")
    calls = []

    def one_vs_per_host(new: list[Resource], current: list[Resource]) -> list[Issue]:
        calls.append(len(current))
        if len(calls) == 1:
            a.apply([vs("other", host="reviews")])  # replica A commits in between
        taken = {h for r in current if r.kind == "VirtualService" for h in r.spec.hosts}
        return [Issue(f"host {h} already has a VirtualService", "<input>") for r in new
                for h in r.spec.hosts if h in taken]

    core = ControlPlaneCore(b, reg, [one_vs_per_host])
    try:
        with pytest.raises(InvalidConfig, match="already has a VirtualService"):
            core.apply([("mine.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                                      "metadata: {name: mine}\nspec: {hosts: [reviews]}\n")])
        assert calls == [0, 1]  # validated twice: the second time against A's commit
        assert [r.name for r in b.list()] == ["other"]
    finally:
        a.close()
        b.close()
        reg.close()


def test_replicas_opening_a_fresh_store_at_once_all_succeed(tmp_path) -> None:
    """Control planes started together on a new state dir all open the store and registry (one used to fail
    with "database is locked" while another switched the file to WAL: seen in CI; this stress reproduced it
    with the old code in some runs, not every run)."""
    import subprocess
    import sys

    code = ("import sys; from mizzen.store import SqliteStore; from mizzen.registry.embedded import "
            "EmbeddedRegistry; SqliteStore(sys.argv[1] + '/store.db').close(); "
            "EmbeddedRegistry(sys.argv[1] + '/registry.db').close()")
    for round_ in range(8):
        d = tmp_path / str(round_)
        d.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", code, str(d)], stderr=subprocess.PIPE) for _ in range(8)]
        errs = [p.communicate(timeout=60)[1].decode() for p in procs]
        assert all(p.returncode == 0 for p in procs), errs
