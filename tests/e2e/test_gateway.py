"""The ingress gateway end to end (issue 13 §1): real Envoy as a gateway pod, real TLS, real clients.

One mesh for the module: `echo` (2 replicas) and `api` (1 replica) answering with the pod that served,
`tlsapp` serving HTTPS itself (for passthrough), `tcpapp` (2 replicas, plain TCP), and the gateway Workload
`ingress` (`gateway: true`, host ports on 127.0.0.1). A Gateway `public` has an HTTP server (redirecting to
HTTPS), an HTTPS server whose certificate comes from a `kubernetes.io/tls` Secret over SDS, a TLS PASSTHROUGH
server, a TCP server and a GRPC server (HTTP/2 to gRPC backends). Clients are curl (verifying the certificate
against the test CA), Python's ssl and socket modules and grpcio, from the host.
"""
from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.tlscerts import ca as _ca, leaf as _leaf, pem as _pem

from .mesh import SLEEP_COMMAND, Mesh, can_run_netns, running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(can_run_netns() is not None, reason=str(can_run_netns()))]

APPS = Path(__file__).parent / "apps"
ECHO = APPS / "echo_app.py"
TLS_APP = APPS / "tls_app.py"
POLICY_APP = APPS / "policy_app.py"  # gRPC /mizzen.Who/Call answers the pod's name
VS_APP = APPS / "vsapp.py"  # /sleep/<ms>, /flaky (503, 200, 503 ...), /stats, /reset
TCP_APP = APPS / "tcp_app.py"  # TCP: `<pod>\n`, then each line back as `<pod>: <line>`


def secret_yaml(name: str, cert: bytes, key: bytes, ca: bytes | None = None, namespace: str = "default") -> str:
    ind = lambda b: textwrap.indent(b.decode(), "    ")  # noqa: E731
    return f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n" \
           f"type: kubernetes.io/tls\nstringData:\n" \
           f"  tls.crt: |\n{ind(cert)}  tls.key: |\n{ind(key)}" + (f"  ca.crt: |\n{ind(ca)}" if ca else "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ the mesh
