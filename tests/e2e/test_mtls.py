"""Mesh mTLS end to end: real Envoys, real TLS, real traffic (issue 9: "Tests").

One mesh for the module, run with 20 s workload certificates (so every test also runs while certificates
rotate): `echo` (2 replicas, service account `echo`, an app that answers with the headers it received),
`sleep` (a meshed caller, service account `sleep`) and `plain` (no sidecar). No security config at first, so
the mesh is PERMISSIVE with auto mTLS.
"""
from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mizzen.client import EnvoyAdmin

from .mesh import SLEEP_COMMAND, Mesh, can_run_netns, running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

ECHO = Path(__file__).parent / "apps" / "echo_app.py"
TD = "cluster.local"
SLEEP_ID = f"spiffe://{TD}/ns/default/sa/sleep"
ECHO_ID = f"spiffe://{TD}/ns/default/sa/echo"
STRICT = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
"""


def mesh_text() -> str:
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: Service
        metadata: {{name: echo}}
        spec:
          selector: {{app: echo}}
          ports: [{{port: 8080, name: http}}]
        ---
        apiVersion: mizzen.dev/v1
        kind: Workload
        metadata: {{name: echo, labels: {{app: echo}}}}
        spec:
          replicas: 2
          serviceAccount: echo
          command: [{sys.executable}, {ECHO}]
          ports: [{{containerPort: 8080}}]
        ---
        apiVersion: mizzen.dev/v1
        kind: Workload
        metadata: {{name: sleep, labels: {{app: sleep}}}}
        spec:
          serviceAccount: sleep
          command: {SLEEP_COMMAND}
        ---
        apiVersion: mizzen.dev/v1
        kind: Workload
        metadata: {{name: plain, labels: {{app: plain}}}}
        spec:
          sidecar: false
          command: {SLEEP_COMMAND}
        """)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Mesh:
    with running_mesh(tmp_path_factory.mktemp("mtls"), text=mesh_text(), extra=("--cert-ttl", "20s")) as m:
        yield m


def curl(mesh: Mesh, pod: str, *extra: str, url: str = "http://echo:8080/hello") -> tuple[int, str, str]:
    """(curl's exit code, HTTP code or 000, body) of one request from `pod`."""
    p = mesh.exec(pod, "curl", "-sS", "-m", "5", "-w", "\n%{http_code}", *extra, url, timeout=30)
    body, _, code = p.stdout.rpartition("\n")
    return p.returncode, code.strip(), body


def echo_headers(mesh: Mesh, pod: str, *extra: str) -> dict:
    rc, code, body = curl(mesh, pod, *extra)
    assert (rc, code) == (0, "200"), (rc, code, body)
    return json.loads(body)["headers"]


def apply_and_sync(mesh: Mesh, text: str) -> None:
    mesh.apply_text(text)
    time.sleep(0.5)  # the control plane's debounce
    mesh.wait_synced()


def delete_and_sync(mesh: Mesh, kind: str, name: str) -> None:
    mesh.cli("delete", kind, name)
    time.sleep(0.5)
    mesh.wait_synced()


def pod_dir(mesh: Mesh, pod: str) -> Path:
    return mesh.state_dir / "pods" / pod


def agent_state(mesh: Mesh, pod: str) -> dict:
    return json.loads((pod_dir(mesh, pod) / "agent.state").read_text())


def test_permissive_by_default_meshed_caller_gets_mtls_plaintext_still_accepted(mesh: Mesh) -> None:
    h = echo_headers(mesh, "sleep-0")
    xfcc = h.get("x-forwarded-client-cert", "")
    # the server's sidecar saw the caller's certificate: its SPIFFE ID, and its own identity as By=
    assert f"URI={SLEEP_ID}" in xfcc and f"By={ECHO_ID}" in xfcc, xfcc
    # a sidecar-less caller is accepted in plaintext on the same port, and cannot forge the header
    h = echo_headers(mesh, "plain-0", "-H", f"x-forwarded-client-cert: URI=spiffe://{TD}/ns/default/sa/admin")
    assert "x-forwarded-client-cert" not in h, h
    # and a meshed app cannot forge it either: its own sidecar drops it, the server's sets the real one
    h = echo_headers(mesh, "sleep-0", "-H", f"x-forwarded-client-cert: URI=spiffe://{TD}/ns/default/sa/admin")
    assert "sa/admin" not in h["x-forwarded-client-cert"] and f"URI={SLEEP_ID}" in h["x-forwarded-client-cert"]


def test_strict_refuses_sidecarless_plaintext_at_the_connection(mesh: Mesh) -> None:
    apply_and_sync(mesh, STRICT)
    try:
        rc, code, body = curl(mesh, "plain-0")
        # no HTTP answer at all: the server's sidecar expects a TLS handshake and closes the connection
        assert code == "000" and rc in (52, 56, 35), (rc, code, body)
        h = echo_headers(mesh, "sleep-0")
        assert f"URI={SLEEP_ID}" in h["x-forwarded-client-cert"]
    finally:
        delete_and_sync(mesh, "peerauthentication", "default")
    assert echo_headers(mesh, "plain-0") is not None  # PERMISSIVE again


def test_workload_disable_makes_callers_use_plaintext(mesh: Mesh) -> None:
    """A workload-level DISABLE: callers' auto mTLS sees it in EDS and sends plaintext (no XFCC), it works."""
    apply_and_sync(mesh, textwrap.dedent("""\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: echo-plain, namespace: default}
        spec:
          selector: {matchLabels: {app: echo}}
          mtls: {mode: DISABLE}
        """))
    try:
        h = echo_headers(mesh, "sleep-0")
        assert "x-forwarded-client-cert" not in h, h
    finally:
        delete_and_sync(mesh, "peerauthentication", "echo-plain")
    assert f"URI={SLEEP_ID}" in echo_headers(mesh, "sleep-0")["x-forwarded-client-cert"]


