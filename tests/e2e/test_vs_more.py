"""More VirtualService / DestinationRule / ServiceEntry features end to end, with real traffic through
real Envoy sidecars: ServiceEntry `resolution: DNS` (Envoy resolves an endpoint's host name itself),
`corsPolicy`, `redirect.derivePort`, `delegate`, and `consistentHash.useSourceIp` on a TCP port.

One small mesh for the module (tests/e2e/apps/vs-more-mesh.yaml: client, echo-v1, shadow). Requests are
made from the `client` pod through its sidecar; the apps say who answered (`x-served-by`) and count
what they received (`/stats`), so each test asserts where requests went and what reached the app.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import pytest

from .mesh import Mesh, can_run_netns, running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

APPS = Path(__file__).with_name("apps")
REQ = APPS / "req.py"
ECHO = "http://echo:8080"
VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: [echo]
  http:
{http}"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    with running_mesh(tmp_path_factory.mktemp("vsmore"), APPS / "vs-more-mesh.yaml", expect=3) as m:
        yield m


@pytest.fixture(autouse=True)
def clean(mesh: Mesh):
    mesh.reset_routing()
    for it in mesh.get_json("serviceentries", "-A").get("items", []):
        mesh.cli("delete", "serviceentries", it["metadata"]["name"], "-n", it["metadata"]["namespace"])
    reset_stats(mesh)
    yield


def req(mesh: Mesh, url: str, *, method: str = "GET", count: int = 1, headers: dict | None = None) -> dict:
    args = ["python3", str(REQ), url, "--method", method, "--count", str(count)]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    p = mesh.exec("client", *args, timeout=180)
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def served_by(r: dict) -> str | None:
    return r["last"].get("headers", {}).get("x-served-by")


def until(probe: Callable[[], dict], ok: Callable[[dict], bool], timeout: float = 20) -> dict:
    """Probe until `ok` (config pushes are asynchronous); returns the last result either way."""
    deadline = time.monotonic() + timeout
    while True:
        r = probe()
        if ok(r) or time.monotonic() > deadline:
            return r
        time.sleep(0.5)


def stats(mesh: Mesh, host: str = "echo") -> dict:
    r = req(mesh, f"http://{host}:8080/stats")
    assert r["status"] == {"200": 1}, r
    return json.loads(r["last"]["body"])["count"]


def reset_stats(mesh: Mesh) -> None:
    for host in ("echo", "shadow"):
        assert req(mesh, f"http://{host}:8080/reset")["status"] == {"200": 1}


def apply(mesh: Mesh, text: str) -> None:
    mesh.apply_text(text)
    mesh.wait_synced()


def apply_vs(mesh: Mesh, http: str) -> None:
    apply(mesh, VS.format(http=http))


def envoy_admin(mesh: Mesh, pod: str = "client-0"):
    from mizzen.client import EnvoyAdmin

    info = next(p for p in mesh.status()["pods"] if p["name"] == pod)
    return EnvoyAdmin(str(Path(info["dir"]) / "admin.sock"))


def cluster_stats(mesh: Mesh, name: str) -> dict[str, int]:
    raw = envoy_admin(mesh).get_json(f"/stats?format=json&filter={name.split('|')[-1]}")["stats"]
    pre = f"cluster.{name}."
    return {s["name"][len(pre):]: s.get("value", 0) for s in raw if s.get("name", "").startswith(pre)}


# --------------------------------------------------------------------------- ServiceEntry DNS

def _own_name_and_ip(mesh: Mesh) -> tuple[str, str]:
    """The client pod's own name and IP, from its /etc/hosts (the only place the name resolves)."""
    p = mesh.exec("client", "cat", "/etc/hosts")
    assert p.returncode == 0, p.stderr
    rows = [ln.split() for ln in p.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    mine = [r for r in rows if r[0].startswith("10.") and len(r) == 2 and r[1].startswith("client")]
    assert len(mine) == 1, p.stdout
    return mine[0][1], mine[0][0]


def test_service_entry_dns_resolved_by_envoy(mesh: Mesh) -> None:
    # The endpoint is a host name that only the client pod's /etc/hosts knows (its own pod name): there
    # is no DNS server in the mesh, so the request can only arrive if the sidecar's Envoy resolved it
    # (STRICT_DNS cluster, c-ares reading the pod's bind-mounted /etc/hosts).
    name, ip = _own_name_and_ip(mesh)
    apply(mesh, f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: legacy}}
