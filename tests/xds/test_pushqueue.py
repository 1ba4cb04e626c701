import pytest

from mizzen.xds.pushqueue import ALL, PushQueue


def test_quiet_period_and_merge():
    q = PushQueue(quiet_period=0.1, max_wait=1.0)
    assert not q.pending and q.next_deadline() is None and not q.due(100.0) and q.take() is None
    q.add({"a"}, 10.0)
    q.add(["b", "c"], 10.05)
    assert q.next_deadline() == pytest.approx(10.15)
    assert not q.due(10.1)
    assert q.due(10.15)
    ev = q.take()
    assert ev.keys == frozenset({"a", "b", "c"}) and ev.count == 2 and ev.first == 10.0 and ev.last == 10.05
    assert ev.affects("a") and not ev.affects("z") and not ev.all
    assert not q.pending and q.take() is None


def test_max_wait_bounds_a_steady_stream():
    q = PushQueue(quiet_period=0.1, max_wait=0.5)
    t = 0.0
    q.add({"k0"}, t)
    flushed_at = None
    for i in range(1, 100):
        t = i * 0.05  # events every 50 ms never leave a 100 ms quiet gap
        if q.due(t):
            flushed_at = t
            break
        q.add({f"k{i}"}, t)
    assert flushed_at == pytest.approx(0.5)
    assert len(q.take().keys) == 10


def test_all_absorbs_keys():
    q = PushQueue(0.0, 0.0)
    q.add({"a"}, 1.0)
    q.add(ALL, 1.0)
    q.add({"b"}, 1.0)
    assert q.due(1.0)
    ev = q.take()
    assert ev.all and ev.keys is None and ev.affects("anything")
    q.add(None, 2.0)
    assert q.take().all
    q.add("single-key", 3.0)
    assert q.take().keys == frozenset({"single-key"})


def test_new_cycle_after_take():
    q = PushQueue(1.0, 5.0)
    q.add({"a"}, 0.0)
    q.take()
    q.add({"b"}, 100.0)
    assert q.next_deadline() == 101.0
    assert q.take().keys == frozenset({"b"})


def test_leading_edge_pushes_a_lone_change_at_once_and_debounces_what_follows():
    q = PushQueue(quiet_period=0.1, max_wait=1.0, leading=True)
    q.add({"a"}, 10.0)  # the first change ever: after a quiet period
    assert q.next_deadline() == 10.0 and q.due(10.0)
    q.add({"b"}, 10.0)  # same instant, before the flush ran: merged into it
    assert q.take().keys == frozenset({"a", "b"})
    q.add({"c"}, 10.05)  # within the quiet period of the previous change: debounced as without `leading`
    assert q.next_deadline() == pytest.approx(10.15) and not q.due(10.1)
    q.add({"d"}, 10.12)
    assert q.next_deadline() == pytest.approx(10.22)
    assert q.take().keys == frozenset({"c", "d"})
    q.add({"e"}, 10.3)  # 0.18 s after the previous change: quiet again, at once
    assert q.due(10.3) and q.take().keys == frozenset({"e"})
    for k in range(20):  # a steady stream 50 ms apart: one at-once flush, then merged (max wait bounds it)
        q.add({k}, 20.0 + 0.05 * k)
        if k == 0:
            assert q.due(20.0) and q.take().count == 1
    assert not q.due(20.0 + 0.05 * 19) and q.next_deadline() == pytest.approx(20.05 + 1.0)
    assert q.take().count == 19
    plain = PushQueue(quiet_period=0.1, max_wait=1.0)  # the default: no leading edge
    plain.add({"a"}, 10.0)
    assert plain.next_deadline() == pytest.approx(10.1)


def test_invalid():
    with pytest.raises(ValueError):
        PushQueue(-1, 1)


def test_xds_core_is_sans_io():
    """Nothing in mizzen.xds imports I/O, threads, the event loop or the clock."""
    import ast
    import pathlib

    import mizzen.xds

    banned = {"grpc", "socket", "threading", "asyncio", "subprocess", "time", "datetime", "os", "selectors"}
    for path in pathlib.Path(mizzen.xds.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for n in names:
                assert n.split(".")[0] not in banned, f"{path.name} imports {n}"
