"""Where the console reads from: the control plane's REST API (JSON), the sidecars' telemetry windows, the
trace store, and tap. Each is a small async object, so the control plane can mount the console with
in-process sources later and the standalone console (`python -m mizzen.console`) uses HTTP ones.
"""
from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol, Sequence

import aiohttp

from ..telemetry.traces import TraceStore

log = logging.getLogger("mizzen.console")


class SourceError(RuntimeError):
    """A source did not answer; the message says which and why (shown on the page)."""


class RestClient:
    """The control plane's REST API at `unix:/path/api.sock` or `https://host:port` (the first that answers of
    several replicas), with an API token (`token`) and, for https, the mesh root (`ca_file`). Phase 2 replaces
    this with the shared client of `mizzen.client`."""

    def __init__(self, addresses: str | Sequence[str], timeout: float = 10.0, *, token: str | None = None,
                 ca_file: str | None = None) -> None:
        self.addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        if not self.addresses:
            raise ValueError("no control-plane API address")
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.ca_file = ca_file
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def _session(self, addr: str) -> tuple[aiohttp.ClientSession, str]:
        s = self._sessions.get(addr)
        if s is None or s.closed:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            if addr.startswith("unix:"):
                s = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=addr[5:]), timeout=timeout,
                                          headers=self.headers)
            else:
                ssl_ctx: Any = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
                s = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx), timeout=timeout,
                                          headers=self.headers)
            self._sessions[addr] = s
        base = "http://mizzen" if addr.startswith("unix:") else addr.rstrip("/")
        if not base.startswith("http"):
            base = "http://" + base
        return s, base

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, JSON) from the first replica that answers; SourceError when none does."""
        errors = []
        for addr in self.addresses:
            s, base = self._session(addr)
            try:
                async with s.request(method, base + path, json=body) as r:
                    text = await r.text()
                    try:
                        return r.status, json.loads(text) if text else {}
                    except ValueError:
                        return r.status, {"message": text[:500]}
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                errors.append(f"{addr}: {e or type(e).__name__}")
        raise SourceError("control plane unreachable (" + "; ".join(errors) + ")")

    async def get(self, path: str) -> Any:
        status, data = await self.call("GET", path)
        if status != 200:
            raise SourceError(f"GET {path}: HTTP {status}: {data.get('message', data) if isinstance(data, dict) else data}")
        return data

    async def close(self) -> None:
        for s in self._sessions.values():
            await s.close()
        self._sessions.clear()


class ClientRest(RestClient):
    """The REST API through the shared client (`mizzen.client.aio.AsyncApiClient`: one failover policy, one
    error type), answering as RestClient does: (status, JSON) for any HTTP answer, SourceError when nothing
    answers. The control plane mounts the console with this one."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.addresses = [str(a) for a in client.addresses]

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        from ..client.errors import HttpError, Unavailable

        try:
            return 200, await self.client.request(method, path, body)
        except HttpError as e:
            return e.status, e.body
        except Unavailable as e:
            raise SourceError(f"control plane unreachable ({e})") from e

    async def close(self) -> None:
        await self.client.close()


class Windows(Protocol):
    async def __call__(self) -> list[dict[str, Any]]: ...


def http_windows(urls: Callable[[], Awaitable[list[str]]] | Sequence[str], timeout: float = 2.0) -> Windows:
    """Golden-metrics windows of sidecars from their agents' `GET /telemetry/window` (base URLs, or an async
    function returning them). A sidecar that does not answer is left out (logged)."""
    async def fetch() -> list[dict[str, Any]]:
        bases = await urls() if callable(urls) else list(urls)
        out: list[dict[str, Any]] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async def one(base: str) -> None:
                try:
                    async with s.get(base.rstrip("/") + "/telemetry/window") as r:
                        if r.status == 200:
                            out.append(await r.json())
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
                    log.warning("telemetry window of %s unavailable: %s", base, e)
            await asyncio.gather(*(one(b) for b in bases))
        return out
    return fetch


async def no_windows() -> list[dict[str, Any]]:
    return []


class Traces(Protocol):
    async def recent(self, limit: int = 50, service: str = "") -> list[dict[str, Any]]: ...
    async def trace(self, trace_id: str) -> dict[str, Any] | None: ...


class LocalTraces:
    """The control plane's own TraceStore (when the console is mounted in the same process)."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store

    async def recent(self, limit: int = 50, service: str = "") -> list[dict[str, Any]]:
        return self.store.recent(limit, service)

    async def trace(self, trace_id: str) -> dict[str, Any] | None:
        t = self.store.get(trace_id)
        return None if t is None else {"summary": t.summary(), "spans": self.store.waterfall(trace_id)}


class HttpTraces:
    """A trace receiver's JSON API (`mizzen.telemetry.otlp_server`): `GET /api/v1/traces[/{id}]`."""

    def __init__(self, base: str, timeout: float = 5.0) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout

    async def _get(self, path: str) -> tuple[int, Any]:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as s:
                async with s.get(self.base + path) as r:
                    return r.status, await r.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
            raise SourceError(f"trace store at {self.base} unreachable: {e or type(e).__name__}") from e

    async def recent(self, limit: int = 50, service: str = "") -> list[dict[str, Any]]:
        from urllib.parse import urlencode
        status, data = await self._get("/api/v1/traces?" + urlencode({"limit": limit, "service": service}))
        return data.get("items", []) if status == 200 else []

    async def trace(self, trace_id: str) -> dict[str, Any] | None:
        status, data = await self._get(f"/api/v1/traces/{trace_id}")
        return data if status == 200 else None


# tap(workload, namespace, path, method, max_events, max_seconds) -> async iterator of tap.event_of rows
TapSource = Callable[[str, str, str, str, int, float], AsyncIterator[dict[str, Any]]]
