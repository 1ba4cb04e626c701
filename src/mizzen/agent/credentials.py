"""A gateway's TLS credentials: Kubernetes-shaped Secrets from the control plane, to Envoy over the agent's SDS.

    creds = GatewayCredentials(sds, api, namespace="istio-system", poll_seconds=1.0)
    task = asyncio.create_task(creds.run())
    creds.status()      # {name: {"version", "error"?}}

The gateway's listeners (translate/gateway.py) name `kubernetes://<credentialName>` for a server certificate
and `kubernetes://<credentialName>-cacert` for a MUTUAL server's client CA, as Istio does. Envoy asks the
agent's SDS for those names; this reads the `v1 Secret` `<credentialName>` of the gateway's own namespace
(or, for `kubernetes-gateway://<ns>/<name>` — a Gateway API certificateRef that a ReferenceGrant allows — the
Secret `<name>` of `<ns>`)
(`tls.crt`, `tls.key`; `ca.crt` for the CA, else the Secret `<credentialName>-cacert`'s `ca.crt`) from the
control plane's REST API, and serves it. It re-reads the Secrets every `poll_seconds` (and at once when Envoy
asks for a new name): a changed Secret is pushed to Envoy, which uses the new certificate for new handshakes
and keeps every open connection — rotation without a drop. A missing or unreadable Secret is logged (once per
change of reason) and the last good credential stays in use.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from google.protobuf import any_pb2

from ..client import ClientError, HttpError
from ..model.gateway_api import CROSS_NAMESPACE_CREDENTIAL
from .sds import SdsServer

log = logging.getLogger("mizzen.agent.credentials")

PREFIX = "kubernetes://"
PREFIXES = (PREFIX, CROSS_NAMESPACE_CREDENTIAL)
CA_SUFFIX = "-cacert"


def secret_ref(sds_name: str, own_namespace: str) -> tuple[str, str]:
    """(namespace, credential name) an SDS name asks for: `kubernetes://<name>` in the gateway's namespace,
    `kubernetes-gateway://<ns>/<name>` in `<ns>` (a Gateway API certificateRef a ReferenceGrant allows; the
    control plane refuses the read without one)."""
    if sds_name.startswith(CROSS_NAMESPACE_CREDENTIAL):
        ns, _, name = sds_name[len(CROSS_NAMESPACE_CREDENTIAL):].partition("/")
        return ns, name
    return own_namespace, sds_name[len(PREFIX):]


def _values(resource: dict[str, Any]) -> dict[str, bytes]:
    spec = resource.get("spec") or {}
    out = {k: base64.b64decode(v) for k, v in (spec.get("data") or {}).items()}
    out.update({k: v.encode() for k, v in (spec.get("stringData") or {}).items()})
    return out


def _pack(msg: secret_pb2.Secret) -> tuple[str, any_pb2.Any]:
    a = any_pb2.Any()
    a.Pack(msg)
    return hashlib.sha256(a.value).hexdigest()[:16], a


def certificate_secret(name: str, values: dict[str, bytes]) -> tuple[str, any_pb2.Any]:
    if "tls.crt" not in values or "tls.key" not in values:
        raise ValueError("the Secret has no tls.crt and tls.key (type kubernetes.io/tls)")
    return _pack(secret_pb2.Secret(name=name, tls_certificate=common_pb2.TlsCertificate(
        certificate_chain=base_pb2.DataSource(inline_bytes=values["tls.crt"]),
        private_key=base_pb2.DataSource(inline_bytes=values["tls.key"]))))


def ca_secret(name: str, ca: bytes) -> tuple[str, any_pb2.Any]:
    return _pack(secret_pb2.Secret(name=name, validation_context=common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_bytes=ca))))


class GatewayCredentials:
    def __init__(self, sds: SdsServer, api: Any, *, namespace: str, poll_seconds: float = 1.0) -> None:
        self.sds = sds
        self.api = api
        self.namespace = namespace
        self.poll_seconds = poll_seconds
        self.errors: dict[str, str] = {}
        self._wake = asyncio.Event()
        sds.on_subscribe = self._wake.set

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {n: {"version": v} for n, (v, _a) in sorted(self.sds.credentials.items())}
        for n, e in self.errors.items():
            out.setdefault(n, {})["error"] = e
        return out

    async def run(self) -> None:
        while True:
            await self.refresh()
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def _secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        try:
            return _values(await self.api.request("GET", f"/api/v1/resources/Secret/{namespace}/{name}"))
        except HttpError as e:
            if e.status == 404:
                return None
            raise

    async def refresh(self) -> None:
        """Read every Secret a subscribed name needs and hand the credentials to the SDS server."""
        wanted = sorted(n for n in self.sds.subscribed() if n.startswith(PREFIXES))
        out = {n: v for n, v in self.sds.credentials.items() if n in wanted}  # last good ones stay
        cache: dict[tuple[str, str], dict[str, bytes] | None] = {}
        for n in wanted:
            ns, base = secret_ref(n, self.namespace)
            is_ca = base.endswith(CA_SUFFIX)
            secret_name = base[:-len(CA_SUFFIX)] if is_ca else base
            try:
                if (ns, secret_name) not in cache:
                    cache[(ns, secret_name)] = await self._secret(ns, secret_name)
                values = cache[(ns, secret_name)]
                if is_ca:
                    ca = (values or {}).get("ca.crt")
                    if ca is None:  # Istio's other form: a Secret of its own named <name>-cacert
                        if (ns, base) not in cache:
                            cache[(ns, base)] = await self._secret(ns, base)
                        ca = (cache[(ns, base)] or {}).get("ca.crt")
                    if ca is None:
                        raise LookupError(f"no ca.crt in Secret {ns}/{secret_name} nor in {ns}/{base}")
                    out[n] = ca_secret(n, ca)
                else:
                    if values is None:
                        raise LookupError(f"no Secret {ns}/{secret_name}")
                    out[n] = certificate_secret(n, values)
                if self.errors.pop(n, None) is not None:
                    log.info("credential %s available again", n)
            except (ClientError, LookupError, ValueError) as e:
                msg = str(e)
                if self.errors.get(n) != msg:
                    log.warning("gateway credential %s: %s; %s (apply the Secret in namespace %s%s)", n, msg,
                                "keeping the last one" if n in out else "its servers fail TLS handshakes", ns,
                                "" if ns == self.namespace else f", and a ReferenceGrant there from Gateway of "
                                f"namespace {self.namespace} to that Secret")
                self.errors[n] = msg
        if out != self.sds.credentials:
            changed = sorted(k for k in out if self.sds.credentials.get(k) != out[k])
            if changed:
                log.info("serving gateway credentials %s", ", ".join(changed))
            self.sds.set_credentials(out)
