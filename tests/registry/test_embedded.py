from __future__ import annotations

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


def test_wal_mode(reg, tmp_path):
    db = sqlite3.connect(tmp_path / "registry.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_version_counts_changes(tmp_path):
    """SQLite's version is its own change counter (the contract itself is in test_contract.py)."""
    with EmbeddedRegistry(tmp_path / "registry.db") as r:
        r.upsert(inst("a-0"))
        r.upsert(inst("a-0"))
        r.upsert(inst("b-0"))
        r.remove("default.a-0")
        assert r.version == 3
    with EmbeddedRegistry(tmp_path / "registry.db") as r2:
        assert r2.version == 3
