"""Load-balancing policies, retry budget, fault-tolerance modes and EnvoyPatch on a real mesh.

Complements test_dr_policies.py with the DestinationRule features that had only golden/unit coverage.
One small mesh for the module: `hello` (3 replicas: hello-a-0 in locality r1/z1, hello-b-0/1 in r1/z2,
HTTP on 8080) and the `sleep` client in r1/z1. Requests come from inside `sleep` through its sidecar;
assertions are on where they went (`x-served-by`, the replica's pod name), on response headers and on
the caller's Envoy (config dump and stats from its admin socket). Loads are bounded by count.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from .mesh import Mesh, can_run_netns, share, running_mesh, hello_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

APP = Path(__file__).with_name("apps") / "policy_app.py"
HELLO = "http://hello:8080/"
FQDN = "hello.default.svc.cluster.local"
CLUSTER = f"outbound|8080||{FQDN}"
PODS = ("hello-a-0", "hello-b-0", "hello-b-1")

# Run inside a pod: one fresh connection per request (so Envoy makes a new cookie per request when it
# generates them); prints one JSON line: [[status, {header: value}, body], ...] for the requests in argv[1].
PROBE = textwrap.dedent("""\
    import http.client, json, sys, urllib.parse
    out = []
    for r in json.loads(sys.argv[1]):
        u = urllib.parse.urlsplit(r["url"])
        c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
        c.request("GET", u.path + ("?" + u.query if u.query else ""), headers=r.get("headers", {}))
        resp = c.getresponse()
        body = resp.read()
        out.append([resp.status, {k.lower(): v for k, v in resp.getheaders()}, body[:300].decode("latin-1")])
        c.close()
    print(json.dumps(out))
    """)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    with running_mesh(tmp_path_factory.mktemp("lbpol"), text=hello_mesh(APP)) as m:
        yield m


FAILING: set[str] = set()  # replicas switched to fail, switched back after the test
APPLIED: set[tuple[str, str]] = set()  # (kind, name) applied by the test, deleted after it


def switch(mesh: Mesh, pod: str, on: bool) -> None:
    p = mesh.exec(pod, "curl", "-s", "-m", "5", f"http://127.0.0.1:8080/fail?on={int(on)}")
    assert p.returncode == 0 and f"fail={on}" in p.stdout, p
    (FAILING.add if on else FAILING.discard)(pod)


@pytest.fixture(autouse=True)
def clean(mesh: Mesh):
    """Undo what the test did (cheaper than a full reset: each CLI call is a process)."""
    yield
    for pod in sorted(FAILING):
        switch(mesh, pod, False)
    by_kind: dict[str, list[str]] = {}
    for kind, name in sorted(APPLIED):
        by_kind.setdefault(kind.lower() + "s", []).append(name)
    APPLIED.clear()
    for kind, names in by_kind.items():
        mesh.cli("delete", kind, *names, check=False)  # already deleted by the test: fine
    mesh.wait_synced()


def apply(mesh: Mesh, text: str) -> None:
    import yaml

    text = textwrap.dedent(text)
    APPLIED.update((d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(text) if d)
    mesh.apply_text(text)
    mesh.wait_synced()


def pod_info(mesh: Mesh, name: str) -> dict:
    return next(p for p in mesh.status()["pods"] if p["name"] == name)


def admin(mesh: Mesh, pod: str):
    from mizzen.client import EnvoyAdmin

    return EnvoyAdmin(str(Path(pod_info(mesh, pod)["dir"]) / "admin.sock"))


def envoy_cluster(mesh: Mesh, pod: str = "sleep-0", name: str = CLUSTER) -> dict:
    """The cluster as the pod's Envoy runs it (admin /config_dump, proto field names)."""
    d = admin(mesh, pod).get_json("/config_dump?resource=dynamic_active_clusters")
    for c in d["configs"]:
        c = c.get("cluster", c)
        if c.get("name") == name:
            return c
    raise AssertionError(f"{name} not in {pod}'s Envoy")


def stats(mesh: Mesh, pod: str = "sleep-0", name: str = CLUSTER) -> dict[str, int]:
    """Counters of one cluster in the pod's Envoy: {"upstream_rq_retry": n, ...}."""
    raw = admin(mesh, pod).get_json(f"/stats?format=json&filter={FQDN}")["stats"]
    pre = f"cluster.{name}."
    return {s["name"][len(pre):]: s["value"] for s in raw
            if s.get("name", "").startswith(pre) and isinstance(s.get("value"), int)}


def delta(after: dict[str, int], before: dict[str, int], key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)