spec:
  hosts: [legacy.example.internal]
  ports: [{{number: 9090, name: http, protocol: HTTP}}]
  location: MESH_EXTERNAL
  resolution: DNS
  endpoints: [{{address: {name}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: nowhere}}
spec:
  hosts: [nowhere.example.internal]
  ports: [{{number: 9090, name: http, protocol: HTTP}}]
  location: MESH_EXTERNAL
  resolution: DNS
  endpoints: [{{address: no-such-host.invalid}}]
""")
    url = "http://legacy.example.internal:9090/dns"
    r = until(lambda: req(mesh, url, count=3), lambda r: r["status"] == {"200": 3})  # hosts file + DNS refresh
    assert r["status"] == {"200": 3}, r
    assert served_by(r) == "client-local", r
    assert json.loads(r["last"]["body"])["path"] == "/dns", r
    # it went through the DNS cluster, whose one host is the name resolved to the pod's IP
    cname = "outbound|9090||legacy.example.internal"
    cl = envoy_admin(mesh).get_json("/clusters?format=json")["cluster_statuses"]
    hosts = next(c for c in cl if c["name"] == cname)["host_statuses"]
    assert [(h["address"]["socket_address"]["address"], h.get("hostname")) for h in hosts] == [(ip, name)], hosts
    st = cluster_stats(mesh, cname)
    assert st.get("upstream_rq_200", 0) >= 3 and st.get("update_success", 0) >= 1, st
    # a name nobody resolves: the cluster stays empty and the sidecar answers 503 itself
    bad = req(mesh, "http://nowhere.example.internal:9090/x")
    assert bad["status"] == {"503": 1}, bad
    assert served_by(bad) is None, bad


# --------------------------------------------------------------------------- CORS

CORS_VS = """  - match: [{uri: {prefix: /api}}]
    corsPolicy:
      allowOrigins: [{exact: "http://good.example"}, {prefix: "http://dev."}]
      allowMethods: [GET, POST]
      allowHeaders: [x-user]
      exposeHeaders: [x-served-by]
      maxAge: 1h
      allowCredentials: true
    route: [{destination: {host: echo}}]
  - match: [{uri: {prefix: /strict}}]
    corsPolicy:
      allowOrigins: [{exact: "http://good.example"}]
      allowMethods: [GET]
      unmatchedPreflights: IGNORE
    route: [{destination: {host: echo}}]
  - route: [{destination: {host: echo}}]
"""


def preflight(mesh: Mesh, path: str, origin: str) -> dict:
    return req(mesh, f"{ECHO}{path}", method="OPTIONS",
               headers={"Origin": origin, "Access-Control-Request-Method": "POST"})


def test_cors(mesh: Mesh) -> None:
    apply_vs(mesh, CORS_VS)
    until(lambda: preflight(mesh, "/api/items", "http://good.example"),
          lambda r: "access-control-allow-origin" in r["last"]["headers"])
    reset_stats(mesh)  # a probe made before the push reached the app
    ok = preflight(mesh, "/api/items", "http://good.example")
    h = ok["last"]["headers"]
    assert ok["status"] == {"200": 1}, ok
    assert h["access-control-allow-origin"] == "http://good.example", h
    assert h["access-control-allow-methods"] == "GET,POST", h
    assert h["access-control-allow-headers"] == "x-user", h
    assert h["access-control-max-age"] == "3600", h
    assert h["access-control-allow-credentials"] == "true", h
    assert served_by(ok) is None, ok  # the sidecar answered the preflight itself
    dev = preflight(mesh, "/api/items", "http://dev.example")  # prefix match
    assert dev["last"]["headers"].get("access-control-allow-origin") == "http://dev.example", dev
    # a disallowed origin gets no CORS headers; its preflight is forwarded to the app (FORWARD default)
    bad = preflight(mesh, "/api/items", "http://evil.example")
    assert bad["status"] == {"200": 1} and served_by(bad) == "echo-v1", bad
    assert not [k for k in bad["last"]["headers"] if k.startswith("access-control-")], bad
    # actual (non-preflight) requests: the allowed origin is echoed, exposed headers listed
    get = req(mesh, f"{ECHO}/api/items", headers={"Origin": "http://good.example"})
    assert get["last"]["headers"]["access-control-allow-origin"] == "http://good.example", get
    assert get["last"]["headers"]["access-control-expose-headers"] == "x-served-by", get
    evil_get = req(mesh, f"{ECHO}/api/items", headers={"Origin": "http://evil.example"})
    assert evil_get["status"] == {"200": 1} and "access-control-allow-origin" not in evil_get["last"]["headers"]
    # unmatchedPreflights: IGNORE → a disallowed preflight is answered by the sidecar, never forwarded
    ign = preflight(mesh, "/strict", "http://evil.example")
    assert ign["status"] == {"200": 1} and served_by(ign) is None, ign
    assert "access-control-allow-origin" not in ign["last"]["headers"], ign  # (Envoy still lists the methods)
    # routes without corsPolicy: no CORS at all
    other = preflight(mesh, "/other", "http://good.example")
    assert served_by(other) == "echo-v1" and "access-control-allow-origin" not in other["last"]["headers"]
    assert stats(mesh) == {"OPTIONS /api": 1, "GET /api": 2, "OPTIONS /other": 1}, stats(mesh)


def test_cors_bad_config_names_the_field(mesh: Mesh) -> None:
    p = mesh.apply_text(VS.format(http="""  - corsPolicy: {allowMethods: [get], maxAge: 1.5s, allowOrigins: [{}]}
    route: [{destination: {host: echo}}]
"""), check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert "spec.http[0].corsPolicy" in out and "allowMethods[0]" in out and "'get'" in out, out
    assert "maxAge" in out and "allowOrigins[0]" in out, out
    assert mesh.get_json("virtualservices", "-A").get("items", []) == []


# --------------------------------------------------------------------------- redirect ports

def test_redirect_ports(mesh: Mesh) -> None:
    apply_vs(mesh, """  - match: [{uri: {prefix: /same}}]
    redirect: {authority: other.example, derivePort: FROM_REQUEST_PORT}
  - match: [{uri: {prefix: /default}}]
    redirect: {authority: other.example, derivePort: FROM_PROTOCOL_DEFAULT}
  - match: [{uri: {prefix: /explicit}}]
    redirect: {uri: /x, authority: other.example, port: 9443, scheme: https, redirectCode: 308}
  - route: [{destination: {host: echo}}]
""")
    same = until(lambda: req(mesh, f"{ECHO}/same/p"), lambda r: r["status"] == {"301": 1})
    assert same["status"] == {"301": 1}, same
    assert same["last"]["headers"]["location"] == "http://other.example:8080/same/p", same
    d = req(mesh, f"{ECHO}/default/p")
    assert d["last"]["headers"]["location"] == "http://other.example/default/p", d
    e = req(mesh, f"{ECHO}/explicit/p")
    assert e["status"] == {"308": 1} and e["last"]["headers"]["location"] == "https://other.example:9443/x", e
    assert stats(mesh) == {}


# --------------------------------------------------------------------------- delegate

ROOT = VS.format(http="""  - match: [{uri: {prefix: /api}}]
    headers: {request: {set: {x-root: "yes"}}}
    delegate: {name: echo-api}
  - route: [{destination: {host: echo}}]
""")
DELEGATE = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo-api}}
spec:
  http:
  - match: [{{uri: {{prefix: /api/users}}}}]
    route: [{{destination: {{host: {users}}}}}]
  - route: [{{destination: {{host: echo}}}}]
    headers: {{request: {{set: {{x-delegate: rest}}}}}}
"""


def test_delegate(mesh: Mesh) -> None:
    apply(mesh, ROOT + "---\n" + DELEGATE.format(users="shadow"))
    users = until(lambda: req(mesh, f"{ECHO}/api/users/7"), lambda r: served_by(r) == "shadow")
    assert served_by(users) == "shadow", users  # the delegate's route, under the root's /api
    seen = json.loads(users["last"]["body"])["headers"]
    assert seen["x-root"] == "yes", seen  # inherited from the root route (the delegate route sets none)
    rest = req(mesh, f"{ECHO}/api/other")
    seen = json.loads(rest["last"]["body"])["headers"]
    assert served_by(rest) == "echo-v1" and seen["x-delegate"] == "rest" and "x-root" not in seen, rest
    plain = req(mesh, f"{ECHO}/users/7")  # not under /api: the root's own second route
    assert served_by(plain) == "echo-v1" and "x-delegate" not in json.loads(plain["last"]["body"])["headers"]
    # changing only the delegate re-pushes the proxies that use the root
    apply(mesh, DELEGATE.format(users="echo"))
    moved = until(lambda: req(mesh, f"{ECHO}/api/users/7"), lambda r: served_by(r) == "echo-v1")
    assert served_by(moved) == "echo-v1", moved
    # deleting the delegate: the delegating route is omitted, /api falls through to the next route
    mesh.cli("delete", "virtualservices", "echo-api")
    gone = until(lambda: req(mesh, f"{ECHO}/api/other"),
                 lambda r: "x-delegate" not in json.loads(r["last"]["body"])["headers"])
    seen = json.loads(gone["last"]["body"])["headers"]
    assert served_by(gone) == "echo-v1" and "x-delegate" not in seen and "x-root" not in seen, gone
    # a delegate may not delegate again (one level only): rejected at apply, naming the field
    p = mesh.apply_text(DELEGATE.format(users="echo") + """  - match: [{uri: {prefix: /api/deeper}}]
    delegate: {name: another}
""", check=False)
    assert p.returncode != 0 and "http[2].delegate" in p.stdout + p.stderr, p


# --------------------------------------------------------------------------- TCP source-IP hash

def test_tcp_consistent_hash_on_source_ip(mesh: Mesh) -> None:
    # tcpecho:9000 is a `tcp-` port (tcp_proxy, no HTTP routing) in front of echo-v1 and shadow; each
    # request below is a new TCP connection from the client pod.
    url = "http://tcpecho:9000/tcp"

    def spread(n: int = 12) -> set[str]:
        out = set()
        for _ in range(n):
            r = req(mesh, url)
            assert r["status"] == {"200": 1}, r
            out.add(served_by(r))
        return out

    assert spread() == {"echo-v1", "shadow"}  # round robin: connections go to both
    apply(mesh, """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcpecho}
spec:
  host: tcpecho
  trafficPolicy:
    loadBalancer:
      consistentHash: {useSourceIp: true}
""")
    time.sleep(1)  # the listener update drains the old chain's connections; new ones use the new one
    assert len(spread(20)) == 1  # every connection from this source IP lands on one backend
