"""A real Envoy takes its certificate and trust anchors from the agent's SDS: a TLS listener that requires client
certificates and a TLS cluster with secure naming. Real TLS clients connect; `/certs` and the config dump show
the SPIFFE ID; a short-lived certificate rotates in Envoy with no restart and no dropped connection."""
from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import ssl
import time

import pytest

from mizzen.ca.authority import CertificateAuthority, cert_pem, key_pem, new_key, serial_hex
from mizzen.ca.files import ensure_mesh_ca, utcnow
from mizzen.ca.identity import SpiffeId
from mizzen.ca.secrets_view import secret_rows, secrets_from_certs, secrets_from_config_dump

from tests.ca.harness import (Envoy, MeshCa, free_port, peer_cert, spiffe_of, static_tls_bootstrap, tls_context,
                              wait_for)

pytestmark = pytest.mark.timeout(120)
WEB = "spiffe://cluster.local/ns/default/sa/web"
CLIENT = "spiffe://cluster.local/ns/default/sa/client"


class Setup:
    def __init__(self, api_type: str, ttl_seconds: int = 0) -> None:
        self.ca = MeshCa()
        try:
            self.pod = self.ca.pod("web-0", "default", "web", ttl_seconds=ttl_seconds)
            assert self.ca.loop.run(self.pod.manager.wait_ready(10))
            self.admin_port, self.mtls_port, self.plain_port = free_port(), free_port(), free_port()
            self.envoy = Envoy(static_tls_bootstrap(
                admin_port=self.admin_port, sds_socket=self.pod.sds.socket_path, mtls_port=self.mtls_port,
                plain_port=self.plain_port, expect_san=WEB, api_type=api_type), self.pod.dir, self.admin_port)
        except BaseException:
            self.ca.close()
            raise

    def current(self):
        return self.ca.loop.call(lambda: self.pod.manager.current)

    def https(self, cert: tuple[str, str] | None = None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.mtls_port, timeout=5,
                                           context=tls_context(self.ca.root_pem, cert))

    def close(self) -> None:
        try:
            self.envoy.stop()
        finally:
            self.ca.close()


