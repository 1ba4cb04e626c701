from __future__ import annotations

import sqlite3

import pytest

from mizzen.api import Resource, ResourceKey, load_text
from mizzen.store import HistoryCompacted, SqliteStore


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


def test_revisions_count_commits(store):
    """SQLite's revisions are its own commit counter (the contract itself is in test_contract.py)."""
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


def test_wal_mode(store, tmp_path):
    db = sqlite3.connect(tmp_path / "store.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


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
        # a hang guard, not a timing goal: 8 interpreters importing the kinds at once take ~30 s under load
        errs = [p.communicate(timeout=180)[1].decode() for p in procs]
        assert all(p.returncode == 0 for p in procs), errs
