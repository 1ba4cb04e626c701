"""VirtualService HTTP route features end to end: real Envoy sidecars, real traffic, outcomes asserted.

One small mesh for the module (tests/e2e/apps/vs-mesh.yaml: client, echo-v1, shadow). Requests are made
from the `client` pod through its sidecar; the apps report what they saw (path, headers) and count
what they received (`/stats`), so each test asserts where requests went and what reached the app.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

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
    with running_mesh(tmp_path_factory.mktemp("vsfeatures"), APPS / "vs-mesh.yaml", expect=3) as m:
        yield m


@pytest.fixture(autouse=True)
def clean(mesh: Mesh):
    mesh.reset_routing()
    reset_stats(mesh)
    yield


def req(mesh: Mesh, url: str, *, method: str = "GET", count: int = 1, headers: dict | None = None) -> dict:
    args = ["python3", str(REQ), url, "--method", method, "--count", str(count)]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    p = mesh.exec("client", *args, timeout=180)
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def stats(mesh: Mesh, host: str = "echo") -> dict:
    r = req(mesh, f"http://{host}:8080/stats")
    assert r["status"] == {"200": 1}, r
    return json.loads(r["last"]["body"])["count"]


def reset_stats(mesh: Mesh) -> None:
    for host in ("echo", "shadow"):
        assert req(mesh, f"http://{host}:8080/reset")["status"] == {"200": 1}


def apply_vs(mesh: Mesh, http: str) -> None:
    mesh.apply_text(VS.format(http=http))
    mesh.wait_synced()


def test_http10_client(mesh: Mesh) -> None:
    p = mesh.exec("client", "curl", "-s", "--http1.0", "-i", f"{ECHO}/old-client")
    assert p.returncode == 0, p
    assert p.stdout.startswith("HTTP/1.0 200"), p.stdout[:300]
    assert '"path": "/old-client"' in p.stdout and "x-served-by: echo-v1" in p.stdout.lower()


def test_timeout(mesh: Mesh) -> None:
    apply_vs(mesh, """  - match: [{uri: {prefix: /sleep}}]
    timeout: 500ms
    retries: {attempts: 0}
    route: [{destination: {host: echo}}]
""")
    slow = req(mesh, f"{ECHO}/sleep/3000")
    fast = req(mesh, f"{ECHO}/sleep/1")
    assert slow["status"] == {"504": 1}, slow
    assert fast["status"] == {"200": 1}, fast
    assert slow["elapsed"][0] < 3.0, slow  # the sidecar gave up before the app answered


def test_no_retries_503s_show_and_post_is_not_retried_by_default(mesh: Mesh) -> None:
    # no VirtualService: only the safe defaults (connect-failure, refused-stream, reset-before-request)
    get = req(mesh, f"{ECHO}/flaky", count=10)
    assert get["status"] == {"503": 5, "200": 5}, get
    post = req(mesh, f"{ECHO}/flaky", method="POST", count=10)
    assert post["status"] == {"503": 5, "200": 5}, post
    assert stats(mesh) == {"GET /flaky": 10, "POST /flaky": 10}  # nothing was sent twice


def test_retries_on_5xx(mesh: Mesh) -> None:
    apply_vs(mesh, """  - retries: {attempts: 3, perTryTimeout: 5s, retryOn: 5xx}
    route: [{destination: {host: echo}}]
""")
    get = req(mesh, f"{ECHO}/flaky", count=10)
    post = req(mesh, f"{ECHO}/flaky", method="POST", count=10)
    assert get["status"] == {"200": 10}, get
    assert post["status"] == {"200": 10}, post  # the user asked for 5xx: POSTs are retried too
    assert stats(mesh) == {"GET /flaky": 20, "POST /flaky": 20}
    # attempts: 0 disables retries (Istio refuses retryOn beside it: a policy configured but disabled)
    apply_vs(mesh, """  - retries: {attempts: 0}
    route: [{destination: {host: echo}}]
""")
    reset_stats(mesh)
    assert req(mesh, f"{ECHO}/flaky", count=6)["status"] == {"503": 3, "200": 3}


def test_fault_abort_half(mesh: Mesh) -> None:
    apply_vs(mesh, """  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 50}}}
    route: [{destination: {host: echo}}]
  - route: [{destination: {host: echo}}]
""")
    r = mesh.load("client", f"{ECHO}/abort", count=200)
    assert set(r["status"]) == {"200", "418"}, r
    assert 60 <= r["status"]["418"] <= 140, r
    assert r["served_by"]["echo-v1"] == r["status"]["200"], r  # aborted requests never reached the app
    assert stats(mesh) == {"GET /abort": r["status"]["200"]}
    other = mesh.load("client", f"{ECHO}/other", count=50)
    assert other["status"] == {"200": 50}, other


def test_fault_delay(mesh: Mesh) -> None:
    apply_vs(mesh, """  - match: [{uri: {prefix: /delayed}}]
    fault: {delay: {fixedDelay: 1s, percentage: {value: 100}}}
    route: [{destination: {host: echo}}]
  - route: [{destination: {host: echo}}]