def get(conn: http.client.HTTPConnection, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
def test_envoy_serves_mtls_with_the_sds_certificate(api_type: str) -> None:
    s = Setup(api_type)
    try:
        s.envoy.wait_live()
        cur = s.current()
        # a real TLS client with a mesh certificate: both sides see each other's SPIFFE ID
        conn = s.https(s.ca.client_cert(CLIENT))
        status, headers, body = get(conn)
        assert status == 200 and body == b"hello over mTLS\n"
        assert headers["x-peer-san"] == CLIENT and headers["x-local-san"] == WEB
        server_cert = peer_cert(conn.sock)
        assert spiffe_of(server_cert) == [WEB]
        assert serial_hex(server_cert) == cur.serial
        conn.close()

        # Envoy as a TLS client (certificate + roots from SDS, secure naming) to its own TLS listener
        plain = http.client.HTTPConnection("127.0.0.1", s.plain_port, timeout=5)
        status, headers, _ = get(plain)
        assert status == 200 and headers["x-peer-san"] == WEB and headers["x-peer-serial"].lower() == cur.serial
        # ... and refusing a server that is not the identity it expects
        status, _, _ = get(plain, "/wrong-san")
        assert status == 503
        assert s.envoy.stat("cluster.mtls_wrong_san.ssl.fail_verify_san") >= 1
        plain.close()

        # no client certificate, or one from another mesh's CA: no request gets through
        other = CertificateAuthority(ensure_mesh_ca(s.ca.dir / "other", utcnow()))
        key = new_key()
        issued = other.issue(key.public_key(), SpiffeId.parse(CLIENT), utcnow())
        (s.ca.dir / "foreign.pem").write_bytes(cert_pem(issued.cert) + cert_pem(issued.chain[1]))
        (s.ca.dir / "foreign-key.pem").write_bytes(key_pem(key))
        for cert in (None, (str(s.ca.dir / "foreign.pem"), str(s.ca.dir / "foreign-key.pem"))):
            conn = s.https(cert)
            with pytest.raises((ssl.SSLError, ConnectionError)):
                get(conn)
            conn.close()

        # what the proxy holds: /certs and the config dump name the identity
        certs = s.envoy.admin_json("/certs")
        assert WEB in json.dumps(certs)
        now = dt.datetime.now(dt.timezone.utc)
        rows = {r[0]: r for r in secret_rows(
            secrets_from_config_dump(s.envoy.admin_json("/config_dump?resource=dynamic_active_secrets")), now)}
        material = s.ca.material
        assert rows["default"][1:5] == ["Cert Chain", "ACTIVE", "true", cur.serial]
        assert rows["default"][7] == WEB and rows["default"][8] == material.ca_cert.subject.rfc4514_string()
        assert rows["ROOTCA"][1:5] == ["CA", "ACTIVE", "true", serial_hex(material.root)]
        full = secrets_from_config_dump(s.envoy.admin_json("/config_dump"))
        assert [(i.name, i.status) for i in full] == [("ROOTCA", "ACTIVE"), ("default", "ACTIVE")]
        assert [c["identities"] for c in full[1].to_dict(now)["certificates"]] == [[WEB], []]  # leaf, intermediate
        from_certs = {i.name: i for i in secrets_from_certs(certs)}
        assert from_certs["default"].leaf.serial == cur.serial and from_certs["default"].leaf.identities == (WEB,)
        assert s.ca.loop.call(lambda: s.pod.sds.delivered()) and s.ca.loop.call(lambda: s.pod.sds.delivered("ROOTCA"))
    finally:
        s.close()


def test_rotation_swaps_the_certificate_without_restart_or_dropped_connections() -> None:
    s = Setup("GRPC", ttl_seconds=4)
    try:
        s.envoy.wait_live()
        first = s.current()
        envoy_pid = s.envoy.proc.pid
        conn = s.https(s.ca.client_cert(CLIENT))  # keep-alive, straight to the TLS listener
        plain = http.client.HTTPConnection("127.0.0.1", s.plain_port, timeout=5)  # through Envoy's TLS cluster
        assert get(conn)[0] == 200 and get(plain)[0] == 200
        sock, plain_sock = conn.sock, plain.sock
        first_upstream_serial = get(plain)[1]["x-peer-serial"].lower()
        failures, requests = [], 0
        deadline = time.monotonic() + 9.0  # a 4 s certificate rotates every ~2 s
        while time.monotonic() < deadline:
            for c in (conn, plain):
                requests += 1
                try:
                    status, headers, _ = get(c)
                    if status != 200:
                        failures.append(status)
                except (OSError, http.client.HTTPException) as e:
                    failures.append(repr(e))
            time.sleep(0.05)
        status = s.ca.loop.call(s.pod.manager.status)
        assert failures == [] and requests > 50
        assert status["rotations"] >= 3 and status["state"] == "VALID"
        # the same two connections carried every request: nothing was dropped or re-established
        assert conn.sock is sock and plain.sock is plain_sock
        assert s.envoy.stat("cluster.mtls_up.upstream_cx_total") == 1
        assert s.envoy.stat(f"listener.127.0.0.1_{s.mtls_port}.downstream_cx_total") == 2
        # the upstream connection keeps the certificate it was established with (TLS does not re-check)
        assert get(plain)[1]["x-peer-serial"].lower() == first_upstream_serial
        # Envoy took each new certificate in place: same process, contexts updated by SDS
        assert s.envoy.proc.poll() is None and s.envoy.proc.pid == envoy_pid
        assert s.envoy.stat(f"listener.127.0.0.1_{s.mtls_port}.server_ssl_socket_factory"
                            f".ssl_context_update_by_sds") >= 3
        # new connections get the current certificate, and /certs shows it
        cur = wait_for(lambda: s.ca.loop.call(lambda: s.pod.sds.delivered()) and s.current(), 5,
                       "Envoy to ACK the current certificate")
        assert cur.serial != first.serial
        fresh = s.https(s.ca.client_cert(CLIENT))
        get(fresh)
        assert serial_hex(peer_cert(fresh.sock)) in (cur.serial, s.current().serial)
        fresh.close()
        wait_for(lambda: s.current().serial in json.dumps(s.envoy.admin_json("/certs")), 5,
                 "the current serial in /certs")
        conn.close()
        plain.close()
    finally:
        s.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run Envoy as uid 1337")
def test_envoy_as_uid_1337_reads_its_secrets_from_a_socket_only_it_may_open() -> None:
    """As in a pod: the SDS socket is 0600 and owned by Envoy's uid; Envoy (uid 1337) still gets its secrets."""
    ca = MeshCa()
    try:
        pod = ca.pod("web-0", "default", "web", sds_owner=(1337, 1337))
        assert ca.loop.run(pod.manager.wait_ready(10))
        st = os.stat(pod.sds.socket_path)
        assert (st.st_uid, oct(st.st_mode & 0o777)) == (1337, "0o600")
        for d in (ca.dir, ca.dir / "pods", pod.dir):
            os.chmod(d, 0o755)
        admin, mtls, plain = free_port(), free_port(), free_port()
        envoy = Envoy(static_tls_bootstrap(admin_port=admin, sds_socket=pod.sds.socket_path, mtls_port=mtls,
                                           plain_port=plain, expect_san=WEB), pod.dir, admin, uid=1337)
        try:
            envoy.wait_live()
            conn = http.client.HTTPSConnection("127.0.0.1", mtls, timeout=5,
                                               context=tls_context(ca.root_pem, ca.client_cert(CLIENT)))
            status, headers, _ = get(conn)
            assert status == 200 and headers["x-local-san"] == WEB
            conn.close()
        finally:
            envoy.stop()
    finally:
        ca.close()