class Env:
    def __init__(self, base: Path):
        self.base = base
        self.ca = _ca("gateway test CA")
        self.ca_file = base / "ca.pem"
        self.ca_file.write_bytes(_pem(self.ca[0]))
        self.cert, self.key, self.serial = _leaf(self.ca, ["web.example.test", "api.example.test"])
        self.mtls_cert, self.mtls_key, _ = _leaf(self.ca, ["mtls.example.test"])
        files_cert, files_key, self.files_serial = _leaf(self.ca, ["files.example.test"])  # read by Envoy from files
        (base / "files.crt").write_bytes(files_cert)
        (base / "files.key").write_bytes(files_key)
        client_cert, client_key, _ = _leaf(self.ca, ["client.example.test"])
        (base / "client.crt").write_bytes(client_cert)
        (base / "client.key").write_bytes(client_key)
        self.backend_ca = _ca("backend CA")
        self.backend_ca_file = base / "backend-ca.pem"
        self.backend_ca_file.write_bytes(_pem(self.backend_ca[0]))
        bc, bk, _ = _leaf(self.backend_ca, ["pass.example.test"])
        (base / "backend.crt").write_bytes(bc)
        (base / "backend.key").write_bytes(bk)
        self.https, self.http, self.passthrough = _free_port(), _free_port(), _free_port()
        self.k8s, self.k8s_tls = _free_port(), _free_port()
        self.tcp, self.grpc = _free_port(), _free_port()  # the Istio Gateway's TCP and GRPC servers
        # Gateway API certificateRefs to Secrets of namespace `certs`: one granted by a ReferenceGrant, one not
        self.k8s_cert, self.k8s_key, self.k8s_serial = _leaf(self.ca, ["secure.k8s.test"])
        self.k8s_cert2, self.k8s_key2, self.k8s_serial2 = _leaf(self.ca, ["nogrant.k8s.test"])

    def mesh_text(self) -> str:
        wl = lambda name, app, n, port, env="": textwrap.dedent(f"""\
            ---
            apiVersion: mizzen.dev/v1
            kind: Workload
            metadata: {{name: {name}, labels: {{app: {name}}}}}
            spec:
              replicas: {n}
              command: [{sys.executable}, {app}]
              ports: [{{containerPort: {port}}}]
            """) + env  # noqa: E731
        svc = lambda name, port, pname: textwrap.dedent(f"""\
            ---
            apiVersion: v1
            kind: Service
            metadata: {{name: {name}}}
            spec: {{selector: {{app: {name}}}, ports: [{{port: {port}, name: {pname}}}]}}
            """)  # noqa: E731
        tls_env = f"  env: {{TLS_CERT: {self.base / 'backend.crt'}, TLS_KEY: {self.base / 'backend.key'}}}\n"
        return (svc("echo", 8080, "http") + svc("api", 8080, "http") + svc("tlsapp", 8443, "tls")
                + svc("slow", 8080, "http") + svc("tcpapp", 9000, "tcp")
                + wl("tcpapp", TCP_APP, 2, 9000)
                + wl("echo", ECHO, 2, 8080) + wl("api", ECHO, 1, 8080) + wl("tlsapp", TLS_APP, 1, 8443, tls_env)
                + wl("slow", VS_APP, 1, 8080, "  env: {APP_NAME: slow}\n")
                + textwrap.dedent(f"""\
            ---
            apiVersion: mizzen.dev/v1
            kind: Workload
            metadata: {{name: ingress, labels: {{istio: ingressgateway}}}}
            spec:
              gateway: true
              hostPorts: [{{port: 8443, hostPort: {self.https}}}, {{port: 8080, hostPort: {self.http}}},
                          {{port: 9443, hostPort: {self.passthrough}}}, {{port: 7000, hostPort: {self.tcp}}},
                          {{port: 9090, hostPort: {self.grpc}}}]
            ---
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata: {{name: public}}
            spec:
              selector: {{istio: ingressgateway}}
              servers:
              - port: {{number: 8080, name: http, protocol: HTTP}}
                hosts: [web.example.test]
                tls: {{httpsRedirect: true}}
              - port: {{number: 8443, name: https, protocol: HTTPS}}
                hosts: [web.example.test, api.example.test]
                tls: {{mode: SIMPLE, credentialName: web-cert}}
              - port: {{number: 8443, name: https-mtls, protocol: HTTPS}}
                hosts: [mtls.example.test]
                tls: {{mode: MUTUAL, credentialName: mtls-cert}}   # clients need a certificate of the test CA
              - port: {{number: 8443, name: https-files, protocol: HTTPS}}
                hosts: [files.example.test]
                tls: {{mode: SIMPLE, serverCertificate: {self.base / 'files.crt'}, privateKey: {self.base / 'files.key'}}}
              - port: {{number: 9443, name: tls, protocol: TLS}}
                hosts: [pass.example.test]
                tls: {{mode: PASSTHROUGH}}
              - port: {{number: 7000, name: tcp, protocol: TCP}}
                hosts: ["*"]
              - port: {{number: 9090, name: grpc, protocol: GRPC}}
                hosts: [grpc.example.test]
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {{name: web}}
            spec:
              hosts: [web.example.test]
              gateways: [public]
              http:
              - match: [{{uri: {{prefix: /api/}}}}]
                route: [{{destination: {{host: api}}}}]
              - match: [{{uri: {{prefix: /sleep/}}}}]
                route: [{{destination: {{host: slow}}}}]
                timeout: 1s
              - match: [{{uri: {{prefix: /flaky/}}}}]
                route: [{{destination: {{host: slow}}}}]
                retries: {{attempts: 2, retryOn: 5xx}}
              - match: [{{uri: {{prefix: /noretry/}}}}]
                rewrite: {{uri: /flaky/}}
                route: [{{destination: {{host: slow}}}}]
                retries: {{attempts: 0}}
              - route: [{{destination: {{host: echo}}}}]
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {{name: api}}
            spec:
              hosts: [api.example.test, mtls.example.test, files.example.test]
              gateways: [default/public]          # the ns/name form (the mesh's routes to api: the GAMMA route)
              http:
              - route: [{{destination: {{host: api}}}}]
                corsPolicy:
                  allowOrigins: [{{exact: "https://app.example.test"}}]
                  allowMethods: [GET, POST]
                  allowHeaders: [x-custom]
                  maxAge: 1h
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {{name: pass}}
            spec:
              hosts: [pass.example.test]
              gateways: [public]
              tls:
              - match: [{{sniHosts: [pass.example.test]}}]
                route: [{{destination: {{host: tlsapp, port: {{number: 8443}}}}}}]
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {{name: tcp-in}}
            spec:
              hosts: [tcp.example.test]           # within the TCP server's "*" (a plain TCP client sends no name)
              gateways: [public]
              tcp:
              - match: [{{port: 7000}}]
                route: [{{destination: {{host: tcpapp, port: {{number: 9000}}}}}}]
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {{name: grpc-in}}
            spec:
              hosts: [grpc.example.test]
              gateways: [public]
              http:
              - match: [{{headers: {{x-pick: {{exact: b}}}}}}]
                route: [{{destination: {{host: who-b, port: {{number: 50051}}}}}}]
              - route: [{{destination: {{host: who-a, port: {{number: 50051}}}}}}]
            ---
            """) + secret_yaml("web-cert", self.cert, self.key)
                + "---\n" + secret_yaml("mtls-cert", self.mtls_cert, self.mtls_key, ca=_pem(self.ca[0]))
                + "---\n" + secret_yaml("k8s-cert", self.k8s_cert, self.k8s_key, namespace="certs")
                + "---\n" + secret_yaml("k8s-cert2", self.k8s_cert2, self.k8s_key2, namespace="certs")
                + self.gateway_api_text())

    def gateway_api_text(self) -> str:
        """Kubernetes Gateway API: a Gateway served by the `edge` gateway pod, an HTTPRoute with the core
        filters and weights, and a GAMMA route for the `api` Service inside the mesh."""
        return textwrap.dedent(f"""\
            ---
            apiVersion: v1
            kind: Service
            metadata: {{name: who-a}}
            spec: {{selector: {{app: who-a}}, ports: [{{port: 50051, name: grpc}}]}}
            ---
            apiVersion: mizzen.dev/v1
            kind: Workload
            metadata: {{name: who-a, labels: {{app: who-a}}}}
            spec: {{command: [{sys.executable}, {POLICY_APP}], ports: [{{containerPort: 8080}}, {{containerPort: 50051}}]}}
            ---
            apiVersion: v1
            kind: Service
            metadata: {{name: who-b}}
            spec: {{selector: {{app: who-b}}, ports: [{{port: 50051, name: grpc}}]}}
            ---
            apiVersion: mizzen.dev/v1
            kind: Workload
            metadata: {{name: who-b, labels: {{app: who-b}}}}
            spec: {{command: [{sys.executable}, {POLICY_APP}], ports: [{{containerPort: 8080}}, {{containerPort: 50051}}]}}
            ---
            apiVersion: mizzen.dev/v1
            kind: Workload
            metadata: {{name: edge, labels: {{gateway.networking.k8s.io/gateway-name: edge}}}}
            spec: {{gateway: true, hostPorts: [{{port: 8080, hostPort: {self.k8s}}}, {{port: 8443, hostPort: {self.k8s_tls}}}]}}
            ---
            apiVersion: v1
            kind: Service
            metadata: {{name: far, namespace: far}}
            spec: {{selector: {{app: far}}, ports: [{{port: 8080, name: http}}]}}
            ---
            apiVersion: mizzen.dev/v1
            kind: Workload
            metadata: {{name: far, namespace: far, labels: {{app: far}}}}
            spec: {{command: [{sys.executable}, {ECHO}], ports: [{{containerPort: 8080}}]}}
            ---
            apiVersion: mizzen.dev/v1
            kind: Workload
            metadata: {{name: sleep, labels: {{app: sleep}}}}
            spec: {{command: {SLEEP_COMMAND}}}
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: Gateway
            metadata: {{name: edge}}
            spec:
              gatewayClassName: mizzen
              listeners:
              - {{name: http, port: 8080, protocol: HTTP, hostname: "*.k8s.test"}}
              - name: https
                port: 8443
                protocol: HTTPS
                hostname: secure.k8s.test
                tls: {{certificateRefs: [{{name: k8s-cert, namespace: certs}}]}}     # granted below
              - name: https-nogrant
                port: 8443
                protocol: HTTPS
                hostname: nogrant.k8s.test
                tls: {{certificateRefs: [{{name: k8s-cert2, namespace: certs}}]}}    # no grant (yet)
            ---
            apiVersion: gateway.networking.k8s.io/v1beta1
            kind: ReferenceGrant
            metadata: {{name: edge-certs, namespace: certs}}
            spec:
              from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}}]
              to: [{{group: "", kind: Secret, name: k8s-cert}}]
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {{name: secure}}
            spec:
              parentRefs: [{{name: edge, sectionName: https}}, {{name: edge, sectionName: https-nogrant}}]
              rules: [{{backendRefs: [{{name: echo, port: 8080}}]}}]
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {{name: shop}}
            spec:
              parentRefs: [{{name: edge}}]
              hostnames: [shop.k8s.test]
              rules:
              - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
                filters:
                - {{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-gw, value: k8s}}]}}}}
                - {{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}}}}
                backendRefs: [{{name: api, port: 8080}}]
              - matches: [{{path: {{type: Exact, value: /old}}}}]
                filters: [{{type: RequestRedirect, requestRedirect: {{path: {{type: ReplaceFullPath, replaceFullPath: /new}}}}}}]
              - matches: [{{path: {{type: PathPrefix, value: /split}}}}]
                backendRefs: [{{name: echo, port: 8080, weight: 1}}, {{name: api, port: 8080, weight: 1}}]
              - matches: [{{path: {{type: PathPrefix, value: /hdr}}, method: GET, headers: [{{name: x-v, value: "2"}}],
                           queryParams: [{{name: q, value: "1"}}]}}]
                filters:
                - {{type: ResponseHeaderModifier, responseHeaderModifier: {{set: [{{name: x-resp, value: k8s}}]}}}}
                - {{type: RequestMirror, requestMirror: {{backendRef: {{name: slow, port: 8080}}}}}}
                backendRefs: [{{name: api, port: 8080}}]
              - matches: [{{path: {{type: PathPrefix, value: /far}}}}]
                backendRefs: [{{name: far, namespace: far, port: 8080}}]     # needs a ReferenceGrant in `far`
              - backendRefs: [{{name: echo, port: 8080}}]
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: GRPCRoute
            metadata: {{name: who}}
            spec:
              parentRefs: [{{name: edge}}]
              hostnames: [grpc.k8s.test]
              rules:
              - matches: [{{method: {{service: mizzen.Who, method: Call}}, headers: [{{name: x-pick, value: b}}]}}]
                backendRefs: [{{name: who-b, port: 50051}}]
              - matches: [{{method: {{service: mizzen.Who}}}}]
                backendRefs: [{{name: who-a, port: 50051}}]
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {{name: api-mesh}}
            spec:
              parentRefs: [{{group: "", kind: Service, name: api, port: 8080}}]
              rules:
              - matches: [{{headers: [{{name: end-user, value: jason}}]}}]
                backendRefs: [{{name: echo, port: 8080}}]
              - backendRefs: [{{name: api, port: 8080}}]
            """)


