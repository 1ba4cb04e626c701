"""asyncio clients (aiohttp), for the agent: the control plane's REST API with the same failover policy and
errors as the sync client, and Envoy's admin API on its unix pipe."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Sequence
from urllib.parse import quote

import aiohttp

from ..model.types import Instance
from .address import Address
from .auth import SERVER_NAME, TokenArg, auth_headers, tls_context, token_source
from .errors import ClientError, HttpError, Unavailable
from .failover import Failover
from .http import decode, error_body, present

log = logging.getLogger("mizzen.client")

_NO_ANSWER = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def _session(address: Address, timeout: float, ssl_context: Any = None) -> aiohttp.ClientSession:
    if address.unix is not None:
        conn: aiohttp.BaseConnector = aiohttp.UnixConnector(path=address.unix, force_close=True)
    else:
        conn = aiohttp.TCPConnector(force_close=True, ssl=ssl_context if ssl_context is not None else True)
    return aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout))


class AsyncApiClient:
    """The control plane's REST API at one or several addresses (one per replica); see failover.py. `token`:
    what to authenticate with (a string, or a callable asked before each call — an agent's pod credential);
    `ca_file`: the mesh root, for `https://` addresses."""

    def __init__(self, addresses: str | Sequence[str], *, timeout: float = 3.0, token: TokenArg = None,
                 ca_file: str | None = None) -> None:
        addrs = [addresses] if isinstance(addresses, str) else list(addresses)
        self.addresses = [Address.parse(a) for a in addrs]
        self.failover: Failover[Address] = Failover(self.addresses)
        self.timeout = timeout
        self.token = token_source(token, None)
        self.ca_file = ca_file
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    def _sess(self, i: int) -> aiohttp.ClientSession:
        sess = self._sessions.get(i)
        if sess is None or sess.closed:
            addr = self.addresses[i]
            ctx = tls_context(self.ca_file) if addr.tls and self.ca_file else None
            sess = self._sessions[i] = _session(addr, self.timeout, ctx)
        return sess

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for sess in sessions:
            await sess.close()

    async def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        kw: dict[str, Any] = {} if body is None else {"json": body}
        kw["headers"] = auth_headers(self.token)
        order = Failover.attempts(self.failover.order(), lambda i: present(self.addresses[i]))
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        tried: list[str] = []
        last: BaseException | None = None
        waiting: HttpError | None = None  # a replica that has not loaded its store said so
        for k, i in enumerate(order):
            left = deadline - time.monotonic()
            if left <= 0 and k > 0:
                break
            kw["timeout"] = aiohttp.ClientTimeout(total=Failover.share(left, len(order) - k))
            try:
                if self.addresses[i].tls:
                    kw["server_hostname"] = SERVER_NAME
                async with self._sess(i).request(method, self.addresses[i].base_url + path, **kw) as resp:
                    status, raw = resp.status, await resp.read()
            except _NO_ANSWER as e:
                tried.append(str(self.addresses[i]))
                last = e
                continue
            out = decode(status, raw) if status >= 400 else _json_or_text(raw)
            if Failover.not_loaded(status, out):
                tried.append(str(self.addresses[i]))
                waiting = HttpError(status, error_body(out), f"{method} {path}")
                continue
            if self.failover.answered(i):
                log.info("control plane API: now using %s", self.addresses[i])
            if status >= 300:
                raise HttpError(status, error_body(out), f"{method} {path}")
            return out
        if waiting is not None:
            raise waiting
        why = (str(last) or type(last).__name__) if tried else "no socket file"
        raise Unavailable(f"{method} {path}: no control plane answered at "
                          f"{', '.join(map(str, self.addresses))} ({why})", tried) from last

    async def list_resources(self, kind: str | None = None, namespace: str | None = None, *,
                             timeout: float | None = None) -> list[dict[str, Any]]:
        q = "&".join(f"{k}={quote(v, safe='')}" for k, v in (("kind", kind), ("namespace", namespace)) if v)
        out = await self.request("GET", "/api/v1/resources" + (f"?{q}" if q else ""), timeout=timeout)
        return list(out["items"])

    async def put_instance(self, inst: Instance, *, timeout: float | None = None) -> None:
        await self.request("PUT", f"/api/v1/instances/{quote(inst.id, safe='')}", inst.to_dict(), timeout=timeout)

    async def delete_instance(self, instance_id: str, *, timeout: float | None = None) -> None:
        await self.request("DELETE", f"/api/v1/instances/{quote(instance_id, safe='')}", timeout=timeout)


def _json_or_text(raw: bytes) -> Any:
    text = raw.decode("utf-8", "replace")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


class AsyncEnvoyAdmin:
    """Envoy's admin API over its unix socket (`admin.address.pipe`). Use as an async context manager, or
    call `close()`. Unreachable: `Unavailable`; an error answer: `HttpError`."""

    def __init__(self, socket_path: str, *, timeout: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = _session(Address.of_socket(self.socket_path), self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "AsyncEnvoyAdmin":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(self, method: str, path: str, *, timeout: float | None = None) -> tuple[int, str]:
        """Raw call: (status, body text)."""
        kw: dict[str, Any] = {}
        if timeout is not None:
            kw["timeout"] = aiohttp.ClientTimeout(total=timeout)
        try:
            async with self._sess().request(method, "http://envoy" + path, **kw) as resp:
                return resp.status, await resp.text()
        except _NO_ANSWER as e:
            raise Unavailable(f"{method} {path}: {e or type(e).__name__}", [self.socket_path]) from e

    async def _checked(self, method: str, path: str) -> str:
        status, body = await self.request(method, path)
        if status != 200:
            raise HttpError(status, {"message": f"{method} {path}: HTTP {status}: {body[:200]}"}, f"{method} {path}")
        return body

    async def ready(self) -> tuple[bool, str]:
        """GET /ready: (True, "LIVE") when the server is live."""
        status, body = await self.request("GET", "/ready")
        state = body.strip()
        return status == 200 and state == "LIVE", state

    async def stats(self, filter: str | None = None) -> dict[str, int]:
        """Counters and gauges (histograms are skipped) whose name matches the `filter` regex."""
        q = "/stats?format=json" + ("&filter=" + quote(filter, safe="") if filter else "")
        out: dict[str, int] = {}
        for s in json.loads(await self._checked("GET", q)).get("stats", []):
            if "name" in s and isinstance(s.get("value"), int):
                out[s["name"]] = s["value"]
        return out

    async def healthcheck_fail(self) -> None:
        await self._checked("POST", "/healthcheck/fail")

    async def healthcheck_ok(self) -> None:
        await self._checked("POST", "/healthcheck/ok")

    async def drain_listeners(self, graceful: bool = True, inbound_only: bool = False) -> None:
        flags = [f for f, on in (("graceful", graceful), ("inboundonly", inbound_only)) if on]
        await self._checked("POST", "/drain_listeners" + ("?" + "&".join(flags) if flags else ""))

    async def config_dump(self, resource: str | None = None, include_eds: bool = False) -> dict[str, Any]:
        q = [f"resource={resource}"] if resource else []
        if include_eds:
            q.append("include_eds")
        return dict(json.loads(await self._checked("GET", "/config_dump" + ("?" + "&".join(q) if q else ""))))


class AsyncAgentControl:
    """A pod's agent control socket (`pods/<pod>/agent.sock`), asyncio: its telemetry (the golden-metrics
    window, top paths, the merged scrape) and tap. Unreachable: `Unavailable`; an error answer: `HttpError`."""

    def __init__(self, socket_path: str, *, timeout: float = 3.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _sess(self, timeout: float | None) -> aiohttp.ClientSession:
        conn = aiohttp.UnixConnector(path=self.socket_path, force_close=True)
        return aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout))

    async def _get(self, path: str) -> tuple[str, str]:
        try:
            async with self._sess(self.timeout) as s, s.get("http://agent" + path) as r:
                body = await r.text()
                if r.status != 200:
                    raise HttpError(r.status, error_body(decode(r.status, body.encode())), f"GET {path}")
                return body, r.headers.get("Content-Type", "")
        except _NO_ANSWER as e:
            raise Unavailable(f"agent {self.socket_path}: {e or type(e).__name__}", [self.socket_path]) from e

    async def window(self) -> dict[str, Any]:
        return dict(json.loads((await self._get("/telemetry/window"))[0]))

    async def top(self, n: int = 20) -> dict[str, Any]:
        return dict(json.loads((await self._get(f"/telemetry/top?n={int(n)}"))[0]))

    async def prometheus(self) -> tuple[str, str]:
        """(text, content type) of the merged scrape."""
        return await self._get("/stats/prometheus")

    async def tap(self, body: dict[str, Any], seconds: float):
        """POST /tap: yields the JSON rows the agent streams (the last one {"event": "end", ...})."""
        try:
            async with self._sess(seconds + 10) as s, s.post("http://agent/tap", json=body) as r:
                if r.status != 200:
                    raw = await r.read()
                    raise HttpError(r.status, error_body(decode(r.status, raw)), "POST /tap")
                while True:
                    line = await r.content.readline()
                    if not line:
                        return
                    if line.strip():
                        yield json.loads(line)
        except _NO_ANSWER as e:
            raise Unavailable(f"agent {self.socket_path}: {e or type(e).__name__}", [self.socket_path]) from e


__all__ = ["AsyncAgentControl", "AsyncApiClient", "AsyncEnvoyAdmin", "ClientError", "HttpError", "Unavailable"]
