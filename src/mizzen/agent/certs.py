"""The workload certificate in the pod: key + CSR made here, signed by the control plane, rotated before expiry.

    manager = CertManager(client.sign, CertSettings(spiffe_id=..., ttl_seconds=0), on_update=sds.update)
    task = asyncio.create_task(manager.run())
    await manager.wait_ready(30)            # the first certificate
    manager.status()                        # for agent.state / proxy-status (see STATES)

- A new ECDSA P-256 key for every certificate, generated in this process and kept in memory only: it goes to
  Envoy over SDS on a unix socket (`agent.sds`), never to the control plane and never to a file.
- Rotation at `rotate_ratio` (50 %) of the certificate's life, +/- `jitter_ratio` of the life at random (so a
  thousand pods started together do not renew together).
- When signing fails the current certificate stays in use and the call is retried with exponential back-off
  (`backoff_initial` doubling up to `backoff_max`, each wait drawn in [50 %, 100 %]) but never later than the
  expiry. Every failure is logged with the time left; the state says RETRYING, and EXPIRED once the
  certificate has run out (logged as an error on every attempt, never silently).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..ca.authority import serial_hex, spiffe_ids

log = logging.getLogger("mizzen.agent.certs")

# PENDING: no certificate yet; VALID: current, next rotation scheduled; RENEWING: a signing call in flight;
# RETRYING: the last call failed, the current certificate is still valid; EXPIRED: it ran out (mTLS fails).
STATES = ("PENDING", "VALID", "RENEWING", "RETRYING", "EXPIRED")

Signer = Callable[[bytes, int], Awaitable[list[str]]]  # (csr_pem, ttl_seconds) -> [leaf, ..., root] PEM


@dataclass(frozen=True)
class CertSettings:
    spiffe_id: str = ""         # put in the CSR as a hint; the control plane decides the identity
    ttl_seconds: int = 0        # requested validity; 0 = the control plane's default (24 h)
    rotate_ratio: float = 0.5
    jitter_ratio: float = 0.05
    backoff_initial: float = 1.0
    backoff_max: float = 30.0

    def __post_init__(self) -> None:
        if not 0.0 < self.rotate_ratio < 1.0:
            raise ValueError(f"rotate_ratio must be between 0 and 1, not {self.rotate_ratio}")
        if not 0.0 <= self.jitter_ratio < min(self.rotate_ratio, 1.0 - self.rotate_ratio):
            raise ValueError(f"jitter_ratio {self.jitter_ratio} too large for rotate_ratio {self.rotate_ratio}")
        if self.backoff_initial <= 0 or self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_initial must be > 0 and <= backoff_max")


@dataclass(frozen=True)
class WorkloadCert:
    """What Envoy gets: the chain (leaf + intermediates), the key, and the trust anchors (ROOTCA)."""

    cert: x509.Certificate
    chain_pem: bytes
    key_pem: bytes = field(repr=False)
    roots_pem: bytes

    @property
    def not_before(self) -> dt.datetime:
        return self.cert.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc

    @property
    def serial(self) -> str:
        return serial_hex(self.cert)

    @property
    def spiffe_id(self) -> str:
        ids = spiffe_ids(self.cert)
        return ids[0] if ids else ""

    def lifetime(self) -> float:
        return (self.not_after - self.not_before).total_seconds()


def make_csr(spiffe_id: str = "") -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A fresh P-256 key and a CSR for it (PEM). The SAN is only a hint: the CA uses the authenticated one."""
    key = ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if spiffe_id:
        b = b.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
    return key, b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def assemble(key: ec.EllipticCurvePrivateKey, chain: list[str], extra_roots: bytes = b"") -> WorkloadCert:
    """The signing answer (leaf first, root last) -> WorkloadCert; checks that the leaf is for our key."""
    if not chain:
        raise ValueError("empty certificate chain")
    certs = [x509.load_pem_x509_certificate(c.encode()) for c in chain]
    leaf = certs[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(serialization.Encoding.DER, spki) != \
            key.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise ValueError("the signed certificate is not for the key this agent generated")
    pem = serialization.Encoding.PEM
    chain_pem = b"".join(c.public_bytes(pem) for c in (certs[:-1] if len(certs) > 1 else certs))
    roots: list[x509.Certificate] = []
    if extra_roots:
        roots += x509.load_pem_x509_certificates(extra_roots)
    if len(certs) > 1 and certs[-1] not in roots:
        roots.append(certs[-1])
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return WorkloadCert(leaf, chain_pem, key_pem, b"".join(r.public_bytes(pem) for r in roots))


class CertManager:
    """Keeps one valid workload certificate. `on_update(cert)` runs (on the loop) after each new one."""

    def __init__(self, sign: Signer, settings: CertSettings = CertSettings(), *,
                 on_update: Callable[[WorkloadCert], None] | None = None,
                 roots: Callable[[], bytes] | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.sign = sign
        self.settings = settings
        self.on_update = on_update
        self.roots = roots  # the provisioned trust bundle (pod dir), added to ROOTCA
        self.clock = clock
        self.rng = rng or random.Random()
        self.current: WorkloadCert | None = None
        self.state = "PENDING"
        self.rotations = 0  # certificates obtained after the first
        self.failures = 0  # consecutive failed attempts
        self.total_failures = 0
        self.last_error = ""
        self.last_success: float | None = None
        self.next_attempt: float | None = None
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()

    # -------------------------------------------------------------------------------------- schedule
    def rotation_time(self, cert: WorkloadCert) -> float:
        life = cert.lifetime()
        ratio = self.settings.rotate_ratio + self.rng.uniform(-self.settings.jitter_ratio, self.settings.jitter_ratio)
        return cert.not_before.timestamp() + life * ratio

    def backoff(self, failures: int) -> float:
        """The wait after the n-th consecutive failure, capped, jittered, and never past the expiry."""
        s = self.settings
        wait = min(s.backoff_max, s.backoff_initial * (2 ** max(0, failures - 1)))
        wait *= self.rng.uniform(0.5, 1.0)
        if self.current is not None:
            left = self.current.not_after.timestamp() - self.clock()
            if left > 0:
                # try a few more times before it runs out, and once right after (which logs the expiry)
                wait = min(wait, max(left / 2, min(left + 0.05, 1.0)))
        return wait

    def rotate_now(self) -> None:
        """Ask for a new certificate at once (e.g. after the mesh's root changed)."""
        self.next_attempt = self.clock()
        self._wake.set()

    # -------------------------------------------------------------------------------------- loop
    async def wait_ready(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def run(self) -> None:
        self.next_attempt = self.clock()
        while True:
            delay = self.next_attempt - self.clock()
            if delay > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                continue
            await self.renew_once()

    async def renew_once(self) -> bool:
        """One signing attempt; schedules the next one either way. True on success."""
        self.state = "RENEWING"
        key, csr = make_csr(self.settings.spiffe_id)
        try:
            chain = await self.sign(csr, self.settings.ttl_seconds)
            cert = assemble(key, chain, self.roots() if self.roots else b"")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the control plane is down, refused, or answered garbage: keep the current one
            self._failed(e)
            return False
        first = self.current is None
        self.current = cert
        if not first:
            self.rotations += 1
        self.failures = 0
        self.last_error = ""
        self.last_success = self.clock()
        self.state = "VALID"
        self.next_attempt = self.rotation_time(cert)
        log.info("%s certificate %s serial %s, valid until %s; next rotation in %.1fs",
                 "got" if first else "rotated to", cert.spiffe_id, cert.serial, cert.not_after.isoformat(),
                 self.next_attempt - self.clock())
        if self.on_update is not None:
            try:
                self.on_update(cert)
            except Exception:
                log.exception("delivering the new certificate failed")
        self._ready.set()
        return True

    def _failed(self, e: Exception) -> None:
        self.failures += 1
        self.total_failures += 1
        self.last_error = str(e) or type(e).__name__
        wait = self.backoff(self.failures)
        self.next_attempt = self.clock() + wait
        if self.current is None:
            self.state = "PENDING"
            log.warning("getting the first workload certificate failed (attempt %d): %s; retrying in %.1fs",
                        self.failures, self.last_error, wait)
            return
        left = self.current.not_after.timestamp() - self.clock()
        if left > 0:
            self.state = "RETRYING"
            log.warning("renewing the workload certificate failed (attempt %d): %s; the current one (serial %s) "
                        "stays in use and expires in %.0fs; retrying in %.1fs", self.failures, self.last_error,
                        self.current.serial, left, wait)
        else:
            self.state = "EXPIRED"
            log.error("the workload certificate (serial %s) EXPIRED %.0fs ago and renewing failed (attempt %d): %s;"
                      " mTLS connections to and from this pod fail until the control plane signs a new one "
                      "(check that it runs and that this pod's credential is valid); retrying in %.1fs",
                      self.current.serial, -left, self.failures, self.last_error, wait)

    # -------------------------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """For agent.state and `proxy-status`: state, identity, serial, validity, rotations, errors."""
        now = self.clock()
        state = self.state
        if self.current is not None and state in ("VALID", "RETRYING") and now >= self.current.not_after.timestamp():
            state = "EXPIRED"
        out: dict[str, Any] = {"state": state, "rotations": self.rotations, "failures": self.failures,
                               "totalFailures": self.total_failures}
        if self.current is not None:
            c = self.current
            out.update(spiffeId=c.spiffe_id, serial=c.serial, notBefore=_iso(c.not_before),
                       notAfter=_iso(c.not_after), expiresInSeconds=round(c.not_after.timestamp() - now, 1))
        if self.next_attempt is not None:
            out["nextRotationInSeconds"] = round(max(0.0, self.next_attempt - now), 1)
        if self.last_error:
            out["lastError"] = self.last_error
        return out


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
