"""Registering this replica with the control plane's REST API (`PUT/DELETE /api/v1/instances/<id>`), and
waiting for the app to listen before doing so."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Sequence

import aiohttp

from mizzen.model.types import Instance

from .config import AgentConfig, parse_address

log = logging.getLogger("mizzen.agent")


def instance_of(cfg: AgentConfig, *, healthy: bool = True) -> Instance:
    return Instance(
        id=cfg.instance_id, namespace=cfg.namespace, workload=cfg.workload, address=cfg.ip, ports=cfg.ports,
        labels=cfg.labels, healthy=healthy, sidecar=True, locality=cfg.locality,
        service_account=cfg.service_account, source="agent", port_map=cfg.register_port_map,
    )


class ApiError(RuntimeError):
    pass


class ApiClient:
    """The control plane's REST API, over a unix socket (`unix:/path`) or TCP (`host:port`).

    Given several addresses (one per control-plane replica), a call that cannot reach one (connection
    refused, socket gone, timeout) is tried on the next; the one that answered is tried first next time.
    An HTTP error answer is final (every replica shares the store: another would say the same)."""

    def __init__(self, address: str | Sequence[str], *, timeout: float = 3.0) -> None:
        addrs = [address] if isinstance(address, str) else list(address)
        if not addrs:
            raise ValueError("ApiClient: no address")
        self._targets: list[tuple[dict[str, Any], str]] = []
        for a in addrs:
            host, port = parse_address(a, "apiAddress")
            if host == "unix":
                self._targets.append(({"path": port}, "http://mizzen-api"))
            else:
                self._targets.append(({}, f"http://{host if ':' not in host else '[' + host + ']'}:{port}"))
        self.addresses = addrs
        self.timeout = timeout
        self._preferred = 0
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    def _sess(self, i: int = 0) -> aiohttp.ClientSession:
        sess = self._sessions.get(i)
        if sess is None or sess.closed:
            args, _ = self._targets[i]
            if "path" in args:
                conn: aiohttp.BaseConnector = aiohttp.UnixConnector(force_close=True, **args)
            else:
                conn = aiohttp.TCPConnector(force_close=True)
            sess = self._sessions[i] = aiohttp.ClientSession(connector=conn,
                                                             timeout=aiohttp.ClientTimeout(total=self.timeout))
        return sess

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for sess in sessions:
            await sess.close()

    async def call(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        kw: dict[str, Any] = {}
        if body is not None:
            kw["json"] = body
        n = len(self._targets)
        # a hung replica must not eat the whole budget: each attempt gets its share of what is left
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        last: BaseException | None = None
        for k in range(n):
            i = (self._preferred + k) % n
            left = deadline - time.monotonic()
            if left <= 0 and k > 0:
                break
            kw["timeout"] = aiohttp.ClientTimeout(total=max(left / (n - k), 0.05))
            try:
                async with self._sess(i).request(method, self._targets[i][1] + path, **kw) as resp:
                    text = await resp.text()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                last = e
                continue
            if i != self._preferred:
                log.info("control plane API: now using %s", self.addresses[i])
                self._preferred = i
            if resp.status >= 300:
                raise ApiError(f"{method} {path}: HTTP {resp.status}: {text[:200]}")
            try:
                return json.loads(text) if text else None
            except ValueError:
                return text
        raise ApiError(f"{method} {path}: {last or type(last).__name__}") from last

    async def put_instance(self, inst: Instance, *, timeout: float | None = None) -> None:
        await self.call("PUT", f"/api/v1/instances/{inst.id}", inst.to_dict(), timeout=timeout)

    async def delete_instance(self, instance_id: str, *, timeout: float | None = None) -> None:
        await self.call("DELETE", f"/api/v1/instances/{instance_id}", timeout=timeout)


async def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    w.close()
    try:
        await w.wait_closed()
    except OSError:
        pass
    return True


async def wait_for_ports(host: str, ports: tuple[int, ...], *, interval: float = 0.2,
                         log_every: float = 10.0) -> None:
    """Return once every port accepts a TCP connection. Keeps trying (each try bounded); logs what it is
    waiting for every `log_every` seconds. Cancel to stop."""
    pending = set(ports)
    start = last_log = time.monotonic()
    while pending:
        for p in sorted(pending):
            if await port_open(host, p):
                pending.discard(p)
        if not pending:
            break
        now = time.monotonic()
        if now - last_log >= log_every:
            last_log = now
            log.info("still waiting for the app on %s port(s) %s (%.0fs)", host,
                     ",".join(map(str, sorted(pending))), now - start)
        await asyncio.sleep(interval)


def _listening(port: int) -> bool | None:
    """Is a TCP socket of this network namespace listening on port? None: /proc/net cannot tell."""
    seen_any = False
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/net/{name}") as f:
                next(f, None)
                seen_any = True
                for line in f:
                    parts = line.split()
                    if len(parts) > 3 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except (OSError, ValueError):
            continue
    return False if seen_any else None


def app_listening(host: str, ports: tuple[int, ...]) -> bool:
    """Every app port has a listening socket (read from /proc/net: no connection is made to the app)."""
    import socket

    for p in ports:
        found = _listening(p)
        if found is None:  # no /proc/net: try a connection
            try:
                with socket.create_connection((host, p), timeout=0.5):
                    pass
            except OSError:
                return False
        elif not found:
            return False
    return True
