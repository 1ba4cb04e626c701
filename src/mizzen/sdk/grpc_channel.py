"""A grpcio channel that applies the mesh's rules: `mesh.grpc_channel("echo:50051")` where the application
had `grpc.insecure_channel("echo:50051")`; generated stubs take it as they take any channel.

Why a channel and not a `grpc.UnaryUnaryClientInterceptor`: an interceptor can change a call's metadata,
timeout and method, but not the address it goes to — the underlying channel is already bound to one target.
This channel keeps one real channel per endpoint (plaintext; created on first use, closed with it) and sends
each unary-unary call where the rules say, with the route's timeout, retries on gRPC status codes
(`retryOn: unavailable,cancelled,...`, and `5xx`/`gateway-error` for UNAVAILABLE as Envoy maps it) and
outlier detection. Streaming calls pick an endpoint by the rules once per call (no retries). Calls to a target
that is not a mesh service go to a plain channel to that target.
"""
from __future__ import annotations

import threading
from typing import Any, Sequence

import grpc

from . import rules as R
from .outcome import Outcome, Synthetic

# gRPC status → the HTTP status Envoy reports for it (grpc_http1_bridge / Envoy's mapping), for the rules
_HTTP_OF = {grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
            grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNKNOWN: 500, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
            grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNIMPLEMENTED: 501}
_CODE_OF_HTTP = {400: grpc.StatusCode.INTERNAL, 401: grpc.StatusCode.UNAUTHENTICATED,
                 403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.UNIMPLEMENTED,
                 429: grpc.StatusCode.UNAVAILABLE, 502: grpc.StatusCode.UNAVAILABLE,
                 503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.UNAVAILABLE}


class MeshRpcError(grpc.RpcError, grpc.Call):
    """An error the SDK answers itself (no route, no healthy endpoint, rate limited, injected fault, timeout)."""

    def __init__(self, code: grpc.StatusCode, details: str):
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self):
        return ()

    def trailing_metadata(self):
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self):
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback) -> bool:
        return False

    def __str__(self) -> str:
        return f"<MeshRpcError {self._code.name}: {self._details}>"


def _synthetic_error(s: Synthetic) -> MeshRpcError:
    if s.grpc:
        code = next((c for c in grpc.StatusCode if c.value[0] == s.status), grpc.StatusCode.UNKNOWN)
    else:
        code = _CODE_OF_HTTP.get(s.status, grpc.StatusCode.UNKNOWN if s.status >= 500 else grpc.StatusCode.INTERNAL)
        if s.flag == "UT":
            code = grpc.StatusCode.DEADLINE_EXCEEDED
    return MeshRpcError(code, f"{s.body} (mizzen sdk: {s.flag})")


class _Unary:
    def __init__(self, ch: "MeshChannel", method: str, ser: Any, de: Any):
        self.ch, self.method, self.ser, self.de = ch, method, ser, de

    def __call__(self, request: Any, timeout: float | None = None, metadata: Sequence[tuple[str, str]] | None = None,
                 credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None) -> Any:
        call = R.Call(host=self.ch.host, port=self.ch.port, path=self.method, method="POST",
                      headers={k.lower(): v for k, v in (metadata or ()) if isinstance(v, str)}, scheme="http")

        def send(address: str, port: int, per_try: float | None, plan: R.Plan) -> Outcome:
            fn = self.ch.endpoint(address, port).unary_unary(self.method, request_serializer=self.ser,
                                                             response_deserializer=self.de)
            t = per_try if timeout is None else (timeout if per_try is None else min(timeout, per_try))
            md = [(k, v) for k, v in (metadata or ()) if k.lower() not in plan.remove_headers] + list(plan.set_headers)
            try:
                return Outcome(status=200, value=fn(request, timeout=t, metadata=md or None))
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
                name = code.name.lower().replace("_", "-")
                if code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in (e.details() or "").lower():
                    return Outcome(error="connect-failure", exc=e, grpc=name)
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    return Outcome(error="timeout", exc=e, grpc=name)
                # application errors (NOT_FOUND, INVALID_ARGUMENT ...) are answers, not upstream failures
                return Outcome(status=_HTTP_OF.get(code, 200), exc=e, grpc=name)

        out = self.ch.mesh.execute(call, send)
        if out is None:
            return self.ch.plain().unary_unary(self.method, request_serializer=self.ser,
                                               response_deserializer=self.de)(
                request, timeout=timeout, metadata=metadata)
        if isinstance(out, Synthetic):
            raise _synthetic_error(out)
        if out.exc is not None:
            raise out.exc
        return out.value


class MeshChannel(grpc.Channel):
    def __init__(self, mesh: Any, target: str, options: Sequence[tuple[str, Any]] = ()):
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"mesh gRPC target must be HOST:PORT, got {target!r}")
        self.mesh, self.target, self.host, self.port = mesh, target, host, int(port)
        self.options = list(options)
        self._channels: dict[tuple[str, int], grpc.Channel] = {}
        self._plain: grpc.Channel | None = None
        self._lock = threading.Lock()

    def endpoint(self, address: str, port: int) -> grpc.Channel:
        with self._lock:
            ch = self._channels.get((address, port))
            if ch is None:
                ch = self._channels[(address, port)] = grpc.insecure_channel(f"{address}:{port}", self.options)
            return ch

    def plain(self) -> grpc.Channel:
        with self._lock:
            if self._plain is None:
                self._plain = grpc.insecure_channel(self.target, self.options)
            return self._plain

    def _pick(self) -> grpc.Channel:
        """For streaming calls: one endpoint chosen by the rules (no retries)."""
        chosen: list[grpc.Channel] = []

        def send(address: str, port: int, per_try: float | None, plan: R.Plan) -> Outcome:
            chosen.append(self.endpoint(address, port))
            return Outcome(status=200)

        out = self.mesh.execute(R.Call(host=self.host, port=self.port, path="/", method="POST"), send)
        if out is None:
            return self.plain()
        if isinstance(out, Synthetic):
            raise _synthetic_error(out)
        return chosen[-1]

    # -- grpc.Channel ----------------------------------------------------------------------------------
    def unary_unary(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _Unary(self, method, request_serializer, response_deserializer)

    def unary_stream(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return lambda *a, **k: self._pick().unary_stream(method, request_serializer, response_deserializer)(*a, **k)

    def stream_unary(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return lambda *a, **k: self._pick().stream_unary(method, request_serializer, response_deserializer)(*a, **k)

    def stream_stream(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return lambda *a, **k: self._pick().stream_stream(method, request_serializer, response_deserializer)(*a, **k)

    def subscribe(self, callback, try_to_connect=False):
        self.plain().subscribe(callback, try_to_connect)

    def unsubscribe(self, callback):
        self.plain().unsubscribe(callback)

    def close(self) -> None:
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()
            if self._plain is not None:
                self._plain.close()
                self._plain = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


__all__ = ["MeshChannel", "MeshRpcError"]

