"""`mizzen ratelimit --engine native|auto`: the native in-memory rate-limit service (native/rls, C++, built by
`make native` into build/mizzen-rls), supervised by this Python process.

This process keeps what is not on the hot path: it loads the limits (file or control plane, as for the Python
engine), compiles them into a `LimitTable`, writes it as JSON (`table_json`, written atomically: tmp + rename)
and sends the binary SIGHUP on each change; it restarts the binary when it dies (logging why) and serves the
admin endpoint (`/healthz`, `/stats` — asked from the binary over gRPC, `mizzen.rls.v1.Admin/Stats` —,
`/stats/prometheus`, `/limits`). The binary serves ShouldRateLimit on the gRPC address(es).

The native engine ports algorithms.py, engine.py (plan, respond: headers, Retry-After, shadow, delay header),
memory.py and stats.py for the in-memory backend. What it does not support is refused, never served
differently: priority classes, Redis, `--delay-mode hold`, the Python-only `--codec`/`--server` variants.
`--engine auto` then uses the Python engine (and says why); `--engine native` stops with the reason, or, for a
reloaded table, keeps serving the last table it could and logs why the new one was refused.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

from ..nativebin import find_native
from ..ratelimit import engine
from ..ratelimit.stats import LIMIT_COUNTERS, Stats
from ..ratelimit.table import CompiledLimit, LimitTable, entry_key, limits_body
from ..ratelimit.wire import current_limit_fields

log = logging.getLogger("mizzen.ratelimit.native")

BINARY_ENV = "MIZZEN_RLS_BIN"
STATS_METHOD = "/mizzen.rls.v1.Admin/Stats"
RESTART_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)


def binary() -> tuple[str | None, str]:
    """The native binary, or None and why it is not there."""
    return find_native("mizzen-rls", BINARY_ENV, "the native rate-limit service")


def unsupported_limits(table: LimitTable) -> list[str]:
    """Why the native engine cannot serve `table` (empty: it can)."""
    out = []
    for lim in table.limits.values():
        if lim.priority is not None:
            out.append(f"{lim.id}: priority classes")
        if lim.state_kind not in ("fixed_window", "sliding_window", "sliding_log", "token_bucket", "leaky_bucket",
                                  "leaky_bucket_queue", "gcra"):
            out.append(f"{lim.id}: algorithm {lim.algorithm}")
    return out


def unsupported_settings(settings: Any) -> list[str]:
    out = []
    if settings.redis_url:
        out.append("Redis counters (--redis)")
    if settings.delay_mode != "header":
        out.append(f"--delay-mode {settings.delay_mode}")
    if settings.codec != "wire" or settings.server != "aio":
        out.append("the Python server variants (--codec/--server)")
    return out


def _limit_json(lim: CompiledLimit) -> dict[str, Any]:
    rpu, unit = current_limit_fields(lim)
    key = []
    for form, arg in lim.key:
        ek = entry_key(form, arg)
        key.append({"constant": arg} if ek is None else {"entry": ek})
    out: dict[str, Any] = {
        "id": lim.id, "algorithm": lim.algorithm, "state_kind": lim.state_kind, "limit": lim.rate.limit,
        "period": lim.rate.period, "capacity": lim.rate.capacity, "quota": lim.quota, "shadow": lim.shadow,
        "key": key, "current_limit_rpu": rpu, "current_limit_unit": unit,
        "window_seconds": engine.window_seconds(lim)}
    if lim.max_delay is not None:
        out["max_delay"] = lim.max_delay
    if lim.body is not None:
        out["body"] = lim.body
    return out


def table_json(table: LimitTable) -> dict[str, Any]:
    """The compiled table as the native binary reads it (native/rls/mizzen.proto, message Table)."""
    return {"version": table.version, "limits": [_limit_json(lim) for lim in table.limits.values()]}


def write_table(path: str, table: LimitTable) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(table_json(table), f)
    os.replace(tmp, path)


def _decode_stats_reply(data: bytes) -> dict[str, Any]:
    """mizzen.rls.v1.StatsReply {string json = 1} (one length-delimited field)."""
    i, n, shift = 1, 0, 0
    if not data:
        return {}
    assert data[0] == 0x0A, data[:4]
    while True:
        b = data[i]
        n |= (b & 0x7F) << shift
        i += 1
        shift += 7
        if not b & 0x80:
            break
    return json.loads(data[i:i + n])


DIR_PREFIX = "mizzen-rls-"


def _remove_stale_dirs() -> None:
    """Table directories of supervisors that died without cleaning up (SIGKILL): named after their pid."""
    import glob

    for d in glob.glob(os.path.join(tempfile.gettempdir(), f"{DIR_PREFIX}*-*")):
        try:
            pid = int(os.path.basename(d)[len(DIR_PREFIX):].split("-", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (ValueError, PermissionError):
            pass


class NativeRls:
    """One mizzen-rls child: started, reloaded (SIGHUP), restarted when it dies, stopped."""

    def __init__(self, exe: str, listens: list[str], threads: int = 1):
        self.exe = exe
        self.listens = listens
        self.threads = threads
        _remove_stale_dirs()
        self.dir = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-")
        self.table_path = os.path.join(self.dir, "table.json")
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._channel: Any = None

    @property
    def up(self) -> bool:
        """Running and listening."""
        return self.proc is not None and self.proc.returncode is None and self._ready.is_set()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def describe(self) -> str:
        return "memory (native)"

    async def start(self, table: LimitTable) -> None:
        write_table(self.table_path, table)
        await self._spawn()
        self._tasks.append(asyncio.create_task(self._supervise()))

    async def _spawn(self) -> None:
        self._ready.clear()
        argv = [self.exe, "--table", self.table_path, "--threads", str(self.threads), "--die-with-parent"]
        for addr in self.listens:
            argv += ["--listen", addr]
        self.proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                         stdout=asyncio.subprocess.DEVNULL,
                                                         stderr=asyncio.subprocess.PIPE)
        self._tasks.append(asyncio.create_task(self._read_log(self.proc)))
        waiter = asyncio.create_task(self._ready.wait())
        dead = asyncio.create_task(self.proc.wait())
        try:
            done, _ = await asyncio.wait({waiter, dead}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            dead.cancel()
        if not self._ready.is_set():
            code = self.proc.returncode
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            raise RuntimeError(f"the native rate-limit service did not start ({self.exe}, exit code {code}); "
                               "see the log lines above")

    async def _read_log(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line.startswith("mizzen-rls: "):
                line = line[len("mizzen-rls: "):]
            if "rate-limit service on" in line:
                self._ready.set()
            (log.warning if "failed" in line or "cannot" in line else log.info)("%s", line)

    async def _supervise(self) -> None:
        while not self._stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping:
                return
            why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            delay = RESTART_BACKOFF[min(self.restarts, len(RESTART_BACKOFF) - 1)]
            self.restarts += 1
            log.error("the native rate-limit service exited (%s); restarting it in %.1f s (restart %d; counters "
                      "start afresh)", why, delay, self.restarts)
            await asyncio.sleep(delay)
            try:
                await self._spawn()
            except RuntimeError as e:
                log.error("%s", e)

    def apply(self, table: LimitTable) -> None:
        write_table(self.table_path, table)
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGHUP)

    async def stats(self) -> dict[str, Any]:
        import grpc

        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.listens[0])
        call = self._channel.unary_unary(STATS_METHOD)
        return _decode_stats_reply(await call(b"", timeout=5))

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._channel is not None:
            await self._channel.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _stats_of(data: dict[str, Any]) -> Stats:
    s = Stats()
    s.service.update(data.get("service", {}))
    for lid, counters in data.get("limits", {}).items():
        s.limits[lid].update({k: counters.get(k, 0) for k in LIMIT_COUNTERS})
    return s


def admin_app(rls: NativeRls, table_of: Any, refused_of: Any) -> Any:
    from aiohttp import web

    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        up = rls.up
        body = {"ready": up, "backend": rls.describe(), "backendUp": up, "limits": len(table_of()),
                "engine": "native", "pid": rls.pid, "restarts": rls.restarts}
        if refused_of():
            body["refused"] = refused_of()
        return web.json_response(body, status=200 if up else 503)

    async def stats(_: web.Request) -> web.Response:
        try:
            return web.json_response(_stats_of(await rls.stats()).to_dict())
        except Exception as e:  # the binary is restarting: say so rather than fail obscurely
            return web.json_response({"error": f"the native rate-limit service did not answer: {e}"}, status=503)

    async def prom(_: web.Request) -> web.Response:
        try:
            data = await rls.stats()
        except Exception as e:
            return web.Response(text=f"# the native rate-limit service did not answer: {e}\n", status=503)
        return web.Response(text=_stats_of(data).prometheus(), content_type="text/plain")

    async def limits(_: web.Request) -> web.Response:
        return web.json_response(limits_body(table_of()))

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/stats", stats)
    app.router.add_get("/stats/prometheus", prom)
    app.router.add_get("/limits", limits)
    return app


def _listens(settings: Any) -> list[str]:
    out = []
    if settings.tcp:
        out.append(f"{settings.tcp[0]}:{settings.tcp[1]}")
    if settings.unix_path:
        from ..unixpath import UNIX_PATH_MAX

        if len(os.fsencode(settings.unix_path)) > UNIX_PATH_MAX:
            raise RuntimeError(f"unix socket path too long for gRPC: {settings.unix_path}; give a shorter --socket")
        os.makedirs(os.path.dirname(settings.unix_path) or ".", exist_ok=True)
        out.append(f"unix:{settings.unix_path}")
    return out


def _python_argv() -> list[str]:
    """This process's command line with `--engine python` (the last --engine given wins)."""
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    return [sys.executable, *argv[1:], "--engine", "python"]