""")
    delayed = req(mesh, f"{ECHO}/delayed", count=3)
    assert delayed["status"] == {"200": 3}, delayed
    assert min(delayed["elapsed"]) >= 0.95, delayed  # a fault delay is a lower bound
    assert stats(mesh) == {"GET /delayed": 3}


def test_mirror(mesh: Mesh) -> None:
    apply_vs(mesh, """  - route: [{destination: {host: echo}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 100}
""")
    r = mesh.load("client", f"{ECHO}/mirrored", count=20, concurrency=2)
    assert r["status"] == {"200": 20} and r["served_by"] == {"echo-v1": 20}, r  # answers come from echo only
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and stats(mesh, "shadow").get("GET /mirrored", 0) < 20:
        time.sleep(0.5)
    assert stats(mesh, "shadow") == {"GET /mirrored": 20}
    assert stats(mesh) == {"GET /mirrored": 20}


def test_mirrors_list_with_percentage(mesh: Mesh) -> None:
    apply_vs(mesh, """  - route: [{destination: {host: echo}}]
    mirrors:
    - destination: {host: shadow}
      percentage: {value: 0}
""")
    r = mesh.load("client", f"{ECHO}/never", count=20)
    assert r["status"] == {"200": 20}, r
    time.sleep(1)
    assert stats(mesh, "shadow") == {}


def test_redirect(mesh: Mesh) -> None:
    apply_vs(mesh, """  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: echo.default.svc.cluster.local}
  - match: [{uri: {prefix: /temp}}]
    redirect: {uri: /elsewhere, redirectCode: 307}
  - route: [{destination: {host: echo}}]
""")
    r = req(mesh, f"{ECHO}/old/page")
    assert r["status"] == {"301": 1}, r
    assert r["last"]["headers"]["location"] == "http://echo.default.svc.cluster.local/new", r
    t = req(mesh, f"{ECHO}/temp")
    assert t["status"] == {"307": 1} and t["last"]["headers"]["location"].endswith("/elsewhere"), t
    assert stats(mesh) == {}  # redirects are answered by the sidecar


def test_rewrite_and_headers(mesh: Mesh) -> None:
    apply_vs(mesh, r"""  - match: [{uri: {prefix: /v1/api}}]
    rewrite: {uri: /api, authority: echo-internal}
    route:
    - destination: {host: echo}
      headers: {request: {set: {x-dest: echo}}}
    headers:
      request: {set: {x-route: rewritten}, remove: [x-secret]}
      response: {add: {x-resp: added}, remove: [x-served-by]}
  - match: [{uri: {regex: '^/users/[0-9]+/profile$'}}]
    rewrite: {uriRegexRewrite: {match: '^/users/([0-9]+)/profile$', rewrite: '/profile/\1'}}
    route: [{destination: {host: echo}}]
  - route: [{destination: {host: echo}}]
""")
    r = req(mesh, f"{ECHO}/v1/api/items?q=1", headers={"x-secret": "s3cret", "x-keep": "k"})
    assert r["status"] == {"200": 1}, r
    seen = json.loads(r["last"]["body"])
    assert seen["path"] == "/api/items?q=1", seen
    assert seen["headers"]["host"] == "echo-internal", seen
    assert seen["headers"]["x-route"] == "rewritten" and seen["headers"]["x-dest"] == "echo", seen
    assert "x-secret" not in seen["headers"] and seen["headers"]["x-keep"] == "k", seen
    assert r["last"]["headers"]["x-resp"] == "added" and "x-served-by" not in r["last"]["headers"], r
    u = req(mesh, f"{ECHO}/users/42/profile")
    assert json.loads(u["last"]["body"])["path"] == "/profile/42", u


def test_direct_response(mesh: Mesh) -> None:
    apply_vs(mesh, """  - match: [{uri: {prefix: /maintenance}}]
    directResponse: {status: 503, body: {string: "down for maintenance"}}
    headers: {response: {set: {retry-after: "60"}}}
  - match: [{uri: {exact: /bytes}}]
    directResponse: {status: 200, body: {bytes: aGVsbG8gYnl0ZXM=}}
  - route: [{destination: {host: echo}}]
""")
    r = req(mesh, f"{ECHO}/maintenance/x", method="POST", count=3)
    assert r["status"] == {"503": 3} and r["last"]["body"] == "down for maintenance", r
    assert r["last"]["headers"]["retry-after"] == "60", r
    b = req(mesh, f"{ECHO}/bytes")
    assert b["status"] == {"200": 1} and b["last"]["body"] == "hello bytes", b
    assert stats(mesh) == {}  # the app saw none of it (and a 503 direct response is not retried)


def test_bad_config_is_rejected_whole(mesh: Mesh) -> None:
    good = VS.format(http="  - route: [{destination: {host: echo}}]\n").replace("name: echo", "name: good")
    bad = VS.format(http="""  - timeout: 5 parsecs
    route: [{destination: {host: echo}}]
  - redirect: {uri: /x}
    route: [{destination: {host: echo}}]
  - fault: {abort: {percentage: {value: 150}}}
    route: [{destination: {host: echo}}]
""")
    p = mesh.apply_text(good + "---\n" + bad, check=False)
    assert p.returncode != 0
    out = p.stdout + p.stderr
    assert "spec.http[0].timeout" in out and "5 parsecs" in out, out
    assert "spec.http[1].route" in out and "both route and redirect" in out, out
    assert "spec.http[2].fault.abort" in out, out
    assert mesh.get_json("virtualservices", "-A").get("items", []) == []
