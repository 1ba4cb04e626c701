"""What the etcd backend adds to the registry contract: leases (a dead owner's instances expire, a
heartbeat keeps them, a withdrawal is immediate) and watch-driven notification of other replicas."""
from __future__ import annotations

import threading
import time

import pytest

from mizzen.registry.etcd import EtcdRegistry
from mizzen.store import StoreUnavailable

from .test_contract import inst


@pytest.fixture
def pair(etcd_cluster, etcd_prefix):
    a = EtcdRegistry.open(etcd_cluster.endpoints, prefix=etcd_prefix, ttl=2)
    b = EtcdRegistry.open(etcd_cluster.endpoints[::-1], prefix=etcd_prefix, ttl=2)
    yield a, b
    a.close()
    b.close()


def _wait(cond, timeout: float) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached")
        time.sleep(0.02)
    return time.monotonic() - t0


def test_another_replica_is_told_by_the_watch(pair):
    a, b = pair
    changed = threading.Event()
    b.subscribe(lambda v: changed.set())
    a.upsert(inst("r-0"))
    assert changed.wait(5) and b.get("default.r-0") == a.get("default.r-0")
    assert b.version == a.version


def test_an_instance_without_heartbeats_expires_and_a_withdrawal_is_immediate(pair):
    a, b = pair
    a.upsert(inst("dies-0"))
    a.upsert(inst("beats-0"))
    a.upsert(inst("leaves-0"))
    _wait(lambda: len(b.list()) == 3, 5)
    # a withdrawal is seen by the other replica at once, long before any TTL
    assert a.remove("default.leaves-0")
    assert _wait(lambda: b.get("default.leaves-0") is None, 5) < 1.0
    # beats-0's owner heartbeats (an unchanged upsert refreshes the lease); dies-0's owner is gone
    t0 = time.monotonic()
    while b.get("default.dies-0") is not None:
        assert a.upsert(inst("beats-0")) is False
        assert time.monotonic() - t0 < 10, "the lease of an instance without heartbeats did not expire"
        time.sleep(0.5)
    assert time.monotonic() - t0 >= 1.0  # not before its TTL (2 s, counted from the registration)
    _wait(lambda: a.get("default.dies-0") is None, 2)
    for _ in range(6):  # beyond another TTL with heartbeats: still there
        assert a.upsert(inst("beats-0")) is False and b.get("default.beats-0") is not None
        time.sleep(0.5)
    # an expired instance that comes back is registered again under a new lease
    assert a.upsert(inst("dies-0")) is True
    _wait(lambda: b.get("default.dies-0") is not None, 5)


def test_no_etcd_fails_fast_with_store_unavailable():
    t = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unavailable"):
        EtcdRegistry.open(["127.0.0.1:1"], prefix="/nothing/")
    assert time.monotonic() - t < 3