@pytest.fixture(scope="module")
def env() -> Env:
    # not under pytest's /tmp/pytest-of-<user> (0700): tlsapp's app runs as its pod's own uid and reads
    # backend.crt/backend.key from here
    base = Path(tempfile.mkdtemp(prefix="mizzen-e2e-gateway-"))
    base.chmod(0o755)
    try:
        e = Env(base)
        for f in base.iterdir():
            f.chmod(0o644)  # throwaway test keys
        yield e
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def mesh(env: Env, tmp_path_factory):
    with running_mesh(tmp_path_factory.mktemp("gateway-mesh"), text=env.mesh_text()) as m:
        yield m


def curl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True,
                          timeout=timeout)


def https_get(env: Env, host: str, path: str = "/", *headers: str) -> tuple[int, dict, str]:
    """curl over HTTPS to the gateway's host port, verifying the certificate for `host` against the test CA."""
    extra = [a for h in headers for a in ("-H", h)]
    p = curl("--resolve", f"{host}:{env.https}:127.0.0.1", "--cacert", str(env.ca_file), "-D", "-", *extra,
             f"https://{host}:{env.https}{path}")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\n")
    end = next(i for i, ln in enumerate(lines) if not ln.strip())
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:end])}
    return status, headers, "\n".join(lines[end + 1:])


