"""The agent's Secret Discovery Service: the workload certificate and the mesh roots to Envoy, on a unix socket.

    sds = SdsServer("/pods/p/sds.sock", owner=(1337, 1337))
    await sds.start()
    sds.update(workload_cert)                 # from agent.certs.CertManager(on_update=...)
    sds.status()                              # streams, what each Envoy acknowledged, the last NACK
    await sds.stop()

Serves `envoy.service.secret.v3.SecretDiscoveryService`: StreamSecrets (state of the world, what Envoy uses for
`api_type: GRPC`) and DeltaSecrets (`DELTA_GRPC`), with Istio's secret names:
  `default`  tls_certificate: the chain (leaf + intermediates) and the private key
  `ROOTCA`   validation_context: trusted_ca = the mesh root(s)
and, for a gateway, its credentials (`set_credentials`, from `agent.credentials`): `kubernetes://<Secret>`
(tls_certificate) and `kubernetes://<Secret>-cacert` (validation_context), as Istio names them.
A new certificate is pushed to every open stream at once; Envoy swaps it in for new handshakes, keeping its
listeners, clusters and open connections (no restart, no drain).

The socket is the only way to the private key other than the agent's memory: it is chmod 0600 and chowned to
Envoy's uid right after binding, so an app in the pod (another uid) cannot connect.

`sds_cluster`/`sds_config`/`tls_context_sds` give the bootstrap and listener/cluster shapes that use it.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from typing import Any, AsyncIterator, Callable

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2  # noqa: F401  (registers the service descriptor)
from google.protobuf import any_pb2

from ..translate.tls import DEFAULT_SECRET, ROOT_SECRET, SDS_CLUSTER  # the names Envoy's TLS contexts use
from .certs import WorkloadCert

log = logging.getLogger("mizzen.agent.sds")

SERVICE = "envoy.service.secret.v3.SecretDiscoveryService"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
_CHANGED = object()
_END = object()


# ------------------------------------------------------------------------------------------------ Envoy shapes
def sds_cluster(socket_path: str, name: str = SDS_CLUSTER) -> dict[str, Any]:
    """The bootstrap's static cluster to the agent's SDS socket (HTTP/2, a pipe)."""
    return {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"pipe": {"path": socket_path}}}}]}]},
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
    }


def sds_config(api_type: str = "GRPC", cluster: str = SDS_CLUSTER) -> dict[str, Any]:
    """A ConfigSource for one secret: gRPC to the SDS cluster (`GRPC` = StreamSecrets, `DELTA_GRPC`)."""
    return {"api_config_source": {
        "api_type": api_type, "transport_api_version": "V3", "set_node_on_first_message_only": True,
        "grpc_services": [{"envoy_grpc": {"cluster_name": cluster}}]},
        "resource_api_version": "V3"}


def tls_context_sds(api_type: str = "GRPC", *, cluster: str = SDS_CLUSTER, match_sans: list[str] | None = None,
                    alpn: list[str] | None = None) -> dict[str, Any]:
    """A `common_tls_context` whose certificate is `default` and whose trust anchors are `ROOTCA`; with
    `match_sans`, the peer must present one of those URI SANs (secure naming). `alpn` must say what the
    connection will speak: a server offering h2 to an HTTP/1.1 client cluster breaks every request."""
    source = sds_config(api_type, cluster)
    ctx: dict[str, Any] = {"tls_certificate_sds_secret_configs": [{"name": DEFAULT_SECRET, "sds_config": source}]}
    if alpn:
        ctx["alpn_protocols"] = list(alpn)
    default_vc: dict[str, Any] = {}
    if match_sans:
        default_vc["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": s}} for s in match_sans]
    ctx["combined_validation_context"] = {
        "default_validation_context": default_vc,
        "validation_context_sds_secret_config": {"name": ROOT_SECRET, "sds_config": source},
    }
    return ctx


# ------------------------------------------------------------------------------------------------ secrets
def build_secrets(cert: WorkloadCert) -> dict[str, tuple[str, any_pb2.Any]]:
    """{name: (version, Any(Secret))} for `default` and `ROOTCA`."""
    default = secret_pb2.Secret(name=DEFAULT_SECRET, tls_certificate=common_pb2.TlsCertificate(
        certificate_chain=base_pb2.DataSource(inline_bytes=cert.chain_pem),
        private_key=base_pb2.DataSource(inline_bytes=cert.key_pem)))
    root = secret_pb2.Secret(name=ROOT_SECRET, validation_context=common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_bytes=cert.roots_pem)))
    out = {}
    for version, msg in ((cert.serial, default), (hashlib.sha256(cert.roots_pem).hexdigest()[:16], root)):
        a = any_pb2.Any()
        a.Pack(msg)
        out[msg.name] = (version, a)
    return out


def _version_of(sent: dict[str, str]) -> str:
    text = "".join(f"{n}={v};" for n, v in sorted(sent.items()))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class _StreamState:
    """Per stream: subscribed names, what was sent, the ACK/NACK record. Fed requests and secret changes,
    returns the responses to write (no I/O)."""

    def __init__(self, delta: bool, peer: str) -> None:
        self.delta = delta
        self.peer = peer
        self.names: set[str] = set()
        self.sent: dict[str, str] = {}  # name -> version the client was sent (or said it has)
        self.nonce = 0
        self.last_nonce = ""
        self.acked: dict[str, str] = {}  # name -> version acknowledged
        self.pending: dict[str, dict[str, str]] = {}  # nonce -> {name: version} sent with it
        self.error = ""
        self.first = True

    def _next_nonce(self) -> str:
        self.nonce += 1
        self.last_nonce = str(self.nonce)
        return self.last_nonce

    def _pend(self, nonce: str, versions: dict[str, str]) -> None:
        self.pending[nonce] = versions
        while len(self.pending) > 16:  # a SotW client ACKs only the latest of several quick responses
            del self.pending[next(iter(self.pending))]

    def on_request(self, req: Any, secrets: dict[str, tuple[str, any_pb2.Any]]) -> list[Any]:
        nonce = req.response_nonce
        if nonce:
            versions = self.pending.pop(nonce, None)
            if req.HasField("error_detail"):
                self.error = req.error_detail.message
                log.warning("Envoy rejected secrets %s (nonce %s): %s", sorted(versions or {}), nonce, self.error)
            elif versions is not None:
                self.acked.update(versions)
                self.error = ""
        if self.delta:
            self.names |= set(req.resource_names_subscribe)
            for n in req.resource_names_unsubscribe:
                self.names.discard(n)
                self.sent.pop(n, None)
            if self.first:
                self.sent.update(dict(req.initial_resource_versions))
        else:
            if nonce and nonce != self.last_nonce:
                return []  # a stale request: the client is about to see a newer response
            self.names = set(req.resource_names)
            if self.first and req.version_info:
                want = {n: secrets[n][0] for n in self.names if n in secrets}
                if want and _version_of(want) == req.version_info:
                    self.sent = dict(want)
                    self.acked.update(want)
        self.first = False
        return self.respond(secrets)

    def respond(self, secrets: dict[str, tuple[str, any_pb2.Any]]) -> list[Any]:
        want = {n: secrets[n][0] for n in self.names if n in secrets}
        if self.delta:
            changed = {n: v for n, v in want.items() if self.sent.get(n) != v}
            if not changed:
                return []
            self.sent.update(changed)
            nonce = self._next_nonce()
            self._pend(nonce, changed)
            return [discovery_pb2.DeltaDiscoveryResponse(
                system_version_info=_version_of(self.sent), type_url=SECRET_TYPE, nonce=nonce,
                resources=[discovery_pb2.Resource(name=n, version=v, resource=secrets[n][1])
                           for n, v in sorted(changed.items())])]
        if not want or want == {n: self.sent.get(n) for n in want}:
            return []
        self.sent = dict(want)
        nonce = self._next_nonce()
        self._pend(nonce, dict(want))
        return [discovery_pb2.DiscoveryResponse(
            version_info=_version_of(want), type_url=SECRET_TYPE, nonce=nonce,
            resources=[secrets[n][1] for n in sorted(want)])]

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"peer": self.peer, "protocol": "delta" if self.delta else "sotw",
                               "names": sorted(self.names), "acked": dict(sorted(self.acked.items()))}
        if self.error:
            out["error"] = self.error
        return out


class SdsServer:
    """grpc.aio SDS on a unix socket; `update()` pushes a new certificate to every stream."""

    def __init__(self, socket_path: str, *, owner: tuple[int, int] | None = None, mode: int = 0o600) -> None:
        self.socket_path = socket_path
        self.owner = owner
        self.mode = mode
        self.secrets: dict[str, tuple[str, any_pb2.Any]] = {}
        self.credentials: dict[str, tuple[str, any_pb2.Any]] = {}  # a gateway's, by SDS name
        self.on_subscribe: Callable[[], None] | None = None  # told when any stream's names change
        self._streams: dict[asyncio.Queue, _StreamState] = {}
        self._server: grpc.aio.Server | None = None
        self.pushes = 0

    # ------------------------------------------------------------------------------------------ API
    def update(self, cert: WorkloadCert) -> None:
        self.secrets = build_secrets(cert)
        self.pushes += 1
        for q in self._streams:
            q.put_nowait(_CHANGED)

    def set_credentials(self, credentials: dict[str, tuple[str, any_pb2.Any]]) -> None:
        """A gateway's credentials ({name: (version, Any(Secret))}); changed ones go to every stream that
        asked for them (Envoy swaps them in for new handshakes, open connections stay)."""
        if credentials == self.credentials:
            return
        self.credentials = dict(credentials)
        self.pushes += 1
        for q in self._streams:
            q.put_nowait(_CHANGED)

    def subscribed(self) -> set[str]:
        """Every secret name some stream asked for."""
        return {n for s in self._streams.values() for n in s.names}

    def _all(self) -> dict[str, tuple[str, any_pb2.Any]]:
        return {**self.credentials, **self.secrets} if self.credentials else self.secrets

    def status(self) -> dict[str, Any]:
        """Open streams and, per secret, the current version and whether every subscribed stream ACKed it."""
        streams = [s.status() for s in self._streams.values()]
        secrets = {}
        for name, (version, _a) in sorted(self._all().items()):
            subs = [s for s in self._streams.values() if name in s.names]
            secrets[name] = {"version": version, "subscribers": len(subs),
                             "acked": bool(subs) and all(s.acked.get(name) == version for s in subs)}
        return {"socket": self.socket_path, "streams": streams, "secrets": secrets, "pushes": self.pushes}

    def delivered(self, name: str = DEFAULT_SECRET) -> bool:
        """Every stream subscribed to `name` acknowledged its current version."""
        return bool(self.status()["secrets"].get(name, {}).get("acked"))

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "StreamSecrets": grpc.stream_stream_rpc_method_handler(
                self._sotw, request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString),
            "DeltaSecrets": grpc.stream_stream_rpc_method_handler(
                self._delta, request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=discovery_pb2.DeltaDiscoveryResponse.SerializeToString),
        }),))
        server.add_insecure_port(f"unix:{self.socket_path}")
        await server.start()
        os.chmod(self.socket_path, self.mode)
        if self.owner is not None and self.owner != (os.getuid(), os.getgid()):
            os.chown(self.socket_path, *self.owner)
        self._server = server
        log.info("SDS on %s (mode %04o%s)", self.socket_path, self.mode,
                 f", owner {self.owner[0]}:{self.owner[1]}" if self.owner else "")

    async def stop(self, grace: float | None = 0.5) -> None:
        for q in list(self._streams):
            q.put_nowait(_END)
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    # ------------------------------------------------------------------------------------------ streams
    async def _sotw(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for resp in self._serve(requests, context, delta=False):
            yield resp

    async def _delta(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for resp in self._serve(requests, context, delta=True):
            yield resp

    async def _serve(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                     delta: bool) -> AsyncIterator[Any]:
        queue: asyncio.Queue = asyncio.Queue()
        state = _StreamState(delta, context.peer())
        self._streams[queue] = state

        async def read() -> None:
            try:
                async for req in requests:
                    if req.type_url and req.type_url != SECRET_TYPE:
                        log.warning("SDS stream asked for type %s; only %s is served", req.type_url, SECRET_TYPE)
                        continue
                    queue.put_nowait(req)
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass
            finally:
                queue.put_nowait(_END)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                before = set(state.names)
                out = state.respond(self._all()) if item is _CHANGED else state.on_request(item, self._all())
                if state.names != before and self.on_subscribe is not None:
                    self.on_subscribe()
                for resp in out:
                    yield resp
        finally:
            reader.cancel()
            self._streams.pop(queue, None)
