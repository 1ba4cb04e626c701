"""Where the rate-limit service gets its limits: RateLimit resources from a file, or from the control plane's
REST API (`GET /api/v1/resources?kind=RateLimit`, polled). Both yield a `LimitTable`; the service swaps it
atomically. This is the one module that talks to the control plane, so it can move onto `mizzen/client/`
when that package lands.

The first load must succeed before the service answers (an RLS without its limits would let everything
through); afterwards a failed load keeps the last table and is logged.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Awaitable, Callable, Sequence

import aiohttp

from ..api import InvalidConfig, load_text
from ..api.load import from_dict
from ..ratelimit.table import LimitTable, build_table

log = logging.getLogger("mizzen.ratelimit.source")


class SourceError(Exception):
    pass


class FileSource:
    """A YAML file of RateLimit resources (other kinds are ignored); re-read when it changes."""

    def __init__(self, path: str):
        self.path = Path(path)
        self._stamp: tuple[float, int] | None = None

    def describe(self) -> str:
        return f"file {self.path}"

    async def load(self) -> LimitTable | None:
        """The table, or None when the file has not changed since the last load."""
        try:
            st = self.path.stat()
        except OSError as e:
            raise SourceError(f"cannot read {self.path}: {e.strerror}") from None
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._stamp:
            return None
        try:
            res = load_text(self.path.read_text(encoding="utf-8"), file=str(self.path))
        except InvalidConfig as e:
            raise SourceError(f"invalid limits in {self.path}:\n{e}") from None
        except OSError as e:
            raise SourceError(f"cannot read {self.path}: {e}") from None
        self._stamp = stamp
        return build_table(res.resources)


class ApiSource:
    """The control plane's REST API over its unix socket(s); several sockets = replicas tried in order."""

    def __init__(self, sockets: Sequence[str], timeout: float = 2.0):
        if not sockets:
            raise ValueError("ApiSource needs at least one API socket")
        self.sockets = list(sockets)
        self.timeout = timeout
        self._last: str | None = None

    def describe(self) -> str:
        return "control plane " + ", ".join(self.sockets)

    async def _get(self, sock: str) -> list[dict]:
        conn = aiohttp.UnixConnector(path=sock)
        async with aiohttp.ClientSession(connector=conn,
                                         timeout=aiohttp.ClientTimeout(total=self.timeout)) as s:
            async with s.get("http://localhost/api/v1/resources", params={"kind": "RateLimit"}) as r:
                if r.status != 200:
                    raise SourceError(f"{sock}: HTTP {r.status}: {(await r.text())[:200]}")
                return (await r.json())["items"]

    async def load(self) -> LimitTable | None:
        errors = []
        for sock in self.sockets:
            try:
                items = await self._get(sock)
            except (OSError, aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError) as e:
                errors.append(f"{sock}: {type(e).__name__}: {e}")
                continue
            digest = json.dumps(items, sort_keys=True)
            if digest == self._last:
                return None
            try:
                table = build_table([from_dict(d) for d in items])
            except InvalidConfig as e:
                raise SourceError(f"the control plane returned a RateLimit this version cannot read: {e}") from None
            self._last = digest
            return table
        raise SourceError("no control-plane API answered (is the mesh up? `mizzen status`): " + "; ".join(errors))


def api_sockets(state_dir: str) -> list[str]:
    """The REST sockets of a state dir's control-plane replicas that exist (api.sock, api-1.sock, ...)."""
    names = ["api.sock"] + [f"api-{i}.sock" for i in range(1, 8)]
    found = [os.path.join(state_dir, n) for n in names if os.path.exists(os.path.join(state_dir, n))]
    return found or [os.path.join(state_dir, "api.sock")]


async def first_load(source: FileSource | ApiSource, retry: float = 0.5) -> LimitTable:
    """Load until it works (logging why not, once per distinct reason)."""
    last = None
    while True:
        try:
            table = await source.load()
            if table is not None:
                return table
        except SourceError as e:
            if str(e) != last:
                log.warning("waiting for limits from %s: %s", source.describe(), e)
                last = str(e)
        await asyncio.sleep(retry)


async def watch(source: FileSource | ApiSource, apply: Callable[[LimitTable], Awaitable[None] | None],
                interval: float) -> None:
    """Poll forever; call `apply` with each changed table. Errors keep the last table."""
    failing = False
    while True:
        await asyncio.sleep(interval)
        try:
            table = await source.load()
        except SourceError as e:
            if not failing:
                log.warning("cannot refresh limits from %s (keeping the last ones): %s", source.describe(), e)
            failing = True
            continue
        if failing:
            log.info("limits from %s readable again", source.describe())
            failing = False
        if table is not None:
            out = apply(table)
            if asyncio.iscoroutine(out):
                await out