def wait_until(fn, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return
        except (AssertionError, OSError, subprocess.SubprocessError) as e:
            last = e
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {last}")


# ------------------------------------------------------------------------------------------ tests
def test_https_with_a_verified_certificate_routes_by_host_and_path(mesh: Mesh, env: Env) -> None:
    wait_until(lambda: https_get(env, "web.example.test")[0] == 200, what="the gateway's HTTPS server")
    first = https_get(env, "web.example.test", "/")
    assert "x-served-by" in first[1], first
    served = {https_get(env, "web.example.test", "/")[1]["x-served-by"] for _ in range(12)}
    assert served and all(s.startswith("echo-") for s in served), served
    assert len(served) == 2, f"both echo replicas serve through the gateway: {served}"
    status, headers, body = https_get(env, "web.example.test", "/api/items")
    assert status == 200 and headers["x-served-by"] == "api-0"
    assert json.loads(body)["path"] == "/api/items"
    status, headers, _ = https_get(env, "api.example.test", "/anything")
    assert status == 200 and headers["x-served-by"] == "api-0"
    # the backend sees the request through mesh mTLS from the gateway (auto mTLS): its identity in XFCC
    xfcc = json.loads(https_get(env, "api.example.test", "/")[2])["headers"].get("x-forwarded-client-cert", "")
    assert "spiffe://cluster.local/ns/default/sa/default" in xfcc, xfcc
    # a host no VirtualService serves on the gateway: 404 from Envoy
    p = curl("--resolve", f"other.example.test:{env.https}:127.0.0.1", "-k", "-o", "/dev/null", "-w", "%{http_code}",
             f"https://other.example.test:{env.https}/")
    assert p.stdout in ("404", "000"), p.stdout
    # a client that does not trust the test CA refuses the gateway's certificate
    p = curl("--resolve", f"web.example.test:{env.https}:127.0.0.1", f"https://web.example.test:{env.https}/")
    assert p.returncode != 0 and "certificate" in p.stderr.lower(), p.stderr


def test_http_redirects_to_https(mesh: Mesh, env: Env) -> None:
    p = curl("--resolve", f"web.example.test:{env.http}:127.0.0.1", "-o", "/dev/null", "-w",
             "%{http_code} %{redirect_url}", f"http://web.example.test:{env.http}/x")
    code, _, location = p.stdout.partition(" ")
    assert code == "301" and location.startswith("https://web.example.test"), p.stdout


def test_tls_passthrough_reaches_the_backend_with_its_own_certificate(mesh: Mesh, env: Env) -> None:
    def get():
        p = curl("--resolve", f"pass.example.test:{env.passthrough}:127.0.0.1", "--cacert",
                 str(env.backend_ca_file), f"https://pass.example.test:{env.passthrough}/p")
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    wait_until(lambda: get()["tls"], what="TLS passthrough")
    doc = get()
    assert doc["pod"] == "tlsapp-0" and doc["path"] == "/p"


def _tcp_exchange(env: Env, lines: list[str]) -> list[str]:
    """One connection to the Gateway's TCP server: what the backend says first, then each line's echo."""
    with socket.create_connection(("127.0.0.1", env.tcp), timeout=10) as s:
        f = s.makefile("rwb")
        out = [f.readline().decode().strip()]
        for line in lines:
            f.write(line.encode() + b"\n")
            f.flush()
            out.append(f.readline().decode().strip())
        return out


def test_a_tcp_server_carries_connections_to_the_backends(mesh: Mesh, env: Env) -> None:
    def ready() -> bool:
        try:
            return _tcp_exchange(env, ["ping"])[0].startswith("tcpapp-")
        except OSError:
            return False

    wait_until(ready, what="the Gateway's TCP server")
    pods = set()
    for i in range(20):  # bounded: 20 connections, 3 lines each, both ways
        first, *echoes = _tcp_exchange(env, [f"line {i}.{k}" for k in range(3)])
        assert first in ("tcpapp-0", "tcpapp-1"), first
        assert echoes == [f"{first}: line {i}.{k}" for k in range(3)], echoes  # one backend per connection
        pods.add(first)
    assert pods == {"tcpapp-0", "tcpapp-1"}  # connections spread over the replicas


def test_a_grpc_server_routes_calls_by_header(mesh: Mesh, env: Env) -> None:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{env.grpc}", options=[("grpc.default_authority", "grpc.example.test")]) as ch:
        call = ch.unary_unary("/mizzen.Who/Call")

        def ready() -> bool:
            try:
                return call(b"", timeout=5).decode() == "who-a-0"
            except grpc.RpcError:
                return False

        wait_until(ready, what="the Gateway's GRPC server")
        # HTTP/2 end to end: many calls on the one connection, each routed by its own headers
        got = [call(b"", timeout=5, metadata=(("x-pick", "b"),) if i % 2 else None).decode() for i in range(10)]
        assert got == ["who-a-0", "who-b-0"] * 5, got


def _serial_seen(env: Env) -> int:
    ctx = ssl.create_default_context(cafile=str(env.ca_file))
    with socket.create_connection(("127.0.0.1", env.https), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="web.example.test") as s:
            return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number


def test_a_server_certificate_from_files(mesh: Mesh, env: Env) -> None:
    """A Gateway server whose certificate and key are files (serverCertificate/privateKey) instead of a Secret."""
    wait_until(lambda: https_get(env, "files.example.test")[0] == 200, what="the HTTPS server with file credentials")
    assert https_get(env, "files.example.test")[1]["x-served-by"] == "api-0"
    ctx = ssl.create_default_context(cafile=str(env.ca_file))
    with socket.create_connection(("127.0.0.1", env.https), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="files.example.test") as s:
            assert x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number == env.files_serial


def test_credential_rotation_keeps_open_connections(mesh: Mesh, env: Env) -> None:
    wait_until(lambda: https_get(env, "web.example.test")[0] == 200, what="the gateway's HTTPS server")
    assert _serial_seen(env) == env.serial
    ctx = ssl.create_default_context(cafile=str(env.ca_file))
    conn = http.client.HTTPSConnection("127.0.0.1", env.https, context=ctx, timeout=10)
    conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", env.https), timeout=10),
                                server_hostname="web.example.test")
    conn.request("GET", "/", headers={"Host": "web.example.test"})
    r = conn.getresponse()
    r.read()
    assert r.status == 200
    cert, key, serial = _leaf(env.ca, ["web.example.test", "api.example.test"])
    mesh.apply_text(secret_yaml("web-cert", cert, key))
    wait_until(lambda: _serial_seen(env) == serial, timeout=30, what="the rotated certificate")
    for _ in range(3):  # the connection opened before the rotation still serves
        conn.request("GET", "/", headers={"Host": "web.example.test"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200
    conn.close()
    env.serial = serial


def test_a_backend_rollout_through_the_gateway_returns_no_errors(mesh: Mesh, env: Env) -> None:
    """Load from outside through the gateway (keep-alive HTTPS, 4 clients, ~100 rps) while `echo` restarts."""
    wait_until(lambda: https_get(env, "web.example.test")[0] == 200, what="the gateway's HTTPS server")
    stop = threading.Event()
    results: dict[str, int] = {}
    lock = threading.Lock()

    def client() -> None:
        ctx = ssl.create_default_context(cafile=str(env.ca_file))
        conn = None
        deadline = time.monotonic() + 120  # bounded even if the rollout hangs
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection("127.0.0.1", env.https, context=ctx, timeout=10)
                    conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", env.https), timeout=10),
                                                server_hostname="web.example.test")
                conn.request("GET", "/", headers={"Host": "web.example.test"})
                r = conn.getresponse()
                r.read()
                key = str(r.status)
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                key = type(e).__name__
                conn = None
            with lock:
                results[key] = results.get(key, 0) + 1
            time.sleep(0.04)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        mesh.cli("rollout", "restart", "echo", timeout=180)
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    total = sum(results.values())
    assert total > 200, results
    assert results.get("200") == total, f"non-200 answers or errors during the rollout: {results}"


# ------------------------------------------------------------------------------------------ Gateway API
def k8s_get(env: Env, path: str, host: str = "shop.k8s.test", method: str = "GET",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", env.k8s, timeout=10)
    try:
        conn.request(method, path, headers={"Host": host, **(headers or {})})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        conn.close()


def test_gateway_api_httproute_core_features(mesh: Mesh, env: Env) -> None:
    wait_until(lambda: k8s_get(env, "/")[0] == 200, what="the Gateway API gateway")
    status, headers, body = k8s_get(env, "/api/items?q=1")
    doc = json.loads(body)
    assert status == 200 and headers["x-served-by"] == "api-0", (status, headers)
    assert doc["path"] == "/v2/items?q=1" and doc["headers"]["x-gw"] == "k8s", doc  # URLRewrite, header filter
    assert json.loads(k8s_get(env, "/apis")[2])["pod"].startswith("echo-")  # /api is a segment: not /apis
    status, headers, _ = k8s_get(env, "/old")
    assert status == 302 and headers["location"].endswith("/new"), (status, headers)
    seen = {k8s_get(env, "/split")[1]["x-served-by"].split("-")[0] for _ in range(30)}
    assert seen == {"echo", "api"}, seen  # weighted backendRefs 1:1
    assert k8s_get(env, "/", host="other.k8s.test")[0] == 404  # a hostname no route attaches to


def test_gateway_api_matches_response_headers_mirror_and_cross_namespace_backends(mesh: Mesh, env: Env) -> None:
    """Method + header + query matches, ResponseHeaderModifier, RequestMirror (the mirror's backend counts the
    copies); a backendRef to another namespace answers 500 until a ReferenceGrant there allows it."""
    wait_until(lambda: k8s_get(env, "/")[0] == 200, what="the Gateway API gateway")
    status, headers, _ = k8s_get(env, "/hdr?q=1", headers={"x-v": "2"})
    assert status == 200 and headers["x-served-by"] == "api-0" and headers.get("x-resp") == "k8s", (status, headers)
    for path, hdrs in (("/hdr?q=1", {}), ("/hdr?q=2", {"x-v": "2"})):  # a condition missing: the catch-all rule
        status, headers, _ = k8s_get(env, path, headers=hdrs)
        assert headers["x-served-by"].startswith("echo-") and "x-resp" not in headers, (path, headers)
    # another method: not this rule either (the catch-all's app answers DELETE with 501, without the header)
    status, headers, _ = k8s_get(env, "/hdr?q=1", method="DELETE", headers={"x-v": "2"})
    assert status == 501 and "x-resp" not in headers, (status, headers)
    wait_until(lambda: _slow_app(mesh, "/stats")["count"].get("GET /hdr", 0) >= 1, what="the mirrored request")
    assert k8s_get(env, "/far")[0] == 500  # no ReferenceGrant in namespace `far`
    mesh.apply_text(textwrap.dedent("""\
        apiVersion: gateway.networking.k8s.io/v1beta1
        kind: ReferenceGrant
        metadata: {name: from-default, namespace: far}
        spec:
          from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
          to: [{group: "", kind: Service, name: far}]
        """))
    wait_until(lambda: k8s_get(env, "/far")[1].get("x-served-by") == "far-0", what="the granted backendRef")


def test_cors_through_the_gateway(mesh: Mesh, env: Env) -> None:
    """The gateway answers a CORS preflight of an allowed origin itself and marks simple requests; another
    origin gets no allow header."""
    wait_until(lambda: https_get(env, "api.example.test")[0] == 200, what="the gateway's HTTPS server")
    pre = ("Origin: https://app.example.test", "Access-Control-Request-Method: POST")
    p = curl("--resolve", f"api.example.test:{env.https}:127.0.0.1", "--cacert", str(env.ca_file), "-X", "OPTIONS",
             *[a for h in pre for a in ("-H", h)], "-D", "-", "-o", "/dev/null", f"https://api.example.test:{env.https}/")
    head = p.stdout.lower()
    assert p.returncode == 0 and "access-control-allow-origin: https://app.example.test" in head, p.stdout
    assert "access-control-allow-methods: get,post" in head and "access-control-max-age: 3600" in head, p.stdout
    assert "x-served-by" not in head, "the preflight was answered by the gateway, not the backend"
    _, headers, _ = https_get(env, "api.example.test", "/", "Origin: https://app.example.test")
    assert headers.get("access-control-allow-origin") == "https://app.example.test", headers
    _, headers, _ = https_get(env, "api.example.test", "/", "Origin: https://evil.example.test")
    assert "access-control-allow-origin" not in headers, headers


def test_gamma_route_for_a_service_applies_inside_the_mesh(mesh: Mesh, env: Env) -> None:
    def served(*headers: str) -> str:
        args = ["curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-D", "-", "http://api:8080/"]
        for h in headers:
            args[1:1] = ["-H", h]
        p = mesh.exec("sleep-0", *args, timeout=30)
        assert p.returncode == 0, p.stderr
        return next(ln.split(":", 1)[1].strip() for ln in p.stdout.splitlines()
                    if ln.lower().startswith("x-served-by:"))

    wait_until(lambda: served("end-user: jason").startswith("echo-"), what="the GAMMA route")
    assert served() == "api-0"


def test_gateway_api_grpcroute_by_method_and_header(mesh: Mesh, env: Env) -> None:
    import grpc

    def call(*metadata: tuple[str, str]) -> str:
        with grpc.insecure_channel(f"127.0.0.1:{env.k8s}", options=[("grpc.default_authority", "grpc.k8s.test")]) as ch:
            return ch.unary_unary("/mizzen.Who/Call")(b"", timeout=5, metadata=metadata or None).decode()

    def ready() -> bool:
        try:
            return call() == "who-a-0"
        except grpc.RpcError:
            return False

    wait_until(ready, what="the GRPCRoute")
    assert {call() for _ in range(5)} == {"who-a-0"}
    assert call(("x-pick", "b")) == "who-b-0"


def test_mutual_tls_server_requires_a_client_certificate(mesh: Mesh, env: Env) -> None:
    def get(*extra: str) -> subprocess.CompletedProcess:
        return curl("--resolve", f"mtls.example.test:{env.https}:127.0.0.1", "--cacert", str(env.ca_file), *extra,
                    "-o", "/dev/null", "-w", "%{http_code}", f"https://mtls.example.test:{env.https}/")

    with_cert = ("--cert", str(env.base / "client.crt"), "--key", str(env.base / "client.key"))
    wait_until(lambda: get(*with_cert).stdout == "200", what="the MUTUAL server")
    p = get()
    assert p.returncode != 0 or p.stdout != "200", (p.stdout, p.stderr)  # no client certificate: refused


# ------------------------------------------------------------------------------------------ API-gateway policies
def _status(env: Env, path: str, *headers: str, host: str = "web.example.test") -> int:
    args = [a for h in headers for a in ("-H", h)]
    p = curl("--resolve", f"{host}:{env.https}:127.0.0.1", "--cacert", str(env.ca_file), *args, "-o", "/dev/null",
             "-w", "%{http_code}", f"https://{host}:{env.https}{path}")
    assert p.returncode == 0, p.stderr
    return int(p.stdout)


def _slow_app(mesh: Mesh, path: str) -> dict:
    """Ask the `slow` app directly (from the sleep pod, through its sidecar): its /stats and /reset."""
    p = mesh.exec("sleep-0", "curl", "-sS", "--max-time", "5", f"http://slow:8080{path}", timeout=30)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_per_route_timeout_and_retries_through_the_gateway(mesh: Mesh, env: Env) -> None:
    """The gateway-bound VirtualService's `timeout` (1s on /sleep/) and `retries` (2 on 5xx on /flaky/, none on
    /noretry/, rewritten to the same flaky endpoint) act at the gateway."""
    wait_until(lambda: _status(env, "/sleep/10") == 200, what="the slow app through the gateway")
    t0 = time.monotonic()
    assert _status(env, "/sleep/3000") == 504  # Envoy's upstream request timeout
    assert time.monotonic() - t0 < 2.5
    _slow_app(mesh, "/reset")
    assert [_status(env, "/flaky/x") for _ in range(4)] == [200] * 4  # each 503 is retried
    assert _slow_app(mesh, "/stats")["count"].get("GET /flaky") == 8, "every request needed its retry"
    _slow_app(mesh, "/reset")
    assert [_status(env, "/noretry/x") for _ in range(4)] == [503, 200, 503, 200]  # no retries on this route
    assert _slow_app(mesh, "/stats")["count"].get("GET /flaky") == 4


def test_jwt_and_authorization_policy_at_the_gateway(mesh: Mesh, env: Env) -> None:
    """A RequestAuthentication and an AuthorizationPolicy selecting the gateway workload are enforced at the
    gateway (Istio's ingress pattern): a valid token passes (its claim forwarded as a header, the token removed),
    an invalid one gets 401, none gets 403 on /secure/ and passes elsewhere."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key, other = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="gw", alg="RS256", use="sig")
    issuer = "https://issuer.example.test"

    def token(k, sub: str = "alice", exp: int = 3600) -> str:
        now = int(time.time())
        return jwt.encode({"iss": issuer, "sub": sub, "iat": now, "exp": now + exp}, k, algorithm="RS256",
                          headers={"kid": "gw"})

    policies = textwrap.dedent(f"""\
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata: {{name: edge-jwt}}
        spec:
          selector: {{matchLabels: {{istio: ingressgateway}}}}
          jwtRules:
          - issuer: {issuer}
            jwks: '{json.dumps({"keys": [jwk]})}'
            outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}]
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {{name: edge-require-jwt}}
        spec:
          selector: {{matchLabels: {{istio: ingressgateway}}}}
          action: ALLOW
          rules:
          - from: [{{source: {{requestPrincipals: ["{issuer}/*"]}}}}]
            to: [{{operation: {{paths: [/secure/*]}}}}]
          - to: [{{operation: {{notPaths: [/secure/*]}}}}]
        """)
    bearer = lambda t: f"Authorization: Bearer {t}"  # noqa: E731
    mesh.apply_text(policies)
    try:
        wait_until(lambda: _status(env, "/secure/x") == 403 and _status(env, "/x", bearer(token(other))) == 401,
                   what="the gateway's JWT and authorization policies")
        assert _status(env, "/secure/x", bearer(token(other))) == 401  # signed by another key
        assert _status(env, "/secure/x", bearer(token(key, exp=-120))) == 401  # expired
        assert _status(env, "/secure/x") == 403  # no token: the policy requires a request principal
        assert _status(env, "/public") == 200  # elsewhere a token is not required
        status, headers, body = https_get(env, "web.example.test", "/secure/x", bearer(token(key)))
        assert status == 200 and headers["x-served-by"].startswith("echo-"), (status, headers)
        seen = json.loads(body)["headers"]
        assert seen.get("x-jwt-sub") == "alice" and "authorization" not in seen, seen
    finally:
        mesh.cli("delete", "requestauthentications", "edge-jwt", check=False)
        mesh.cli("delete", "authorizationpolicies", "edge-require-jwt", check=False)
    wait_until(lambda: _status(env, "/secure/x") == 200, what="the policies removed from the gateway")


def test_rate_limit_at_the_gateway(mesh: Mesh, env: Env) -> None:
    """A RateLimit selecting the gateway workload (its server port 8443, one path, a bucket per x-bucket header)
    answers 429 at the gateway once a bucket is spent; other buckets and other paths are untouched."""
    mesh.apply_text(textwrap.dedent("""\
        apiVersion: mizzen.dev/v1
        kind: RateLimit
        metadata: {name: edge-limit}
        spec:
          workloadSelector: {labels: {istio: ingressgateway}}
          port: 8443
          limits:
          - name: per-bucket
            match: {uri: {prefix: /limited/}}
            key: [{header: x-bucket}]
            requestsPerUnit: 3
            unit: minute
        """))
    probes = iter(range(1000))

    def limited() -> bool:  # a fresh bucket: its 4th request is refused once the limit is in force
        b = f"x-bucket: probe-{next(probes)}"
        return [_status(env, "/limited/x", b) for _ in range(4)][-1] == 429

    try:
        wait_until(limited, what="the gateway's rate limit")
        got = [_status(env, "/limited/x", "x-bucket: test") for _ in range(5)]
        assert got == [200, 200, 200, 429, 429], got
        status, headers, _ = https_get(env, "web.example.test", "/limited/x", "x-bucket: test")
        assert status == 429 and int(headers["retry-after"]) >= 1, (status, headers)
        assert _status(env, "/limited/x", "x-bucket: another") == 200  # a bucket of its own
        assert [_status(env, "/unlimited", "x-bucket: test") for _ in range(5)] == [200] * 5  # not this path
    finally:
        mesh.cli("delete", "ratelimits", "edge-limit", check=False)


def test_gateway_api_certificate_refs_across_namespaces_need_a_reference_grant(mesh: Mesh, env: Env) -> None:
    """A Gateway listener's certificateRef to a Secret of another namespace: served (the certificate verified by
    the client) when a ReferenceGrant there allows it; not served without one, until a grant is applied."""
    def get(host: str) -> subprocess.CompletedProcess:
        return curl("--resolve", f"{host}:{env.k8s_tls}:127.0.0.1", "--cacert", str(env.ca_file), "-o", "/dev/null",
                    "-w", "%{http_code}", f"https://{host}:{env.k8s_tls}/")

    def serial(host: str) -> int:
        ctx = ssl.create_default_context(cafile=str(env.ca_file))
        with socket.create_connection(("127.0.0.1", env.k8s_tls), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as s:
                return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number

    wait_until(lambda: get("secure.k8s.test").stdout == "200", what="the granted certificateRef")
    assert serial("secure.k8s.test") == env.k8s_serial
    p = get("nogrant.k8s.test")
    assert p.returncode != 0 and p.stdout != "200", (p.stdout, p.stderr)  # no listener: no handshake
    mesh.apply_text(textwrap.dedent("""\
        apiVersion: gateway.networking.k8s.io/v1beta1
        kind: ReferenceGrant
        metadata: {name: edge-certs-2, namespace: certs}
        spec:
          from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}]
          to: [{group: "", kind: Secret, name: k8s-cert2}]
        """))
    wait_until(lambda: get("nogrant.k8s.test").stdout == "200", what="the certificateRef granted afterwards")
    assert serial("nogrant.k8s.test") == env.k8s_serial2
