"""The descriptor scheme, the table, the answer (headers, shadow, delay, failure modes) and priority classes,
with the in-memory counters on a simulated clock."""
import pytest

from mizzen.api import load_text
from mizzen.ratelimit.engine import DELAY_HEADER, fail, plan, respond
from mizzen.ratelimit.memory import MemoryCounters
from mizzen.ratelimit.stats import Stats
from mizzen.ratelimit.table import build_table

LIMITS = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: rl, namespace: t}
spec:
  host: api
  mode: global
  failureMode: deny
  response: {status: 503, body: slow down}
  limits:
  - {name: tb, requestsPerUnit: 2, unit: second, key: [sourceWorkload, {header: x-user}, {value: k}]}
  - {name: sh, requestsPerUnit: 1, unit: minute, algorithm: fixed_window, shadow: true}
  - {name: dl, rate: 10, burst: 1, algorithm: gcra, strategy: delay, maxDelay: 300ms}
  - name: pr
    requestsPerUnit: 30
    unit: second
    priority: {header: x-tier, classes: {gold: 70, bronze: 30}}
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: local-one, namespace: t}
spec:
  host: api
  limits: [{name: l, rate: 5}]
---
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: lenient, namespace: t}
spec:
  host: api
  mode: global
  limits: [{name: a, rate: 5}]
