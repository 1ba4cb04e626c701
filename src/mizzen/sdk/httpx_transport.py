"""An httpx transport that applies the mesh's rules: `httpx.Client(transport=mesh.httpx_transport())`.

A request to a mesh host (`http://echo:8080/...`, any name form or the VIP) is planned by the rules and sent
straight to the chosen endpoint's address (the Host header keeps the name the application used); a request to
anything else goes out unchanged through the inner transport. Retries need the body again, so a request body
is read once into memory. Answers the SDK gives itself carry `x-mizzen-sdk: <flag>` (NR, UH, UT, RL, FI...),
like Envoy's response flags.
"""
from __future__ import annotations

from typing import Any

import httpx

from . import rules as R
from .outcome import Outcome, Synthetic

FLAG_HEADER = "x-mizzen-sdk"


def _call(request: httpx.Request) -> R.Call:
    url = request.url
    port = url.port or (443 if url.scheme == "https" else 80)
    headers = {k.lower(): v for k, v in request.headers.items()}
    return R.Call(host=url.host, port=port, path=url.raw_path.decode("latin-1"), method=request.method,
                  headers=headers, scheme=url.scheme, query=dict(url.params))


def _error_kind(e: Exception) -> str:
    if isinstance(e, httpx.ConnectError | httpx.ConnectTimeout):
        return "connect-failure"
    if isinstance(e, httpx.TimeoutException):
        return "timeout"
    return "reset"


def _attempt(request: httpx.Request, body: bytes, address: str, port: int, timeout: float | None,
             plan: R.Plan) -> httpx.Request:
    """The request of one attempt: to the endpoint's address, the route's header operations applied, the
    attempt's timeout; the Host header keeps the name the application used."""
    headers = httpx.Headers(request.headers)
    for k in plan.remove_headers:
        headers.pop(k, None)
    for k, v in plan.set_headers:
        headers[k] = v
    ext = dict(request.extensions)
    if timeout is not None:
        ext["timeout"] = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    return httpx.Request(request.method, request.url.copy_with(host=address, port=port), headers=headers,
                         content=body, extensions=ext)


def _answer(request: httpx.Request, out: Outcome | Synthetic) -> httpx.Response:
    if isinstance(out, Synthetic):
        return httpx.Response(out.status, headers={FLAG_HEADER: out.flag, "content-type": "text/plain"},
                              content=out.body.encode(), request=request)
    if out.error is not None:
        assert out.exc is not None
        raise out.exc
    resp: httpx.Response = out.value
    return resp


class MeshTransport(httpx.BaseTransport):
    def __init__(self, mesh: Any, inner: httpx.BaseTransport | None = None):
        self.mesh = mesh
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        call = _call(request)
        body = request.read()

        def send(address: str, port: int, timeout: float | None, plan: R.Plan) -> Outcome:
            req = _attempt(request, body, address, port, timeout, plan)
            try:
                resp = self.inner.handle_request(req)
                if resp.status_code >= 500:
                    resp.read()  # may be retried: free the connection now
                    resp.close()
                return Outcome(status=resp.status_code, value=resp)
            except httpx.TransportError as e:
                return Outcome(error=_error_kind(e), exc=e)

        out = self.mesh.execute(call, send, close=lambda r: r.close())
        if out is None:
            return self.inner.handle_request(request)
        return _answer(request, out)

    def close(self) -> None:
        self.inner.close()


class AsyncMeshTransport(httpx.AsyncBaseTransport):
    """The same for `httpx.AsyncClient` (the call loop runs with asyncio waits)."""

    def __init__(self, mesh: Any, inner: httpx.AsyncBaseTransport | None = None):
        self.mesh = mesh
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        call = _call(request)
        body = await request.aread()

        async def send(address: str, port: int, timeout: float | None, plan: R.Plan) -> Outcome:
            req = _attempt(request, body, address, port, timeout, plan)
            try:
                resp = await self.inner.handle_async_request(req)
                if resp.status_code >= 500:
                    await resp.aread()
                    await resp.aclose()
                return Outcome(status=resp.status_code, value=resp)
            except httpx.TransportError as e:
                return Outcome(error=_error_kind(e), exc=e)

        async def close(resp: httpx.Response) -> None:
            await resp.aclose()

        out = await self.mesh.execute_async(call, send, close)
        if out is None:
            return await self.inner.handle_async_request(request)
        return _answer(request, out)

    async def aclose(self) -> None:
        await self.inner.aclose()


__all__ = ["AsyncMeshTransport", "FLAG_HEADER", "MeshTransport"]
