"""API token stores (SQLite in the state dir, etcd next to an etcd config store) and the admin credential."""
from __future__ import annotations

import os
import stat
import threading
import time
from typing import Callable, Iterator

import pytest

from mizzen.server.auth_tokens import (ADMIN, TENANT, EtcdTokenStore, SqliteTokenStore, TokenRecord,
                                       ensure_admin_token, issue, token_sha256, token_store_for)


@pytest.fixture(params=["sqlite", "etcd"])
def open_tokens(request, tmp_path) -> Iterator[Callable[[], object]]:
    """Each call opens another store on the same backend location: another control-plane replica."""
    opened: list[object] = []
    if request.param == "sqlite":
        def make() -> object:
            s = SqliteTokenStore(tmp_path / "tokens.db")
            opened.append(s)
            return s
    else:
        cluster = request.getfixturevalue("etcd_cluster")
        prefix = request.getfixturevalue("etcd_prefix")

        def make() -> object:
            s = EtcdTokenStore.open(cluster.endpoints, prefix=prefix)
            opened.append(s)
            return s
    make.backend = request.param  # type: ignore[attr-defined]
    yield make
    for s in opened:
        s.close()


def _eventually(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_issue_lookup_list_remove_across_replicas(open_tokens):
    a, b = open_tokens(), open_tokens()
    token, rec = issue(a, TokenRecord("", TENANT, ("shop",), True, "team shop", created=100.0, expires=200.0))
    assert token.startswith("mzt_") and len(token) > 40 and rec.id.startswith("tok-")
    assert a.lookup(token_sha256(token)) == rec
    # the other replica sees it (SQLite: its next query; etcd: its watch)
    assert _eventually(lambda: b.lookup(token_sha256(token)) == rec)
    assert [r.id for r in b.list()] == [rec.id]
    assert a.lookup(token_sha256(token + "x")) is None
    assert b.remove(rec.id) is True and b.remove(rec.id) is False
    assert _eventually(lambda: a.lookup(token_sha256(token)) is None)  # revoked everywhere
    assert a.list() == []


def test_only_hashes_are_stored(tmp_path):
    s = SqliteTokenStore(tmp_path / "tokens.db")
    token, _ = issue(s, TokenRecord("", ADMIN, created=1.0))
    s.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("tokens.db"))
    assert token.encode() not in raw and token_sha256(token).encode() in raw
    assert stat.S_IMODE(os.stat(tmp_path / "tokens.db").st_mode) == 0o600


def test_admin_credential_made_once_0600_and_kept(tmp_path):
    store = SqliteTokenStore(tmp_path / "tokens.db")
    path = str(tmp_path / "admin.token")
    first = ensure_admin_token(store, path, str(tmp_path), 1000.0)
    assert first.created and first.record.role == ADMIN and first.record.bootstrap
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert open(path).read().strip() == first.token
    again = ensure_admin_token(store, path, str(tmp_path), 2000.0)  # a restart: the same credential
    assert not again.created and again.token == first.token and len(store.list()) == 1
    store.close()


def test_admin_credential_replicas_starting_together_make_one(tmp_path):
    path = str(tmp_path / "admin.token")
    out: list[str] = []

    def start() -> None:
        s = SqliteTokenStore(tmp_path / "tokens.db")
        try:
            out.append(ensure_admin_token(s, path, str(tmp_path), time.time()).token)
        finally:
            s.close()

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(out) == 3 and len(set(out)) == 1
    s = SqliteTokenStore(tmp_path / "tokens.db")
    assert len(s.list()) == 1
    s.close()


def test_admin_credential_rotation_and_a_lost_store(tmp_path):
    store = SqliteTokenStore(tmp_path / "tokens.db")
    path = str(tmp_path / "admin.token")
    old = ensure_admin_token(store, path, str(tmp_path), 1.0)
    os.unlink(path)  # the documented way to replace it: delete the file, restart the control plane
    new = ensure_admin_token(store, path, str(tmp_path), 2.0)
    assert new.created and new.token != old.token
    assert store.lookup(token_sha256(old.token)) is None  # the old one stopped working
    assert [r.id for r in store.list()] == [new.record.id]
    store.close()
    # a store that lost it (a new etcd cluster, a deleted tokens.db) takes the file's credential again
    os.unlink(tmp_path / "tokens.db")
    fresh = SqliteTokenStore(tmp_path / "tokens.db")
    back = ensure_admin_token(fresh, path, str(tmp_path), 3.0)
    assert back.token == new.token and fresh.lookup(token_sha256(new.token)).role == ADMIN
    fresh.close()


def test_tokens_follow_the_config_store(tmp_path, request):
    from mizzen.store import SqliteStore

    cfg = SqliteStore(tmp_path / "store.db")
    t = token_store_for(cfg, str(tmp_path))
    assert isinstance(t, SqliteTokenStore) and t.path == str(tmp_path / "tokens.db")
    t.close()
    cfg.close()


def test_tokens_follow_an_etcd_config_store(tmp_path, etcd_cluster, etcd_prefix):
    """Control planes on several hosts share an etcd store: their tokens live next to it, under the same
    prefix, so a token made on one is accepted (and a revocation seen) by the other."""
    from mizzen.store.etcd import EtcdStore

    one, two = (EtcdStore.open(etcd_cluster.endpoints, prefix=etcd_prefix) for _ in range(2))
    ta, tb = token_store_for(one, str(tmp_path / "host-a")), token_store_for(two, str(tmp_path / "host-b"))
    try:
        assert isinstance(ta, EtcdTokenStore) and isinstance(tb, EtcdTokenStore)
        token, rec = issue(ta, TokenRecord("", TENANT, ("shop",), created=1.0))
        assert _eventually(lambda: tb.lookup(token_sha256(token)) == rec)
        kvs = one.client.range_prefix((etcd_prefix.rstrip("/") + "/tokens/").encode())[1]
        assert [kv.key.decode().rsplit("/", 1)[1] for kv in kvs] == [token_sha256(token)]
        assert all(token.encode() not in kv.value for kv in kvs)
        ta.remove(rec.id)
        assert _eventually(lambda: tb.lookup(token_sha256(token)) is None)
    finally:
        ta.close()
        tb.close()
        one.close()
        two.close()
