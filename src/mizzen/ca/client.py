"""The agent's client of the control plane's certificate service (`server.ca_service`).

    client = CaClient(["unix:/state/ca.sock"], credential=lambda: read_pod_credential(pod_dir))
    chain = await client.sign(csr_pem, ttl_seconds=0)     # [leaf, intermediate..., root] PEM strings
    await client.close()

TLS with the mesh root as the only trust anchor; the server must present `SERVER_NAME`. Each call re-reads the
credential (token, root), so a re-provisioned pod or a new root is picked up. Several addresses (control-plane
replicas) are tried in order within one call; the caller (`agent.certs`) owns retry and back-off.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

import grpc

from .identity import SERVER_NAME
from .proto import CREATE_METHOD, IstioCertificateRequest, IstioCertificateResponse

_RETRY_NEXT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN,
               grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED)


class CaClientError(RuntimeError):
    """A failed signing call. `refused` is True when a control plane answered no (bad credential or CSR): a
    retry will not help until something changes; False when none could be reached."""

    def __init__(self, message: str, *, refused: bool, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.refused = refused
        self.code = code


def grpc_target(address: str) -> str:
    """agent.json style (`unix:/p`, `/p`, `host:port`) -> a gRPC target."""
    if address.startswith("unix:"):
        return address
    if address.startswith("/"):
        return f"unix:{address}"
    return address


class CaClient:
    def __init__(self, addresses: list[str], credential: Callable[[], tuple[str, bytes]], *,
                 server_name: str = SERVER_NAME, timeout: float = 10.0) -> None:
        if not addresses:
            raise ValueError("no certificate service address")
        self.addresses = [grpc_target(a) for a in addresses]
        self.credential = credential
        self.server_name = server_name
        self.timeout = timeout
        self._channels: dict[str, tuple[bytes, grpc.aio.Channel]] = {}

    def _channel(self, target: str, root: bytes) -> grpc.aio.Channel:
        have = self._channels.get(target)
        if have is not None and have[0] == root:
            return have[1]
        if have is not None:
            asyncio.ensure_future(have[1].close())
        creds = grpc.ssl_channel_credentials(root_certificates=root)
        ch = grpc.aio.secure_channel(target, creds, options=[
            ("grpc.ssl_target_name_override", self.server_name), ("grpc.default_authority", self.server_name),
            # gRPC's own reconnect back-off grows to 120 s: after a long outage a channel would fail calls
            # fast for up to 2 minutes although the control plane is back. The agent paces its retries itself.
            ("grpc.initial_reconnect_backoff_ms", 500), ("grpc.min_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 5000)])
        self._channels[target] = (root, ch)
        return ch

    async def sign(self, csr_pem: bytes, *, ttl_seconds: int = 0, metadata: dict[str, str] | None = None) -> list[str]:
        token, root = self.credential()
        req = IstioCertificateRequest(csr=csr_pem.decode(), validity_duration=int(ttl_seconds))
        for k, v in (metadata or {}).items():
            req.metadata[k] = v
        errors: list[str] = []
        for target in self.addresses:
            call = self._channel(target, root).unary_unary(
                CREATE_METHOD, request_serializer=IstioCertificateRequest.SerializeToString,
                response_deserializer=IstioCertificateResponse.FromString)
            try:
                resp: Any = await call(req, timeout=self.timeout, metadata=(("authorization", f"Bearer {token}"),))
            except grpc.aio.AioRpcError as e:
                if e.code() in _RETRY_NEXT:
                    errors.append(f"{target}: {e.code().name} {e.details()}")
                    continue
                raise CaClientError(f"{target} refused: {e.code().name}: {e.details()}", refused=True,
                                    code=e.code()) from None
            chain = list(resp.cert_chain)
            if not chain:
                raise CaClientError(f"{target} answered with an empty certificate chain", refused=True)
            return chain
        raise CaClientError("no certificate service reachable: " + "; ".join(errors), refused=False,
                            code=grpc.StatusCode.UNAVAILABLE)

    async def close(self) -> None:
        for _root, ch in self._channels.values():
            await ch.close()
        self._channels.clear()