"""


@pytest.fixture
def table():
    return build_table(load_text(LIMITS).resources)


def ask(table, mem, now, limit, entries=(), hits=None, request_hits=0):
    checks = plan(table, "mizzen", [([("mizzen_limit", limit), *entries], hits)], request_hits)
    return checks, respond(checks, mem.run(checks, now))


def test_table_keeps_global_limits_only_with_stable_version(table):
    assert sorted(table.limits) == ["t/lenient/a", "t/rl/dl", "t/rl/pr", "t/rl/sh", "t/rl/tb"]
    assert build_table(load_text(LIMITS).resources).version == table.version
    assert table.get("t/rl/tb").failure_mode == "deny" and table.get("t/lenient/a").failure_mode == "allow"


def test_counter_key_uses_the_declared_entries_only(table):
    lim = table.get("t/rl/tb")
    a = lim.counter_key({"source_workload": "web", "header:x-user": "u1", "other": "ignored"})
    assert a == lim.counter_key({"source_workload": "web", "header:x-user": "u1"}) == "t/rl/tb|web|u1|k"
    assert lim.counter_key({}) == "t/rl/tb|||k"  # absent entries share the empty value
    assert lim.counter_key({"source_workload": "a|b"}) != lim.counter_key({"source_workload": "a", "x": "b"})


def test_reject_headers_body_and_per_key_counters(table):
    mem = MemoryCounters()
    user = [("source_workload", "web"), ("header:x-user", "u1")]
    _, a1 = ask(table, mem, 100.0, "t/rl/tb", user)
    _, a2 = ask(table, mem, 100.0, "t/rl/tb", user)
    _, a3 = ask(table, mem, 100.2, "t/rl/tb", user)
    assert (a1.ok, a2.ok, a3.ok) == (True, True, False)
    assert dict(a1.response_headers) == {"x-ratelimit-limit": "2, 2;w=1", "x-ratelimit-remaining": "1",
                                         "x-ratelimit-reset": "1"}
    assert dict(a3.response_headers)["retry-after"] == "1"  # 0.3 s rounded up
    assert (a3.status, a3.body) == (503, "slow down")
    _, other = ask(table, mem, 100.2, "t/rl/tb", [("source_workload", "web"), ("header:x-user", "u2")])
    assert other.ok


def test_hits_addend_from_descriptor_wins_over_request(table):
    mem = MemoryCounters()
    checks, a = ask(table, mem, 0.0, "t/rl/tb", hits=None, request_hits=2)
    assert checks[0].hits == 2 and a.ok and dict(a.response_headers)["x-ratelimit-remaining"] == "0"
    checks, a = ask(table, mem, 5.0, "t/rl/tb", hits=3, request_hits=1)
    assert checks[0].hits == 3 and not a.ok


def test_shadow_counts_but_never_rejects_nor_sets_headers(table):
    mem, stats = MemoryCounters(), Stats()
    for t in (0.0, 1.0, 2.0):
        checks, a = ask(table, mem, t, "t/rl/sh")
        stats.record(checks, a)
        assert a.ok and a.response_headers == []
    m = stats.to_dict()["limits"]["t/rl/sh"]
    assert (m["within_limit"], m["shadow_mode"]) == (1, 2)


def test_delay_answer_carries_the_fault_header(table):
    mem = MemoryCounters()
    delays = [ask(table, mem, 0.0, "t/rl/dl")[1] for _ in range(5)]
    assert [a.ok for a in delays] == [True, True, True, True, False]
    assert [dict(a.request_headers).get(DELAY_HEADER) for a in delays[:4]] == [None, "100", "200", "300"]


def test_unknown_descriptors_and_domains_are_ok(table):
    mem = MemoryCounters()
    _, a = ask(table, mem, 0.0, "t/rl/nope")
    assert a.ok and a.response_headers == []
    checks = plan(table, "other", [([("mizzen_limit", "t/rl/tb")], None)])
    assert checks[0].limit is None


def test_failure_mode_per_limit(table):
    deny = plan(table, "mizzen", [([("mizzen_limit", "t/rl/tb")], None)])
    allow = plan(table, "mizzen", [([("mizzen_limit", "t/lenient/a")], None)])
    assert not fail(deny).ok and dict(fail(deny).response_headers) == {"retry-after": "1"}
    assert fail(allow).ok
    stats = Stats()
    stats.record(deny, fail(deny), failed=True)
    assert stats.to_dict()["limits"]["t/rl/tb"]["failure_mode_denied"] == 1


def _load(table, seconds, rps_by_class):
    """Requests at rps per class for `seconds` of simulated time; admitted counts per class."""
    mem = MemoryCounters()
    got = {c: 0 for c in rps_by_class}
    events = sorted((i / rps, c) for c, rps in rps_by_class.items() for i in range(int(seconds * rps)))
    for t, c in events:
        entries = [("mizzen_class", c)] if c != "none" else []
        _, a = ask(table, mem, 1000.0 + t, "t/rl/pr", entries)
        got[c] += a.ok
    return {c: n / seconds for c, n in got.items()}


def test_priority_gold_keeps_its_share_and_bronze_absorbs_the_cut(table):
    rates = _load(table, 20, {"gold": 100, "bronze": 100})
    assert rates["gold"] + rates["bronze"] == pytest.approx(30, abs=2.5)
    assert rates["gold"] == pytest.approx(21, abs=2.0) and rates["bronze"] == pytest.approx(9, abs=2.0)


def test_priority_unused_share_is_borrowed(table):
    assert _load(table, 20, {"bronze": 100})["bronze"] == pytest.approx(30, abs=2.5)
    r = _load(table, 20, {"gold": 10, "bronze": 100})
    assert r["gold"] == pytest.approx(10, abs=0.6) and r["bronze"] == pytest.approx(20, abs=2.5)
    # the unclassified have no reserved share (70 + 30 = 100%): they only borrow, first come first served
    r = _load(table, 20, {"none": 100, "gold": 100})
    assert r["gold"] >= 19 and r["gold"] + r["none"] == pytest.approx(30, abs=2.5)
    r = _load(table, 20, {"none": 100})
    assert r["none"] == pytest.approx(30, abs=2.5)


def test_memory_counters_sweep_expired_keys(table):
    mem = MemoryCounters()
    for i in range(50):
        ask(table, mem, 0.0, "t/rl/tb", [("header:x-user", f"u{i}")])
    assert len(mem) == 50
    assert mem.sweep(0.1) == 0 and mem.sweep(10.0) == 50 and len(mem) == 0
