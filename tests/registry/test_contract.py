"""The Registry contract, run against SQLite and a real etcd cluster (versions compared relatively)."""
from __future__ import annotations

import dataclasses

from mizzen.model.types import Instance, labels_tuple


def inst(pod: str, address: str = "10.244.0.2", version: str = "v1", **kw) -> Instance:
    return Instance(id=f"default.{pod}", namespace="default", workload=pod.rsplit("-", 1)[0], address=address,
                    ports=(9080,), labels=labels_tuple({"app": "reviews", "version": version}), **kw)


def test_upsert_is_idempotent(reg):
    seen: list[int] = []
    reg.subscribe(seen.append)
    v0 = reg.version
    assert reg.upsert(inst("reviews-v1-0")) is True
    v1 = reg.version
    assert v1 > v0
    # heartbeat: identical re-PUT is a no-op
    assert reg.upsert(inst("reviews-v1-0")) is False
    assert reg.version == v1 and seen == [v1]
    # a real change bumps the version
    assert reg.upsert(inst("reviews-v1-0", healthy=False)) is True
    assert reg.version > v1 and seen == [v1, reg.version]
    assert reg.get("default.reviews-v1-0").healthy is False


def test_remove(reg):
    reg.upsert(inst("a-0"))
    seen: list[int] = []
    reg.subscribe(seen.append)
    v = reg.version
    assert reg.remove("default.a-0") is True
    assert reg.remove("default.a-0") is False
    assert reg.get("default.a-0") is None and reg.list() == [] and len(seen) == 1 and seen[0] > v


def test_list_sorted(reg):
    for p in ("c-0", "a-0", "b-0"):
        reg.upsert(inst(p))
    assert [i.id for i in reg.list()] == ["default.a-0", "default.b-0", "default.c-0"]


def test_persisted_across_restart(open_registry):
    a = inst("reviews-v1-0", locality="eu/west-1a", port_map=((9080, 31000),))
    b = inst("reviews-v2-0", address="10.244.0.3", version="v2")
    r = open_registry()
    r.upsert(a)
    r.upsert(b)
    r.upsert(inst("gone-0"))
    r.remove("default.gone-0")
    last = r.version
    r.close()
    r2 = open_registry()
    assert r2.list() == [a, b]  # every field survives, equal as values
    assert r2.version >= last
    v = r2.version
    assert r2.upsert(a) is False  # an agent re-registering after the restart changes nothing
    assert r2.upsert(dataclasses.replace(b, healthy=False)) is True and r2.version > v


def test_two_replicas_see_each_others_writes(open_registry) -> None:
    a, b = open_registry(), open_registry()
    seen: list[int] = []
    b.subscribe(seen.append)
    a.upsert(Instance(id="x", namespace="default", workload="w", address="10.0.0.1"))
    b.refresh()
    assert len(seen) == 1 and b.get("x").address == "10.0.0.1"
    a.upsert(Instance(id="y", namespace="default", workload="w", address="10.0.0.2"))
    assert b.remove("x")
    b.refresh()
    assert [i.id for i in b.list()] == ["y"]
    a.refresh()
    assert [i.id for i in a.list()] == ["y"]
