"""The ConfigStore contract, run against SQLite and a real etcd cluster. Revisions are compared relative to
each other: etcd's are cluster-wide (other keys move them too), SQLite's count commits."""
from __future__ import annotations

import pytest

from mizzen.api import Resource, ResourceKey, load_text
from mizzen.store import NotFound, RevisionConflict


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


def test_apply_actions_and_revisions(store):
    assert store.revision == 0 and store.list() == []
    r1 = store.apply([vs("reviews"), dr("reviews")])
    assert r1.revision > 0
    assert [a for _, a in r1.actions] == ["created", "created"]
    assert all(r.revision == r1.revision for r, _ in r1.actions)

    # same content again: nothing changes, revision does not move
    r2 = store.apply([vs("reviews"), dr("reviews")])
    assert r2.revision == r1.revision and not r2.changed
    assert [a for _, a in r2.actions] == ["unchanged", "unchanged"]

    r3 = store.apply([vs("reviews", subset="v2"), dr("reviews")])
    assert r3.revision > r1.revision and store.revision == r3.revision
    assert [a for _, a in r3.actions] == ["configured", "unchanged"]
    got = store.get(ResourceKey("VirtualService", "default", "reviews"))
    assert got is not None and got.revision == r3.revision
    assert got.spec.http[0].route[0].destination.subset == "v2"
    assert store.get(ResourceKey("DestinationRule", "default", "reviews")).revision == r1.revision


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


def test_delete_all_or_nothing(store):
    r1 = store.apply([vs("a"), vs("b")]).revision
    missing = ResourceKey("VirtualService", "default", "nope")
    with pytest.raises(NotFound) as e:
        store.delete([ResourceKey("VirtualService", "default", "a"), missing])
    assert e.value.keys == [missing]
    assert store.revision == r1 and len(store.list()) == 2
    rev = store.delete([ResourceKey("VirtualService", "default", "a")])
    assert rev > r1 and store.revision == rev and [r.name for r in store.list()] == ["b"]
    # re-creating after a delete is "created" again
    assert store.apply([vs("a")]).actions[0][1] == "created"


def test_durable_across_reopen(open_store):
    s = open_store()
    s.apply([vs("a"), dr("a")])
    s.apply([vs("a", subset="v3")])
    last = s.delete([ResourceKey("DestinationRule", "default", "a")])
    before = [(r.to_dict(), r.revision) for r in s.list()]
    s.close()
    s2 = open_store()
    assert s2.revision == last
    assert [(r.to_dict(), r.revision) for r in s2.list()] == before
    assert s2.apply([vs("a", subset="v3")]).actions[0][1] == "unchanged"
    assert s2.apply([vs("b")]).revision > last


def test_subscribers_get_each_commit_synchronously(store):
    seen: list[tuple[int, int]] = []
    # the callback reads the store: it must already see the committed state
    unsubscribe = store.subscribe(lambda rev: seen.append((rev, len(store.list()))))
    r1 = store.apply([vs("a")]).revision
    store.apply([vs("a")])  # no-op: no callback
    r2 = store.apply([vs("b")]).revision
    r3 = store.delete([ResourceKey("VirtualService", "default", "a")])
    assert seen == [(r1, 1), (r2, 2), (r3, 1)]
    unsubscribe()
    store.apply([vs("c")])
    assert len(seen) == 3


def test_failing_subscriber_does_not_undo_the_commit(store):
    def bad(rev: int) -> None:
        raise RuntimeError("subscriber bug")

    got: list[int] = []
    store.subscribe(bad)
    store.subscribe(got.append)
    rev = store.apply([vs("a")]).revision
    assert got == [rev] and store.revision == rev and [r.name for r in store.list()] == ["a"]


def test_changes_since(store):
    r1 = store.apply([vs("a"), dr("a")]).revision
    r2 = store.apply([vs("a", subset="v2")]).revision
    r3 = store.delete([ResourceKey("DestinationRule", "default", "a")])
    ch = store.changes_since(0)
    assert [(c.revision, str(c.key), c.op) for c in ch] == [
        (r1, "DestinationRule/default/a", "put"), (r1, "VirtualService/default/a", "put"),
        (r2, "VirtualService/default/a", "put"), (r3, "DestinationRule/default/a", "delete")]
    assert [c.revision for c in store.changes_since(r2)] == [r3]
    assert store.changes_since(r3) == []


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


def _name_list(s) -> list[str]:
    return [r.name for r in s.list()]


def test_two_replicas_on_one_store_see_each_others_writes(open_store) -> None:
    """Two control-plane replicas share one store: refresh() picks up the other's commits at once (the etcd
    backend's watch would too, by itself: see test_etcd.py)."""
    a, b = open_store(), open_store()
    seen: list[int] = []
    b.subscribe(seen.append)
    r1 = a.apply([vs("one")]).revision
    b.refresh()
    assert _name_list(b) == ["one"] and b.revision == r1 and seen[-1] == r1
    assert not b.refresh()
    # b writes without refreshing first: its commit lands after a's and b's cache holds both
    r2 = a.apply([vs("two")]).revision
    res = b.apply([vs("three")])
    assert res.revision > r2 and _name_list(b) == ["one", "three", "two"]
    a.refresh()
    assert {r.name: r.revision for r in a.list()} == {"one": r1, "two": r2, "three": res.revision}


def test_conditional_write_refuses_when_another_replica_committed(open_store) -> None:
    a, b = open_store(), open_store()
    r1 = a.apply([vs("one")]).revision
    b.refresh()
    assert b.revision == r1
    if open_store.backend == "etcd":
        b._watch.cancel()  # hold b's view at r1, as a slow replica's would be
    r2 = a.apply([vs("two")]).revision  # b's cache still says r1
    with pytest.raises(RevisionConflict) as e:
        b.apply([vs("three")], if_revision=r1)
    assert (e.value.expected, e.value.actual) == (r1, r2)
    with pytest.raises(RevisionConflict):
        b.delete([ResourceKey("VirtualService", "default", "one")], if_revision=r1)
    assert a.refresh() is False and _name_list(a) == ["one", "two"]  # nothing written
    assert b.apply([vs("three")], if_revision=b.revision).revision > r2  # b re-read: accepted


def test_core_revalidates_when_a_replica_commits_during_validation(open_store, tmp_path) -> None:
    """Replica B validates an apply while replica A commits a resource that conflicts with it: B's write is
    refused (revision moved), B re-reads, validates again and rejects the apply instead of storing both."""
    from mizzen.api import InvalidConfig, Issue
    from mizzen.registry.embedded import EmbeddedRegistry
    from mizzen.server.core import ControlPlaneCore

    a, b = open_store(), open_store()
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
                                      "metadata: {name: mine}\nspec: {hosts: [reviews], http: "
                                      "[{route: [{destination: {host: reviews}}]}]}\n")])
        assert calls == [0, 1]  # validated twice: the second time against A's commit
        assert _name_list(b) == ["other"]
    finally:
        reg.close()
