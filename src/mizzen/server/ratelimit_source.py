"""Where the rate-limit service gets its limits: RateLimit resources from a file, or from the control plane's
REST API (`GET /api/v1/resources?kind=RateLimit`, polled, through `mizzen.client.aio.AsyncApiClient`: the
mesh's one failover policy across control-plane replicas). Both yield a `LimitTable`; the service swaps it
atomically.

The first load must succeed before the service answers (an RLS without its limits would let everything
through); afterwards a failed load keeps the last table and is logged.
"""
from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Awaitable, Callable, Sequence

from ..api import InvalidConfig, load_text
from ..client.aio import AsyncApiClient
from ..client.auth import FileToken, TokenArg
from ..client.errors import HttpError, Unavailable
from ..client.layout import StateLayout
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
    """The control plane's REST API over its unix socket(s); several sockets = replicas (mizzen.client's
    failover: in order, the one that answered last first)."""

    def __init__(self, sockets: Sequence[str], timeout: float = 2.0, *, token: TokenArg = None,
                 ca_file: str | None = None):
        """`sockets`: unix socket paths, or addresses (`https://host:port`: TLS checked against `ca_file`)."""
        if not sockets:
            raise ValueError("ApiSource needs at least one API socket")
        self.sockets = list(sockets)
        self.client = AsyncApiClient([s if ":" in s else f"unix:{s}" for s in self.sockets], timeout=timeout,
                                     token=token, ca_file=ca_file)
        self._last: str | None = None

    @classmethod
    def of_state_dir(cls, state_dir: str, timeout: float = 2.0) -> "ApiSource":
        """The control plane of a state dir, authenticated with its admin credential (STATE/admin.token)."""
        return cls(api_sockets(state_dir), timeout, token=FileToken(StateLayout(state_dir).admin_token))

    @classmethod
    def joined(cls, state_dir: str, addresses: Sequence[str], timeout: float = 2.0) -> "ApiSource":
        """Control planes elsewhere (a host of a multi-host mesh): their TLS API at `addresses`, checked against
        STATE/ca/root-cert.pem, with STATE/admin.token."""
        layout = StateLayout(state_dir)
        return cls([a if "://" in a else f"https://{a}" for a in addresses], timeout,
                   token=FileToken(layout.admin_token), ca_file=f"{layout.root}/ca/root-cert.pem")

    def describe(self) -> str:
        return "control plane " + ", ".join(self.sockets)

    async def load(self) -> LimitTable | None:
        try:
            items = await self.client.list_resources("RateLimit")
        except Unavailable as e:
            raise SourceError(f"no control-plane API answered (is the mesh up? `mizzen status`): {e}") from None
        except HttpError as e:
            raise SourceError(f"{e.request}: HTTP {e.status}: {e}") from None
        except (ValueError, KeyError, TypeError) as e:
            raise SourceError(f"the control plane's answer is not a resource list: {e}") from None
        finally:
            await self.client.close()  # polled every second or so: no session is kept between loads
        digest = json.dumps(items, sort_keys=True)
        if digest == self._last:
            return None
        try:
            table = build_table([from_dict(d) for d in items])
        except InvalidConfig as e:
            raise SourceError(f"the control plane returned a RateLimit this version cannot read: {e}") from None
        self._last = digest
        return table


def api_sockets(state_dir: str) -> list[str]:
    """The REST sockets of a state dir's control-plane replicas (client.layout; absent ones are skipped)."""
    return StateLayout(state_dir).api_sockets()


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
