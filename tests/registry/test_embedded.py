from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from mizzen.model.types import Instance, labels_tuple
from mizzen.registry import EmbeddedRegistry


def inst(pod: str, address: str = "10.244.0.2", version: str = "v1", **kw) -> Instance:
    return Instance(id=f"default.{pod}", namespace="default", workload=pod.rsplit("-", 1)[0], address=address,
                    ports=(9080,), labels=labels_tuple({"app": "reviews", "version": version}), **kw)


@pytest.fixture
def reg(tmp_path):
    r = EmbeddedRegistry(tmp_path / "registry.db")
    yield r
    r.close()


def test_upsert_is_idempotent(reg):
    seen: list[int] = []
    reg.subscribe(seen.append)
    assert reg.version == 0
    assert reg.upsert(inst("reviews-v1-0")) is True
    assert reg.version == 1
    # heartbeat: identical re-PUT is a no-op
    assert reg.upsert(inst("reviews-v1-0")) is False
    assert reg.version == 1 and seen == [1]
    # a real change bumps the version
    assert reg.upsert(inst("reviews-v1-0", healthy=False)) is True
    assert reg.version == 2 and seen == [1, 2]
    assert reg.get("default.reviews-v1-0").healthy is False


def test_remove(reg):
    reg.upsert(inst("a-0"))
    seen: list[int] = []
    reg.subscribe(seen.append)
    assert reg.remove("default.a-0") is True
    assert reg.remove("default.a-0") is False
    assert reg.get("default.a-0") is None and reg.list() == [] and seen == [2]


def test_list_sorted(reg):
    for p in ("c-0", "a-0", "b-0"):
        reg.upsert(inst(p))
    assert [i.id for i in reg.list()] == ["default.a-0", "default.b-0", "default.c-0"]


def test_persisted_across_restart(tmp_path):
    path = tmp_path / "registry.db"
    a = inst("reviews-v1-0", locality="eu/west-1a", port_map=((9080, 31000),))
    b = inst("reviews-v2-0", address="10.244.0.3", version="v2")
    with EmbeddedRegistry(path) as r:
        r.upsert(a)
        r.upsert(b)
        r.upsert(inst("gone-0"))
        r.remove("default.gone-0")
        assert r.version == 4
    with EmbeddedRegistry(path) as r2:
        assert r2.list() == [a, b]  # every field survives, equal as values
        assert r2.version == 4
        assert r2.upsert(a) is False  # an agent re-registering after the restart changes nothing
        assert r2.upsert(dataclasses.replace(b, healthy=False)) is True and r2.version == 5


def test_wal_mode(reg, tmp_path):
    db = sqlite3.connect(tmp_path / "registry.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_two_processes_on_one_registry_see_each_others_writes(tmp_path) -> None:
    from mizzen.model.types import Instance
    from mizzen.registry.embedded import EmbeddedRegistry

    a, b = EmbeddedRegistry(tmp_path / "r.db"), EmbeddedRegistry(tmp_path / "r.db")
    seen: list[int] = []
    b.subscribe(seen.append)
    a.upsert(Instance(id="x", namespace="default", workload="w", address="10.0.0.1"))
    assert b.refresh() and seen == [1] and b.get("x").address == "10.0.0.1"
    a.upsert(Instance(id="y", namespace="default", workload="w", address="10.0.0.2"))
    assert b.remove("x")  # refreshes first, then writes version 3
    assert b.version == 3 and [i.id for i in b.list()] == ["y"]
    assert a.refresh() and [i.id for i in a.list()] == ["y"] and a.version == 3
    a.close()
    b.close()
