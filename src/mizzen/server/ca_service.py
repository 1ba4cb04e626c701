"""The certificate signing service agents call: Istio's `IstioCertificateService/CreateCertificate` over TLS.

    service = CaService(authority, credentials, trust_domain="cluster.local")
    server = CaServer(service)                       # its own grpc.aio server, TLS only
    await server.start(["unix:/state/ca.sock", "127.0.0.1:15012"])
    ...                                              # or: service.add_to(existing_grpc_aio_server)
    await server.stop(1.0)

Authentication: gRPC metadata `authorization: Bearer <pod token>` (the runner's per-pod credential,
`ca.credentials`). The certificate's only name is the SPIFFE ID of the identity the token is bound to; the CSR
contributes its public key and nothing else. Refusals: UNAUTHENTICATED (no/unknown token), INVALID_ARGUMENT
(bad CSR, TTL above the maximum); both are logged with the pod (never the token).

Transport: TLS always, also on the unix socket, so the bearer token never crosses a plaintext channel and the
agent authenticates the control plane with the mesh root (provisioned in the pod dir) before sending it. The
server certificate is issued by the mesh CA itself for `SERVER_NAME` (plus the control plane's SPIFFE ID), its
key made in memory at start; it is re-issued at half its life (gRPC asks `_fetch_config` on each handshake).
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any, Callable, Protocol

import grpc

from ..ca.authority import CertificateAuthority, CsrError, cert_pem, key_pem, new_key
from ..ca.identity import (CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SA, DEFAULT_TRUST_DOMAIN, SERVER_NAME,
                           PodIdentity, SpiffeId, check_trust_domain)
from ..ca.proto import SERVICE, IstioCertificateRequest, IstioCertificateResponse

log = logging.getLogger("mizzen.ca")

SERVER_DNS_NAMES = (SERVER_NAME, "istiod.istio-system.svc", "localhost")


class Verifier(Protocol):
    def verify(self, token: str) -> PodIdentity | None: ...


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def bearer_token(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            if isinstance(value, bytes):
                value = value.decode(errors="replace")
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class CaService:
    """The gRPC handler; `authority` is a CertificateAuthority or a callable returning the current one (so a
    replaced intermediate is picked up without a restart)."""

    def __init__(self, authority: CertificateAuthority | Callable[[], CertificateAuthority],
                 credentials: Verifier, *, trust_domain: str = DEFAULT_TRUST_DOMAIN,
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self._authority = authority if callable(authority) else (lambda: authority)
        self.credentials = credentials
        self.trust_domain = check_trust_domain(trust_domain)
        self.clock = clock
        self.stats = {"issued": 0, "unauthenticated": 0, "invalid": 0}

    @property
    def authority(self) -> CertificateAuthority:
        return self._authority()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "CreateCertificate": grpc.unary_unary_rpc_method_handler(
                self.create_certificate, request_deserializer=IstioCertificateRequest.FromString,
                response_serializer=IstioCertificateResponse.SerializeToString),
        })

    def add_to(self, server: grpc.aio.Server) -> None:
        """Mount on an existing grpc.aio server (only on TLS ports: the request carries a bearer token)."""
        server.add_generic_rpc_handlers((self.handler(),))

    async def create_certificate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        token = bearer_token(context.invocation_metadata())
        identity = self.credentials.verify(token) if token else None
        if identity is None:
            self.stats["unauthenticated"] += 1
            why = "no bearer token in the 'authorization' metadata" if not token else "unknown or revoked token"
            log.warning("refused a certificate request from %s: %s", context.peer(), why)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                f"a pod credential is required ({why}); the agent reads it from its pod dir")
        spiffe = identity.spiffe_id(self.trust_domain)
        try:
            authority = self.authority
            ttl = authority.ttl_for(int(request.validity_duration))
            issued = authority.sign_csr(request.csr.encode(), spiffe, self.clock(), ttl)
        except CsrError as e:
            self.stats["invalid"] += 1
            log.warning("refused a certificate for pod %s (%s): %s", identity.pod, spiffe, e)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        self.stats["issued"] += 1
        log.info("issued %s to pod %s: serial %x, valid until %s", spiffe, identity.pod, issued.cert.serial_number,
                 issued.cert.not_valid_after_utc.isoformat())
        return IstioCertificateResponse(cert_chain=issued.chain_pems())


class _ServerCert:
    """The control plane's own TLS certificate, issued by the mesh CA and renewed at half its life."""

    def __init__(self, service: CaService, ttl: dt.timedelta | None) -> None:
        self.service = service
        self.ttl = ttl
        self._lock = threading.Lock()
        self._renew_at: dt.datetime | None = None
        self.config: Any = None
        self.serial = 0

    def _issue(self) -> Any:
        now = self.service.clock()
        authority = self.service.authority
        key = new_key()
        identity = SpiffeId(self.service.trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SA)
        issued = authority.issue(key.public_key(), identity, now, self.ttl or authority.default_ttl,
                                 dns_names=SERVER_DNS_NAMES, ips=("127.0.0.1", "::1"))
        cert = issued.cert
        self._renew_at = cert.not_valid_before_utc + (cert.not_valid_after_utc - cert.not_valid_before_utc) / 2
        self.serial = cert.serial_number
        chain = b"".join(cert_pem(c) for c in issued.chain[:-1])
        return grpc.ssl_server_certificate_configuration([(key_pem(key), chain)])

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials for one port. gRPC keeps a configuration per port and asks that port's fetcher before
        each handshake: it gets a new one when the shared certificate was renewed since it last took one."""
        with self._lock:
            if self.config is None:
                self.config = self._issue()
            state = {"serial": self.serial}

        def fetch() -> Any:
            with self._lock:
                if self._renew_at is not None and self.service.clock() >= self._renew_at:
                    try:
                        self.config = self._issue()
                        log.info("renewed the control plane's TLS certificate (serial %x)", self.serial)
                    except Exception:  # keep serving with the old certificate; try again in a while
                        log.exception("renewing the control plane's TLS certificate failed; retrying in 30 s")
                        self._renew_at = self.service.clock() + dt.timedelta(seconds=30)
                if state["serial"] == self.serial:
                    return None
                state["serial"] = self.serial
                return self.config

        return grpc.dynamic_ssl_server_credentials(self.config, fetch, require_client_authentication=False)


class CaServer:
    """A grpc.aio server that serves the CA service on TLS ports only."""

    def __init__(self, service: CaService, *, server_cert_ttl: dt.timedelta | None = None) -> None:
        self.service = service
        self._cert = _ServerCert(service, server_cert_ttl)
        self._server: grpc.aio.Server | None = None
        self.addresses: list[str] = []

    async def start(self, addresses: list[str]) -> list[str]:
        """Bind each address (`unix:/path` or `host:port`, port 0 = any); returns the bound addresses."""
        server = grpc.aio.server()
        self.service.add_to(server)
        bound = []
        for addr in addresses:
            port = server.add_secure_port(addr, self._cert.credentials())
            if addr.startswith("unix:"):
                bound.append(addr)
            else:
                bound.append(f"{addr.rsplit(':', 1)[0]}:{port}")
        await server.start()
        self._server = server
        self.addresses = bound
        log.info("certificate service (TLS, server name %s) on %s", SERVER_NAME, ", ".join(bound))
        return bound

    def renew_server_cert(self) -> None:
        """Re-issue the server's TLS certificate at the next handshake (the CA was replaced: agents provisioned
        with the new root must be able to verify it)."""
        with self._cert._lock:
            self._cert._renew_at = self.service.clock()

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