def probe(mesh: Mesh, pod: str, requests: list[dict], body: bool = False) -> list[tuple]:
    """Send `requests` ({url, headers}) from inside `pod`, one connection each;
    [(status, headers)], or [(status, headers, body)] with `body`."""
    p = mesh.exec(pod, "python3", "-c", PROBE, json.dumps(requests), timeout=120)
    assert p.returncode == 0, p
    return [(s, h, b) if body else (s, h) for s, h, b in json.loads(p.stdout.strip().splitlines()[-1])]


def served(results: list[tuple[int, dict]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for status, h in results:
        assert status == 200, (status, h)
        out[h.get("x-served-by", "-")] = out.get(h.get("x-served-by", "-"), 0) + 1
    return out


# ----------------------------------------------------------------------------------- simple policies

def test_random_reaches_every_replica(mesh: Mesh) -> None:
    apply(mesh, """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: hello}
        spec: {host: hello, trafficPolicy: {loadBalancer: {simple: RANDOM}}}
        """)
    assert envoy_cluster(mesh)["lb_policy"] == "RANDOM"
    r = mesh.load("sleep", HELLO, count=150)
    assert r["status"] == {"200": 150} and set(r["served_by"]) == set(PODS), r
    assert all(n >= 15 for n in r["served_by"].values()), r  # ~50 each expected


def test_passthrough_goes_where_the_caller_connected(mesh: Mesh) -> None:
    """PASSTHROUGH = ORIGINAL_DST: Envoy forwards to the address the app connected to, no balancing.
    Routing is still by Host, so a request for `hello` sent to one replica's pod IP reaches exactly
    that replica (without the rule the sidecar load-balances it). A request to the service VIP goes to
    the VIP: the pod's nat rules for Envoy's own connections pick an endpoint, as kube-proxy does."""
    ips = {p: pod_info(mesh, p)["ip"] for p in PODS}
    to_b0 = [{"url": f"http://{ips['hello-b-0']}:8080/", "headers": {"Host": "hello:8080"}}] * 12
    before = served(probe(mesh, "sleep", to_b0))
    assert len(before) >= 2, before  # routed by Host to the service's cluster: balanced
    apply(mesh, """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: hello}
        spec:
          host: hello
          trafficPolicy:
            loadBalancer: {simple: PASSTHROUGH}
            connectionPool: {tcp: {connectTimeout: 0.5s}}
        """)
    c = envoy_cluster(mesh)
    assert c["type"] == "ORIGINAL_DST" and c["lb_policy"] == "CLUSTER_PROVIDED", c
    to_a0 = [{"url": f"http://{ips['hello-a-0']}:8080/", "headers": {"Host": "hello:8080"}}] * 12
    assert served(probe(mesh, "sleep", to_b0 + to_a0)) == {"hello-b-0": 12, "hello-a-0": 12}
    # (Envoy pools its upstream connection to the VIP, so one pick serves them all, as for any keep-alive client)
    via_vip = served(probe(mesh, "sleep", [{"url": HELLO}] * 10))
    assert sum(via_vip.values()) == 10 and set(via_vip) <= set(PODS), via_vip


# ------------------------------------------------------------------------------------ consistent hash

def test_http_cookie_with_ttl_is_generated_and_pins(mesh: Mesh) -> None:
    # no VirtualService: the implicit default route carries the hash policy too
    apply(mesh, """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: hello}
        spec:
          host: hello
          trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: affinity, path: /, ttl: 60s}}}}
        """)
    first = probe(mesh, "sleep", [{"url": HELLO}] * 6)  # a new connection each: a new cookie each
    cookies = []
    for status, h in first:
        sc = h.get("set-cookie", "")
        assert status == 200 and sc.startswith("affinity=") and "Max-Age=60" in sc and "Path=/" in sc, h
        cookies.append((sc.split(";")[0], h["x-served-by"]))
    assert len({c for c, _ in cookies}) == 6, cookies
    fixed = [(f"affinity=user-{i}", None) for i in range(8)]
    reqs = [{"url": HELLO, "headers": {"Cookie": c}} for c, _ in cookies + fixed for _ in range(8)]
    res = probe(mesh, "sleep", reqs)
    seen = set()
    for i, (cookie, first_host) in enumerate(cookies + fixed):
        group = res[8 * i: 8 * (i + 1)]
        hosts = served(group)
        assert len(hosts) == 1, (cookie, hosts)  # the cookie pins
        if first_host is not None:  # ... to the replica that answered when Envoy made the cookie
            assert hosts == {first_host: 8}, (cookie, first_host, hosts)
        assert all("set-cookie" not in h for _, h in group), group[0]  # sent back: not set again
        seen |= set(hosts)
    assert len(seen) >= 2, seen  # different cookies spread over replicas
    # ttl 0s: Envoy still makes the cookie, a session cookie (no Max-Age)
    apply(mesh, """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: hello}
        spec:
          host: hello
          trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: affinity, ttl: 0s}}}}
        """)
    ((status, h),) = probe(mesh, "sleep", [{"url": HELLO}])
    sc = h.get("set-cookie", "")
    assert status == 200 and sc.startswith("affinity=") and "Max-Age" not in sc, h


def test_use_source_ip_pins_each_client_pod(mesh: Mesh) -> None:
    apply(mesh, """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: hello}
        spec: {host: hello, trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}}
        """)
    # several keep-alive connections (different source ports), one source IP: one replica
    r = mesh.load("sleep", HELLO, count=40, concurrency=4)
    assert r["status"] == {"200": 40} and len(r["served_by"]) == 1, r
    # a replica of hello is a client too (through its own sidecar): pinned as well, maybe elsewhere
    r2 = mesh.load("hello-b-1", HELLO, count=40, concurrency=4)
    assert r2["status"] == {"200": 40} and len(r2["served_by"]) == 1, r2


def test_query_parameter_pins_each_user(mesh: Mesh) -> None:
    apply(mesh, """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: hello}
        spec: {host: hello, trafficPolicy: {loadBalancer: {consistentHash: {httpQueryParameterName: user}}}}
        """)
    users = [f"u{i}" for i in range(8)]
    res = probe(mesh, "sleep", [{"url": f"{HELLO}?user={u}&n={n}"} for u in users for n in range(8)])
    seen = set()
    for i, u in enumerate(users):
        hosts = served(res[8 * i: 8 * (i + 1)])
        assert len(hosts) == 1, (u, hosts)  # other query parameters (n) do not matter
        seen |= set(hosts)
    assert len(seen) >= 2, seen


@pytest.mark.parametrize("algo", ["ringHash", "maglev"])
def test_ring_hash_and_maglev_both_pin(mesh: Mesh, algo: str) -> None:
    cfg = "ringHash: {minimumRingSize: 64}" if algo == "ringHash" else "maglev: {tableSize: 131}"
    apply(mesh, f"""
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {{name: hello}}
        spec:
          host: hello
          trafficPolicy: {{loadBalancer: {{consistentHash: {{httpHeaderName: x-user, {cfg}}}}}}}
        """)
    c = envoy_cluster(mesh)
    if algo == "ringHash":
        assert c["lb_policy"] == "RING_HASH" and c["ring_hash_lb_config"]["minimum_ring_size"] == "64", c
    else:
        assert c["lb_policy"] == "MAGLEV" and c["maglev_lb_config"]["table_size"] == "131", c
    users = [f"user-{i}" for i in range(8)]
    res = probe(mesh, "sleep", [{"url": HELLO, "headers": {"x-user": u}} for u in users for _ in range(6)])
    seen = set()
    for i, u in enumerate(users):
        hosts = served(res[6 * i: 6 * (i + 1)])
        assert len(hosts) == 1, (u, hosts)
        seen |= set(hosts)
    assert len(seen) >= 2, seen


# ------------------------------------------------------------------------------------------- locality

def test_locality_distribute_splits_by_weight(mesh: Mesh) -> None:
    apply(mesh, """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: hello}
        spec:
          host: hello
          trafficPolicy:
            loadBalancer:
              localityLbSetting:
                distribute: [{from: "r1/z1/*", to: {"r1/z1/*": 20, "r1/z2/*": 80}}]
        """)
    c = envoy_cluster(mesh)
    assert "locality_weighted_lb_config" in c.get("common_lb_config", {}), c
    r = mesh.load("sleep", HELLO, count=500, concurrency=4)
    assert r["status"] == {"200": 500}, r
    z1 = share(r["served_by"], "hello-a-")  # the only replica in r1/z1 (without the rule: 1/3)
    assert 14 <= z1 <= 26, r
    assert min(r["served_by"].get("hello-b-0", 0), r["served_by"].get("hello-b-1", 0)) >= 120, r


# ------------------------------------------------------------------------------ retries and budgets

RETRY_5XX = """
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {{name: hello}}
    spec:
      hosts: [hello]
      http: [{{route: [{{destination: {{host: hello}}}}], retries: {{attempts: {n}, retryOn: 5xx}}}}]
    """


def test_retry_budget_caps_retries_when_every_replica_fails(mesh: Mesh) -> None:
    apply(mesh, RETRY_5XX.format(n=4))
    for pod in PODS:
        switch(mesh, pod, True)
    count = 60
    s0 = stats(mesh)
    r = mesh.load("sleep", HELLO, count=count, concurrency=8)
    s1 = stats(mesh)
    assert r["status"] == {"500": count}, r
    # no budget (and Istio's unlimited maxRetries): every request is tried 1 + 4 times
    assert delta(s1, s0, "upstream_rq_retry") == 4 * count, (s0, s1)
    assert delta(s1, s0, "upstream_rq_retry_overflow") == 0, (s0, s1)
    apply(mesh, """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: hello}
        spec: {host: hello, trafficPolicy: {retryBudget: {percent: 10, minRetryConcurrency: 1}}}
        """)
    budget = envoy_cluster(mesh)["circuit_breakers"]["thresholds"][0]["retry_budget"]
    assert budget["budget_percent"]["value"] == 10 and budget["min_retry_concurrency"] == 1, budget
    s2 = stats(mesh)
    r = mesh.load("sleep", HELLO, count=count, concurrency=8)
    s3 = stats(mesh)
    assert r["status"] == {"500": count}, r
    retried, overflow = delta(s3, s2, "upstream_rq_retry"), delta(s3, s2, "upstream_rq_retry_overflow")
    assert overflow > 0 and retried < 2 * count, (retried, overflow)  # capped: < half of the 4×count
    assert delta(s3, s2, "upstream_rq_total") == count + retried, (s2, s3)  # the apps saw fewer requests


def test_failover_retries_on_another_replica(mesh: Mesh) -> None:
    apply(mesh, RETRY_5XX.format(n=2))
    switch(mesh, "hello-b-1", True)
    s0 = stats(mesh)
    r = mesh.load("sleep", HELLO, count=90)
    s1 = stats(mesh)
    assert r["status"] == {"200": 90} and set(r["served_by"]) == {"hello-a-0", "hello-b-0"}, r
    retried = delta(s1, s0, "upstream_rq_retry")
    # the failing replica got about a third of the first tries; each retry went elsewhere and succeeded
    assert retried >= 10 and delta(s1, s0, "upstream_rq_retry_success") == retried, (s0, s1)
    assert delta(s1, s0, "upstream_rq_total") == 90 + retried, (s0, s1)


def test_failfast_returns_errors_at_once(mesh: Mesh) -> None:
    apply(mesh, RETRY_5XX.format(n=0).replace(", retryOn: 5xx", ""))  # attempts: 0 alone, as Istio wants it
    switch(mesh, "hello-b-1", True)
    s0 = stats(mesh)
    r = mesh.load("sleep", HELLO, count=90)
    s1 = stats(mesh)
    assert r["status"].get("500", 0) >= 10 and r["status"]["500"] == r["served_by"].get("hello-b-1"), r
    assert r["status"]["500"] + r["status"].get("200", 0) == 90, r
    assert delta(s1, s0, "upstream_rq_retry") == 0 and delta(s1, s0, "upstream_rq_total") == 90, (s0, s1)


# ---------------------------------------------------------------------------------------- EnvoyPatch

PATCH = """
    apiVersion: mizzen.dev/v1
    kind: EnvoyPatch
    metadata: {{name: tag-responses}}
    spec:
      workloadSelector: {{labels: {{app: sleep}}}}
      patches:
      - applyTo: ROUTE_CONFIGURATION
        name: "8080"
        operation: MERGE
        value:
          response_headers_to_add: [{{header: {{key: x-patched, value: "{tag}"}}}}]
          {extra}
    """
BAD_ROUTES = """virtual_hosts:
          - name: bad
            domains: [bad.example]
            routes: [{match: {safe_regex: {regex: '/api/(unclosed'}}, direct_response: {status: 204}}]"""


def patched(mesh: Mesh, pod: str = "sleep") -> dict[str, int]:
    out: dict[str, int] = {}
    for _, h in probe(mesh, pod, [{"url": HELLO}] * 3):
        out[h.get("x-patched", "-")] = out.get(h.get("x-patched", "-"), 0) + 1
    return out


def test_envoy_patch_changes_real_responses_and_is_removed(mesh: Mesh) -> None:
    assert patched(mesh) == {"-": 3}
    apply(mesh, PATCH.format(tag="v1", extra=""))
    assert patched(mesh) == {"v1": 3}
    assert patched(mesh, "hello-a-0") == {"-": 3}  # only the selected proxies (app: sleep)
    # a patch Envoy would reject is refused with Envoy's reason, and the running one stays
    p = mesh.apply_text(textwrap.dedent(PATCH.format(tag="v2", extra=BAD_ROUTES)), check=False)  # same name
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "Envoy would reject" in out and "missing )" in out, out
    mesh.wait_synced()
    assert patched(mesh) == {"v1": 3}
    items = mesh.get_json("envoypatches")["items"]
    assert [i["metadata"]["name"] for i in items] == ["tag-responses"], items
    assert "v1" in json.dumps(items[0]["spec"]) and "unclosed" not in json.dumps(items[0]["spec"]), items
    mesh.cli("delete", "envoypatches", "tag-responses")
    mesh.wait_synced()
    assert patched(mesh) == {"-": 3}
