"""The agent's main loop: bootstrap, Envoy supervision, readiness, registration, drain.

States written to `<workDir>/agent.state` (the runner starts the app once it reads "ready"):
    starting -> ready -> draining -> stopped      (ready -> starting again while a dead Envoy restarts)
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import tempfile
import time
from typing import Any, Awaitable, Callable

from .bootstrap import render_bootstrap
from .config import AgentConfig
from .envoy import AdminClient, AdminError, EnvoyOptions, EnvoyProcess, find_envoy
from .health import HealthServer, Readiness, envoy_readiness
from .registration import ApiClient, ApiError, instance_of, wait_for_ports

log = logging.getLogger("mizzen.agent")

STATES = ("starting", "ready", "draining", "stopped")
_ACTIVE_RQ_FILTER = r"^http\..*\.downstream_rq_active$"
_STABLE_RUN_SECONDS = 30.0  # an Envoy that ran this long resets the restart back-off


def atomic_write(path: str, data: str, mode: int = 0o644) -> None:
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_state(path: str) -> dict[str, Any] | None:
    """agent.state as a dict, or None if absent/unreadable (it is replaced atomically, never torn)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Agent:
    """One sidecar agent. `await Agent(cfg).run()` returns the exit code; SIGTERM/SIGINT (or `request_stop`)
    drains. Must run on the thread that owns the event loop (Envoy's death signal is tied to it)."""

    def __init__(self, cfg: AgentConfig, *, envoy_binary: str | None = None) -> None:
        self.cfg = cfg
        binary = envoy_binary or find_envoy(cfg.envoy_binary)
        self.envoy = EnvoyProcess(EnvoyOptions(
            binary=binary, config_path=cfg.bootstrap_path, work_dir=cfg.work_dir, log_path=cfg.envoy_log_path,
            base_id_path=cfg.base_id_path, concurrency=cfg.concurrency, log_level=cfg.log_level,
            drain_seconds=cfg.drain_seconds, parent_shutdown_seconds=cfg.parent_shutdown,
            uid=cfg.envoy_uid, gid=cfg.envoy_gid,
        ))
        self.admin = AdminClient(cfg.admin_socket)
        self.api = ApiClient(cfg.api_address) if cfg.api_address else None
        self.health = HealthServer(cfg.health_host, cfg.health_port, self.status)
        self.state = "starting"
        self.since = time.time()
        self.readiness = Readiness(False, "starting")
        self.registered = False
        self.restarts = 0
        self._written: tuple[Any, ...] | None = None
        self._stop: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None
        self._ever_ready: asyncio.Event | None = None
        self._reg_lock: asyncio.Lock | None = None
        self._stopping = False
        self._signal_count = 0

    # ------------------------------------------------------------------ state
    def status(self) -> Readiness:
        if self.state in ("draining", "stopped"):
            return Readiness(False, self.state)
        return self.readiness

    def _set_state(self, state: str) -> None:
        assert state in STATES
        if state != self.state:
            log.info("agent state %s -> %s", self.state, state)
            self.state = state
            self.since = time.time()
        self._write_state()

    def _write_state(self) -> None:
        key = (self.state, self.envoy.pid, self.envoy.epoch, self.health.bound_port, self.registered)
        if key == self._written:
            return
        doc = {
            "state": self.state, "agentPid": os.getpid(), "envoyPid": self.envoy.pid if self.envoy.running else None,
            "epoch": self.envoy.epoch, "since": round(self.since, 3), "restarts": self.restarts,
            "healthPort": self.health.bound_port, "adminSocket": self.cfg.admin_socket,
            "registered": self.registered,
        }
        try:
            atomic_write(self.cfg.state_path, json.dumps(doc) + "\n")
            self._written = key
        except OSError as e:
            log.error("cannot write %s: %s", self.cfg.state_path, e)

    def request_stop(self) -> None:
        """Begin the drain (as SIGTERM does); a second call cuts the waits short."""
        self._signal_count += 1
        if self._stop is None or self._hurry is None:
            return
        if self._stop.is_set():
            log.warning("second stop request: cutting the drain short")
            self._hurry.set()
        self._stop.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("received %s", sig.name)
        self.request_stop()

    # ------------------------------------------------------------------ main
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop, self._hurry = asyncio.Event(), asyncio.Event()
        self._ever_ready, self._reg_lock = asyncio.Event(), asyncio.Lock()
        if self._signal_count:
            self._stop.set()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (RuntimeError, ValueError):  # not the main thread
                pass
        tasks: list[asyncio.Task[Any]] = []
        code = 0
        try:
            os.makedirs(self.cfg.work_dir, exist_ok=True)
            atomic_write(self.cfg.bootstrap_path, render_bootstrap(self.cfg))
            self.envoy.prepare_dirs([os.path.dirname(self.cfg.admin_socket)])
            self._write_state()
            await self.health.start()
            self._write_state()
            log.info("node %s: xds %s (%s), admin %s", self.cfg.node_id, self.cfg.xds_address,
                     self.cfg.xds_protocol, self.cfg.admin_socket)
            await self.envoy.start(0)
            self._write_state()
            tasks = [
                asyncio.create_task(self._guard(self._supervise), name="supervise"),
                asyncio.create_task(self._guard(self._monitor), name="readiness"),
                asyncio.create_task(self._guard(self._register_loop), name="register"),
            ]
            await self._stop.wait()
            await self._drain(tasks)
        except Exception:
            log.exception("agent failed")
            code = 1
        finally:
            self._stopping = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                if self.envoy.running:
                    await self.envoy.stop(self.cfg.stop_timeout_seconds)
            except BaseException:
                self.envoy.kill_now()
                raise
            finally:
                self._set_state("stopped")
                for sig in installed:
                    loop.remove_signal_handler(sig)
                await self._close()
        log.info("agent stopped (exit %d)", code)
        return code

    async def _close(self) -> None:
        for c in (self.health.stop(), self.admin.close(), self.api.close() if self.api else None):
            if c is not None:
                try:
                    await c
                except Exception:  # noqa: BLE001
                    log.debug("close failed", exc_info=True)

    async def _guard(self, fn: Callable[[], Awaitable[None]]) -> None:
        """A background task that fails is a bug: log it and stop the agent (draining as usual)."""
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("agent task %s failed; stopping", getattr(fn, "__name__", fn))
            assert self._stop is not None
            self._stop.set()

    # ------------------------------------------------------------------ envoy supervision
    async def _supervise(self) -> None:
        backoff = self.cfg.restart_backoff_seconds
        while not self._stopping:
            rc = await self.envoy.wait()
            if self._stopping:
                return
            ran = time.monotonic() - self.envoy.started_at
            if ran >= _STABLE_RUN_SECONDS:
                backoff = self.cfg.restart_backoff_seconds
            log.error("envoy pid %s exited (%s) after %.1fs; restarting in %.2fs (see %s)", self.envoy.pid,
                      _describe_rc(rc), ran, backoff, self.cfg.envoy_log_path)
            self.readiness = Readiness(False, f"envoy exited ({_describe_rc(rc)}), restarting")
            self._set_state("starting" if self.state == "ready" else self.state)
            if await self._sleep(backoff, stop_too=True):
                return
            backoff = min(backoff * 2, self.cfg.restart_backoff_max_seconds)
            if self._stopping:
                return
            try:
                await self.envoy.start(0)
                self.restarts += 1
            except OSError as e:
                log.error("envoy failed to start: %s", e)
            self._write_state()

    async def _monitor(self) -> None:
        """Poll Envoy's admin: readiness for /healthz/ready and the starting -> ready transition."""
        while not self._stopping:
            if self.envoy.running:
                r = await envoy_readiness(self.admin)
            else:
                r = Readiness(False, "envoy not running")
            if self._stopping:
                return
            if r.ready != self.readiness.ready:
                log.info("envoy %s: %s", "ready" if r.ready else "not ready", r.reason)
            self.readiness = r
            if r.ready and self.state == "starting":
                self._set_state("ready")
                assert self._ever_ready is not None
                self._ever_ready.set()
            await asyncio.sleep(1.0 if r.ready else 0.1)

    # ------------------------------------------------------------------ registration
    async def _register_loop(self) -> None:
        cfg = self.cfg
        if not cfg.register:
            return
        if self.api is None:
            log.warning("register is on but no apiAddress is configured: not registering")
            return
        assert self._ever_ready is not None and self._reg_lock is not None
        await self._ever_ready.wait()
        if cfg.app_ports:
            log.info("waiting for the app on %s port(s) %s", cfg.app_host, ",".join(map(str, cfg.app_ports)))
            await wait_for_ports(cfg.app_host, cfg.app_ports, log_every=cfg.app_wait_log_seconds)
            log.info("app is listening")
        failing = False
        while not self._stopping:
            async with self._reg_lock:
                if self._stopping:
                    return
                inst = instance_of(cfg, healthy=self.readiness.ready)
                try:
                    await self.api.put_instance(inst, timeout=min(3.0, cfg.heartbeat_seconds))
                    if not self.registered or failing:
                        log.info("registered %s (%s %s)", inst.id, inst.address, list(inst.ports))
                    self.registered, failing = True, False
                    self._write_state()
                except ApiError as e:
                    if not failing:
                        log.warning("registration failed (will retry): %s", e)
                    failing = True
            await asyncio.sleep(min(1.0, cfg.heartbeat_seconds) if failing else cfg.heartbeat_seconds)

    # ------------------------------------------------------------------ drain
    async def _sleep(self, seconds: float, *, stop_too: bool = False) -> bool:
        """Sleep; returns True early if told to hurry (or, with stop_too, to stop)."""
        assert self._hurry is not None and self._stop is not None
        events = [self._hurry] + ([self._stop] if stop_too else [])
        if any(e.is_set() for e in events):
            return True
        if seconds <= 0:
            return False
        waits = [asyncio.create_task(e.wait()) for e in events]
        try:
            done, _ = await asyncio.wait(waits, timeout=seconds)
            return bool(done)
        finally:
            for w in waits:
                w.cancel()

    async def _drain(self, tasks: list[asyncio.Task[Any]]) -> None:
        cfg = self.cfg
        assert self._reg_lock is not None and self._hurry is not None
        t0 = time.monotonic()
        deadline = t0 + cfg.drain_seconds

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        def step(msg: str, *a: Any) -> None:
            log.info("drain +%.2fs: " + msg, time.monotonic() - t0, *a)

        step("begin (drainSeconds=%s); readiness now 503", cfg.drain_seconds)
        self._stopping = True
        self._set_state("draining")
        for t in tasks:  # supervise/readiness/heartbeat: no restarts, no re-registration from here on
            if t.get_name() != "register":
                t.cancel()
        # Withdraw from callers first: wait for an in-flight PUT (so it cannot land after the DELETE).
        try:
            await asyncio.wait_for(self._reg_lock.acquire(), timeout=max(0.5, min(3.0, left())))
            self._reg_lock.release()
        except asyncio.TimeoutError:
            step("an in-flight registration did not finish; withdrawing anyway")
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if cfg.register and self.api is not None:
            try:
                await self.api.delete_instance(cfg.instance_id, timeout=max(0.5, min(2.0, left())))
                step("withdrew %s from the registry", cfg.instance_id)
            except ApiError as e:
                step("withdraw %s failed: %s", cfg.instance_id, e)
            self.registered = False
            self._write_state()
            delay = min(cfg.withdraw_delay, left())
            step("waiting %.2fs for the withdrawal to reach callers", delay)
            await self._sleep(delay)
        if self.envoy.running:
            for name, call in (("healthcheck/fail", self.admin.healthcheck_fail),
                               ("drain_listeners?graceful", self.admin.drain_listeners)):
                try:
                    await call()
                    step("envoy %s", name)
                except AdminError as e:
                    step("envoy %s failed: %s", name, e)
            active = await self._wait_requests_done(deadline)
            if active:
                step("deadline reached with %d request(s) still active", active)
            else:
                step("no active requests")
        step("stopping envoy")
        rc = await self.envoy.stop(self.cfg.stop_timeout_seconds)
        step("envoy exited (%s)", _describe_rc(rc))

    async def _wait_requests_done(self, deadline: float) -> int:
        """Poll the sum of `http.*.downstream_rq_active` (the admin listener's own excluded) until 0 or the
        deadline; returns the last sum (0: drained)."""
        active = -1
        while self.envoy.running:
            try:
                stats = await self.admin.stats(_ACTIVE_RQ_FILTER)
                active = sum(v for k, v in stats.items() if not k.startswith("http.admin."))
            except AdminError as e:
                log.debug("stats: %s", e)
            if active == 0:
                return 0
            if time.monotonic() >= deadline or await self._sleep(min(0.1, deadline - time.monotonic())):
                return max(active, 0)
        return 0


def _describe_rc(rc: int | None) -> str:
    if rc is None:
        return "not started"
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit {rc}"


def run_agent(cfg: AgentConfig) -> int:
    """Blocking entry point: uvloop when importable, the default asyncio loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(Agent(cfg).run())
    return uvloop.run(Agent(cfg).run())