def test_secure_naming_rejects_a_server_with_the_wrong_identity(mesh: Mesh) -> None:
    """DestinationRule ISTIO_MUTUAL whose subjectAltNames the real servers do not carry: the caller's Envoy
    refuses the handshake (503); with the right identity it passes."""
    dr = textwrap.dedent("""\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: echo}
        spec:
          host: echo
          trafficPolicy:
            tls: {mode: ISTIO_MUTUAL, subjectAltNames: ["%s"]}
        """)
    try:
        apply_and_sync(mesh, dr % f"spiffe://{TD}/ns/default/sa/impostor")
        rc, code, body = curl(mesh, "sleep-0")
        assert code == "503", (rc, code, body)
        apply_and_sync(mesh, dr % ECHO_ID)
        assert f"URI={SLEEP_ID}" in echo_headers(mesh, "sleep-0")["x-forwarded-client-cert"]
    finally:
        delete_and_sync(mesh, "destinationrule", "echo")


def test_switch_namespace_permissive_to_strict_under_load_zero_failures(mesh: Mesh) -> None:
    stop = mesh.state_dir.parent / "mtls-switch.stop"
    stop.unlink(missing_ok=True)
    bg = mesh.load_background("sleep-0", "http://echo:8080/", rps=200, seconds=120, concurrency=8, stop_file=stop)
    try:
        time.sleep(5)
        apply_and_sync(mesh, STRICT)
        time.sleep(8)  # STRICT under load
        rc, code, _ = curl(mesh, "plain-0")
        assert code == "000", (rc, code)
    finally:
        stop.touch()
        out, err = bg.communicate(timeout=180)
        delete_and_sync(mesh, "peerauthentication", "default")
    r = json.loads(out.strip().splitlines()[-1])
    assert r["total"] >= 200 * 10, r
    assert r["errors"] == {} and set(r["status"]) == {"200"}, r
    assert {"echo-0", "echo-1"} <= set(r["served_by"]), r


def _certs_serials(mesh: Mesh, pod: str) -> set[str]:
    certs = EnvoyAdmin(str(pod_dir(mesh, pod) / "admin.sock")).get_json("/certs")
    return {c["serial_number"] for ctx in certs.get("certificates", []) for c in ctx.get("cert_chain") or []}


def test_rotation_under_load_no_failures_no_restarts(mesh: Mesh) -> None:
    """20 s certificates under 200 rps for 60 s: several rotations in the agents and in Envoy's /certs, no
    failed request, no Envoy restarted."""
    pods = ["echo-0", "echo-1", "sleep-0"]
    before = {p: agent_state(mesh, p) for p in pods}
    # 75 s at 200 rps paced (a loaded 2-core machine may fall behind the pace: 80 % of 60 s worth is required)
    bg = mesh.load_background("sleep-0", "http://echo:8080/", rps=200, seconds=75, concurrency=8)
    serials: dict[str, set[str]] = {p: set() for p in pods}
    deadline = time.monotonic() + 150
    try:
        while bg.poll() is None and time.monotonic() < deadline:  # every 2 s while the load runs
            for p in pods:
                serials[p] |= _certs_serials(mesh, p)
            time.sleep(2)
    finally:
        out, _ = bg.communicate(timeout=60)
    r = json.loads(out.strip().splitlines()[-1])
    assert r["seconds"] >= 60 and r["total"] >= 200 * 60 * 0.8, r
    assert r["errors"] == {} and set(r["status"]) == {"200"}, r
    for p in pods:
        after = agent_state(mesh, p)
        rotated = after["cert"]["rotations"] - before[p]["cert"]["rotations"]
        assert rotated >= 3, (p, before[p]["cert"], after["cert"])
        assert len(serials[p]) >= 3, (p, serials[p])  # Envoy served each new certificate (no restart needed)
        assert after["envoyPid"] == before[p]["envoyPid"] and after["restarts"] == before[p]["restarts"] \
            and after["epoch"] == before[p]["epoch"], (p, before[p], after)
        assert after["cert"]["state"] == "VALID" and after["cert"]["totalFailures"] == 0, after["cert"]


def test_proxy_config_secrets_and_proxy_status_cert_column(mesh: Mesh) -> None:
    out = mesh.cli("proxy-config", "secrets", "echo-0").stdout
    lines = {ln.split()[0]: ln for ln in out.splitlines()[1:] if ln.strip()}
    assert ECHO_ID in lines["default"] and "Cert Chain" in lines["default"] and "ACTIVE" in lines["default"], out
    assert "CA" in lines["ROOTCA"] and "true" in lines["ROOTCA"], out
    doc = json.loads(mesh.cli("proxy-config", "secrets", "echo-0", "-o", "json").stdout)
    chain = next(i for i in doc["items"] if i["name"] == "default")["certificates"]
    assert chain[0]["identities"] == [ECHO_ID] and chain[0]["valid"], chain
    status = mesh.cli("proxy-status").stdout
    rows = [ln.split() for ln in status.splitlines()[1:] if ln.strip()]
    assert rows and all(r[6] == "VALID" for r in rows), status
    fail = mesh.cli("proxy-config", "secrets", "plain-0", check=False)
    assert fail.returncode != 0 and "no certificate" in fail.stderr, fail.stderr
