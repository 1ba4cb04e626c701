"""TLS for the REST API's TCP listener: a server certificate from the mesh CA, renewed without a restart.

The certificate is the one the CA service gives the control plane (`server/ca_service.py`): the control
plane's SPIFFE ID, DNS names `mizzen-controlplane` (what clients verify, whatever address they dialled),
`istiod.istio-system.svc` and `localhost`, plus 127.0.0.1/::1 and any `extra_names`; its key is made in memory.
Clients trust the mesh root (`STATE/ca/root-cert.pem`) and check the name `mizzen-controlplane`: only the
control plane holds a certificate with a DNS name from this CA (workload certificates carry only their SPIFFE
URI), so an app with a workload certificate cannot pose as the API.

`ssl.SSLContext.load_cert_chain` reads files: the chain and key are written to a private temporary directory
(0700), loaded, and removed at once. `renew_if_due()` (called periodically by the control plane) loads a new
certificate into the same context at half the old one's life; new handshakes use it, open connections keep
theirs.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import shutil
import ssl
import tempfile
from typing import Callable, Sequence

from ..ca.authority import CertificateAuthority, cert_pem, key_pem, new_key
from ..ca.identity import CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SA, DEFAULT_TRUST_DOMAIN, SpiffeId
from .ca_service import SERVER_DNS_NAMES

log = logging.getLogger("mizzen.auth")

SERVER_TTL = dt.timedelta(hours=24)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class ServerTls:
    def __init__(self, authority: Callable[[], CertificateAuthority], *, trust_domain: str = DEFAULT_TRUST_DOMAIN,
                 extra_names: Sequence[str] = (), ttl: dt.timedelta = SERVER_TTL,
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self.authority = authority
        self.trust_domain = trust_domain
        self.extra_names = tuple(extra_names)
        self.ttl = ttl
        self.clock = clock
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.renew_at: dt.datetime | None = None
        self.serial = 0
        self._load()

    def _load(self) -> None:
        now = self.clock()
        authority = self.authority()
        key = new_key()
        ips = ["127.0.0.1", "::1"]
        dns = list(SERVER_DNS_NAMES)
        for n in self.extra_names:
            try:
                ips.append(str(ipaddress.ip_address(n)))
            except ValueError:
                dns.append(n)
        issued = authority.issue(key.public_key(), SpiffeId(self.trust_domain, CONTROL_PLANE_NAMESPACE,
                                                            CONTROL_PLANE_SA), now, min(self.ttl, authority.max_ttl),
                                 dns_names=dns, ips=ips)
        cert = issued.cert
        d = tempfile.mkdtemp(prefix="mizzen-api-tls-")  # 0700
        try:
            chain, keyfile = os.path.join(d, "chain.pem"), os.path.join(d, "key.pem")
            with open(os.open(chain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(b"".join(cert_pem(c) for c in issued.chain[:-1]))
            with open(os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(key_pem(key))
            self.context.load_cert_chain(chain, keyfile)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        self.renew_at = cert.not_valid_before_utc + life / 2
        self.serial = cert.serial_number

    def renew_if_due(self) -> bool:
        if self.renew_at is None or self.clock() < self.renew_at:
            return False
        try:
            self._load()
        except Exception:  # keep serving with the current certificate; the next call tries again
            log.exception("renewing the REST API's TLS certificate failed; keeping the current one")
            return False
        log.info("renewed the REST API's TLS certificate (serial %x)", self.serial)
        return True


__all__ = ["ServerTls"]
