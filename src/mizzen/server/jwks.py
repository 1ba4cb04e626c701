"""The control plane's JWKS fetcher: the keys of every RequestAuthentication `jwksUri`, fetched by the
control plane (never by Envoy) and inlined into the sidecars' jwt_authn config as snapshot data.

- Only the URIs the config names are fetched (`want()` after each config change starts and stops fetchers);
  over aiohttp on the event loop (never blocking it), bounded in time (the rule's `timeout`, else 5 s) and
  size (1 MiB), checked to be a JSON Web Key Set before it is used.
- Each URI is refreshed every `refresh_seconds` (20 min, Istio's default). A failed fetch is retried with
  back-off (1 s doubling to 60 s) and logged with what it means: the last good keys stay in use; without any,
  tokens of that issuer are rejected (401, Istio's behaviour) until a fetch succeeds.
- `current` is an immutable mapping replaced on every change (the snapshot compares it by identity); a change
  calls `on_change()` so the control plane rebuilds and pushes the proxies that use the URI.
- Good keys are kept in `STATE/jwks-cache.json`, so a restarted control plane renders the keys it had from its
  first snapshot (no window of 401s while it fetches again) and refreshes them in the background.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import tempfile
import time
from types import MappingProxyType
from typing import Callable, Mapping

import aiohttp

from ..api.authorization import check_jwks
from ..model.authz import Jwks

log = logging.getLogger("mizzen.jwks")

DEFAULT_TIMEOUT = 5.0
MAX_BYTES = 1 << 20
REFRESH_SECONDS = 20 * 60.0
RETRY_MIN, RETRY_MAX = 1.0, 60.0


class JwksError(Exception):
    pass


async def fetch_jwks(session: aiohttp.ClientSession, uri: str, timeout: float) -> str:
    """GET `uri` and return the JWKS text, or raise JwksError saying what went wrong."""
    try:
        async with session.get(uri, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=True) as resp:
            body = await resp.content.read(MAX_BYTES + 1)
            if resp.status != 200:
                raise JwksError(f"fetching {uri}: HTTP {resp.status}")
    except asyncio.TimeoutError:
        raise JwksError(f"fetching {uri}: no answer within {timeout:g}s") from None
    except aiohttp.ClientError as e:
        raise JwksError(f"fetching {uri}: {e}") from None
    if len(body) > MAX_BYTES:
        raise JwksError(f"fetching {uri}: the answer is larger than {MAX_BYTES} bytes")
    try:
        text = body.decode()
        check_jwks(text)
    except (UnicodeDecodeError, ValueError) as e:
        raise JwksError(f"fetching {uri}: not a JSON Web Key Set ({e})") from None
    return text


class JwksFetcher:
    def __init__(self, on_change: Callable[[], None], *, cache_path: str | None = None,
                 refresh_seconds: float = REFRESH_SECONDS, retry_min: float = RETRY_MIN, retry_max: float = RETRY_MAX):
        self.on_change = on_change
        self.cache_path = cache_path
        self.refresh_seconds = refresh_seconds
        self.retry_min, self.retry_max = retry_min, retry_max
        self.current: Mapping[str, Jwks] = MappingProxyType({})
        self._tasks: dict[str, asyncio.Task] = {}
        self._timeouts: dict[str, float] = {}
        self._session: aiohttp.ClientSession | None = None
        self._cached: dict[str, str] = self._read_cache()
        self.fetches = 0  # completed fetch attempts (tests, stats)

    # ---- what the config names ------------------------------------------------------------------
    def want(self, uris: Mapping[str, float]) -> None:
        """Fetch exactly these URIs (uri -> timeout seconds); start new fetchers, stop those no longer named.
        Keys of a URI still named are kept; a URI seen before (cache file) starts with its cached keys."""
        for uri in list(self._tasks):
            if uri not in uris:
                self._tasks.pop(uri).cancel()
        self._timeouts = dict(uris)
        changed = {u: v for u, v in self.current.items() if u in uris}
        for uri in uris:
            if uri not in changed and uri in self._cached:
                changed[uri] = Jwks(self._cached[uri])
        self._set(changed)
        for uri in uris:
            if uri not in self._tasks:
                self._tasks[uri] = asyncio.get_running_loop().create_task(self._run(uri), name=f"jwks {uri}")

    def preload(self, uris: Mapping[str, float]) -> None:
        """Before the first snapshot (no event loop needed): the cached keys of these URIs."""
        self._set({u: Jwks(self._cached[u]) for u in uris if u in self._cached})

    async def close(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        for t in self._tasks.values():
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- fetching -------------------------------------------------------------------------------
    async def _run(self, uri: str) -> None:
        delay = self.retry_min
        while True:
            try:
                if self._session is None:
                    self._session = aiohttp.ClientSession()
                text = await fetch_jwks(self._session, uri, self._timeouts.get(uri, DEFAULT_TIMEOUT))
            except JwksError as e:
                self.fetches += 1
                self._failed(uri, str(e), delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.retry_max)
                continue
            except Exception as e:  # a bug must not end the fetcher silently
                self.fetches += 1
                log.exception("jwksUri %s: unexpected error", uri)
                self._failed(uri, f"fetching {uri}: {e}", delay)
                await asyncio.sleep(self.retry_max)
                continue
            self.fetches += 1
            delay = self.retry_min
            old = self.current.get(uri)
            if old is None or old.keys != text or old.error:
                if old is None or old.keys != text:
                    log.info("jwksUri %s: fetched %d bytes of keys", uri, len(text))
                else:
                    log.info("jwksUri %s: fetched again after failures", uri)
                self._set({**self.current, uri: Jwks(text)})
                self._cached[uri] = text
                self._write_cache()
            await asyncio.sleep(self.refresh_seconds)

    def _failed(self, uri: str, error: str, retry: float) -> None:
        old = self.current.get(uri)
        keys = old.keys if old is not None else ""
        if keys:
            log.warning("%s; keeping the keys fetched before; retrying in about %.0fs", error, retry)
        else:
            log.warning("%s; tokens of this issuer are rejected (401) until a fetch succeeds; retrying in about %.0fs",
                        error, retry)
        if old is None or old.error != error:
            self._set({**self.current, uri: Jwks(keys, error)})

    def _set(self, new: Mapping[str, Jwks]) -> None:
        if dict(new) == dict(self.current):
            return
        self.current = MappingProxyType(dict(new))
        self.on_change()

    # ---- the cache file -------------------------------------------------------------------------
    def _read_cache(self) -> dict[str, str]:
        if not self.cache_path:
            return {}
        try:
            with open(self.cache_path) as f:
                data = json.load(f)
            out = {}
            for uri, text in (data.get("keys") or {}).items():
                check_jwks(text)
                out[str(uri)] = text
            return out
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError) as e:
            log.warning("ignoring the JWKS cache %s (%s); the keys are fetched again", self.cache_path, e)
            return {}

    def _write_cache(self) -> None:
        if not self.cache_path:
            return
        d = os.path.dirname(self.cache_path) or "."
        try:
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".jwks-cache.")
            with os.fdopen(fd, "w") as f:
                json.dump({"updatedAt": time.time(), "keys": self._cached}, f)
            os.replace(tmp, self.cache_path)
        except OSError as e:
            log.warning("could not write the JWKS cache %s: %s (keys are fetched again after a restart)",
                        self.cache_path, e)