async def run(settings: Any) -> bool:
    """Serve with the native engine; False (before serving anything): use the Python engine instead."""
    from . import ratelimit_source
    from .rest import serve

    auto = settings.engine == "auto"
    exe, why = binary()
    reasons = unsupported_settings(settings)
    if exe is None or reasons:
        msg = why if exe is None else "the native engine does not support " + ", ".join(reasons)
        if auto:
            log.info("engine auto: using the Python engine (%s)", msg)
            return False
        raise SystemExit(f"mizzen ratelimit --engine native: {msg}")

    # SIGTERM/SIGINT from here on: whatever is started is stopped and cleaned up
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def python_instead() -> bool:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        return False

    log.info("loading limits from %s", settings.source.describe())
    loading = asyncio.create_task(ratelimit_source.first_load(settings.source))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not loading.done():
        loading.cancel()
        log.info("stopped before the limits were loaded")
        return True
    table = loading.result()
    bad = unsupported_limits(table)
    if bad:
        msg = "the native engine does not support " + "; ".join(bad)
        if auto:
            log.info("engine auto: using the Python engine (%s)", msg)
            settings.first_table = table
            return python_instead()
        raise SystemExit(f"mizzen ratelimit --engine native: {msg} (use --engine python or auto)")

    rls = NativeRls(exe, _listens(settings), settings.native_threads)
    state: dict[str, Any] = {"table": table, "refused": None}
    admin = None
    switch = False
    try:
        try:
            await rls.start(table)
        except RuntimeError as e:
            if not auto:
                raise SystemExit(f"mizzen ratelimit --engine native: {e}") from None
            log.warning("engine auto: using the Python engine (%s)", e)
            settings.first_table = table
            return python_instead()
        if settings.admin_unix or settings.admin_tcp:
            admin = await serve(admin_app(rls, lambda: state["table"], lambda: state["refused"]),
                                settings.admin_unix, settings.admin_tcp)
        log.info("serving %d global limit(s) (version %s): %s", len(table), table.version,
                 ", ".join(table.limits) or "none")

        def apply(new: LimitTable) -> None:
            nonlocal switch
            bad = unsupported_limits(new)
            if bad:
                msg = "the native engine does not support " + "; ".join(bad)
                if auto:
                    log.warning("%s: restarting this service with the Python engine (counters start afresh)", msg)
                    switch = True
                    stop.set()
                    return
                state["refused"] = msg
                log.error("%s: keeping the last limits (version %s); run with --engine python or auto to serve "
                          "them", msg, state["table"].version)
                return
            state["table"], state["refused"] = new, None
            log.info("serving %d global limit(s) (version %s): %s", len(new), new.version,
                     ", ".join(new.limits) or "none")
            rls.apply(new)

        watcher = asyncio.create_task(ratelimit_source.watch(settings.source, apply, settings.poll_interval))
        try:
            await stop.wait()
        finally:
            watcher.cancel()
    finally:
        await rls.stop()
        if admin is not None:
            await admin.cleanup()
        log.info("native rate-limit service stopped")
    if switch:
        argv = _python_argv()
        log.info("exec %s", " ".join(argv))
        os.execv(argv[0], argv)
    return True
