"""The agent's certificate manager: rotation schedule with jitter, back-off, and what happens while the control
plane is down (the current certificate is kept, the state says so, expiry is logged, never silent)."""
from __future__ import annotations

import datetime as dt
import logging
import random
import time

import pytest

from mizzen.agent.certs import CertManager, CertSettings, WorkloadCert, assemble, make_csr
from mizzen.ca.authority import CaMaterial, CertificateAuthority, make_intermediate, make_root
from mizzen.ca.identity import SpiffeId

from tests.ca.harness import MeshCa

pytestmark = pytest.mark.timeout(90)
NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def _cert(ttl: dt.timedelta) -> WorkloadCert:
    root, rk = make_root(NOW)
    ca, ck = make_intermediate(root, rk, NOW)
    authority = CertificateAuthority(CaMaterial(ca, ck, (ca,), root))
    key, csr = make_csr()
    issued = authority.sign_csr(csr, SpiffeId("cluster.local", "a", "b"), NOW, ttl)
    return assemble(key, issued.chain_pems())


def test_rotation_at_half_life_with_jitter() -> None:
    cert = _cert(dt.timedelta(hours=24))
    life = cert.lifetime()
    m = CertManager(lambda c, t: None, CertSettings(jitter_ratio=0.05), rng=random.Random(7))  # type: ignore[arg-type]
    times = [(m.rotation_time(cert) - cert.not_before.timestamp()) / life for _ in range(2000)]
    assert all(0.45 <= t <= 0.55 for t in times)
    assert min(times) < 0.46 and max(times) > 0.54  # spread over the whole window, not one instant
    m0 = CertManager(lambda c, t: None, CertSettings(jitter_ratio=0.0, rotate_ratio=0.8))  # type: ignore[arg-type]
    assert m0.rotation_time(cert) == pytest.approx(cert.not_before.timestamp() + 0.8 * life)


def test_backoff_doubles_caps_and_never_sleeps_past_the_expiry() -> None:
    clock = [NOW.timestamp()]
    m = CertManager(lambda c, t: None, CertSettings(backoff_initial=1, backoff_max=30),  # type: ignore[arg-type]
                    clock=lambda: clock[0], rng=random.Random(1))
    waits = [m.backoff(n) for n in range(1, 9)]
    for n, w in enumerate(waits, start=1):
        assert min(30, 2 ** (n - 1)) * 0.5 <= w <= min(30, 2 ** (n - 1))
    m.current = _cert(dt.timedelta(seconds=20))
    clock[0] = m.current.not_after.timestamp() - 4  # 4 s left
    assert m.backoff(8) <= 2.0
    clock[0] = m.current.not_after.timestamp() - 0.3  # just before the expiry: one more try right after it
    assert 0.15 <= m.backoff(8) <= 0.35


def test_a_chain_for_another_key_is_refused() -> None:
    cert = _cert(dt.timedelta(hours=1))
    other_key, _ = make_csr()
    with pytest.raises(ValueError, match="not for the key this agent generated"):
        assemble(other_key, [cert.chain_pem.decode()])


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="rotate_ratio"):
        CertSettings(rotate_ratio=1.0)
    with pytest.raises(ValueError, match="jitter_ratio"):
        CertSettings(rotate_ratio=0.5, jitter_ratio=0.5)


def test_control_plane_down_keeps_the_certificate_then_expires_loudly_then_recovers(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mizzen.agent.certs")
    ca = MeshCa()
    try:
        pod = ca.pod("cart-0", "shop", "cart", ttl_seconds=4, backoff_initial=0.2, backoff_max=0.5)
        m = pod.manager
        assert ca.loop.run(m.wait_ready(10))
        first = ca.loop.call(lambda: m.current)
        assert first.spiffe_id == "spiffe://cluster.local/ns/shop/sa/cart"
        assert ca.loop.call(m.status)["state"] == "VALID"
        ca.loop.run(ca.server.stop(0))  # the control plane goes away

        def status() -> dict:
            return ca.loop.call(m.status)

        deadline = time.monotonic() + 10
        while status()["state"] != "RETRYING" and time.monotonic() < deadline:
            time.sleep(0.05)
        s = status()
        assert s["state"] == "RETRYING" and s["serial"] == first.serial and s["failures"] >= 1
        assert "no certificate service reachable" in s["lastError"]
        # the SDS server still holds the old certificate: Envoy keeps serving with it
        assert ca.loop.call(lambda: pod.sds.secrets["default"][0]) == first.serial
        while status()["state"] != "EXPIRED" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status()["state"] == "EXPIRED" and status()["expiresInSeconds"] <= 0

        def expired_logs() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.levelno == logging.ERROR and "EXPIRED" in r.getMessage()]
        while not expired_logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert expired_logs(), "an expired certificate must be logged as an error"
        warned = [r for r in caplog.records if r.levelno == logging.WARNING and "stays in use" in r.getMessage()]
        assert warned and "expires in" in warned[0].getMessage()
        # the control plane comes back on the same socket: a new certificate, pushed to SDS
        ca.server = type(ca.server)(ca.service)
        ca.loop.run(ca.server.start([ca.socket]))
        while status()["state"] not in ("VALID",) and time.monotonic() < deadline + 10:
            time.sleep(0.05)
        s = status()
        assert s["state"] == "VALID" and s["serial"] != first.serial and s["failures"] == 0
        assert s["totalFailures"] >= 2 and s["rotations"] >= 1 and "lastError" not in s
        assert ca.loop.call(lambda: pod.sds.secrets["default"][0]) == s["serial"]
    finally:
        ca.close()


def test_no_credential_is_retried_and_reported() -> None:
    ca = MeshCa()
    try:
        pod = ca.pod("cart-0", "shop", "cart", backoff_initial=0.1, backoff_max=0.2)
        assert ca.loop.run(pod.manager.wait_ready(10))
        ca.credentials.revoke("shop.cart-0")
        ca.loop.call(pod.manager.rotate_now)
        deadline = time.monotonic() + 10
        while ca.loop.call(pod.manager.status)["state"] != "RETRYING" and time.monotonic() < deadline:
            time.sleep(0.05)
        s = ca.loop.call(pod.manager.status)
        assert s["state"] == "RETRYING" and "UNAUTHENTICATED" in s["lastError"]
    finally:
        ca.close()
