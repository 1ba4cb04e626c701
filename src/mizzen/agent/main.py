"""The agent's main loop: bootstrap, Envoy supervision, readiness, registration, drain.

States written to `<workDir>/agent.state` (the runner starts the app once it reads "ready"):
    starting -> ready -> draining -> stopped      (ready -> starting again while a dead Envoy restarts)

Control (unix socket `<workDir>/agent.sock`, HTTP/1.1, JSON answers; also SIGUSR1 = withdraw):
    GET  /state          the agent.state document
    GET  /stats/prometheus, /telemetry/window, /telemetry/top; POST /tap   telemetry (agent/observability.py;
                         the scrape, window and top are on the health port too)
    POST /withdraw       withdraw the instance from the registry now and stop heartbeats, keep serving
    POST /hot-restart    body {"envoy": "/path"} optional: start Envoy epoch N+1 (hot restart), answer once
                         it serves: {"epoch", "envoyPid"}; the app is not touched
    POST /rotate-cert    get a new workload certificate now (e.g. after the mesh's root changed)

With `caAddress` (agent/security.py): the SDS server on `sds.sock` and the workload certificate first; Envoy
starts once the first certificate is there (until then the agent is `starting`, its readiness saying why), and
agent.state carries `cert` (state, SPIFFE ID, serial, validity, rotations, failures) and `sds`.
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

from ..ca.credentials import ROOT_CERT_FILE, TOKEN_FILE, secrets_dir
from ..client.aio import AsyncApiClient, AsyncEnvoyAdmin
from ..client.auth import FileToken
from ..client.errors import ClientError
from ..envoybin import find_envoy
from ..unixpath import SocketInUse, serve_app
from .bootstrap import render_bootstrap
from .config import AgentConfig
from .credentials import GatewayCredentials
from .envoy import EnvoyOptions, EnvoyProcess
from .health import HealthServer, Readiness, envoy_readiness
from .observability import AgentTelemetry
from .registration import app_listening, instance_of, wait_for_ports
from .sds import SdsServer
from .security import AgentSecurity

log = logging.getLogger("mizzen.agent")

STATES = ("starting", "ready", "draining", "stopped")
_ACTIVE_RQ_FILTER = r"^http\..*\.downstream_rq_active$"
_ACTIVE_FILTER = r"^(http\..*\.downstream_rq_active|listener\..*\.downstream_cx_active)$"
_STABLE_RUN_SECONDS = 30.0  # an Envoy that ran this long resets the restart back-off
_REACH_CHECK_SECONDS = 2.0  # how often the agent checks that Envoy can still reach its files and xds.sock


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
            access_log_path=cfg.access_log_path, base_id_path=cfg.base_id_path, concurrency=cfg.concurrency,
            log_level=cfg.log_level,
            drain_seconds=cfg.listener_drain_seconds, parent_shutdown_seconds=cfg.parent_shutdown,
            uid=cfg.envoy_uid, gid=cfg.envoy_gid,
        ))
        self.admin = AsyncEnvoyAdmin(cfg.admin_socket)
        # registrations carry the pod's own credential (pods/<pod>/secrets/token, provisioned by the runner and
        # readable by this agent only): the control plane accepts this pod's instance from it, nothing else. Over
        # TCP (a host of a multi-host mesh) the API is TLS: checked against the provisioned mesh root
        secrets = secrets_dir(cfg.work_dir)
        self.api = AsyncApiClient(cfg.api_addresses, token=FileToken(str(secrets / TOKEN_FILE)),
                                  ca_file=str(secrets / ROOT_CERT_FILE)) if cfg.api_address else None
        # metrics (with the certificate's gauges), golden window, top, tap (docs/observability.md)
        self.obs = AgentTelemetry(cfg, self.api, self._security_metrics)
        self.health = HealthServer(cfg.health_host, cfg.health_port, self.status, self.obs.health_routes)
        self.state = "starting"
        self.since = time.time()
        self.readiness = Readiness(False, "starting")
        self.registered = False
        self.withdrawn = False
        self.app_up: bool | None = None
        self.restarts = 0
        self.hot_restarts = 0
        self._hot_lock: asyncio.Lock | None = None
        self._control: Any = None
        self._written: tuple[Any, ...] | None = None
        self._stop: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None
        self._ever_ready: asyncio.Event | None = None
        self._reg_lock: asyncio.Lock | None = None
        self._stopping = False
        self._signal_count = 0
        self.security = AgentSecurity(cfg, on_change=self._write_state) if cfg.ca_address else None
        # a gateway's credentials (Secrets named by its Gateways' credentialName) over the same SDS server
        self._own_sds: SdsServer | None = None
        self.credentials: GatewayCredentials | None = None
        if cfg.gateway:
            sds = self.security.sds if self.security is not None else None
            if sds is None:
                owner = (cfg.envoy_uid, cfg.envoy_gid if cfg.envoy_gid is not None else cfg.envoy_uid) \
                    if cfg.envoy_uid is not None else None
                sds = self._own_sds = SdsServer(cfg.sds_socket, owner=owner)
            if self.api is not None:
                self.credentials = GatewayCredentials(sds, self.api, namespace=cfg.namespace,
                                                      poll_seconds=cfg.credential_poll_seconds)
            else:
                log.warning("gateway without apiAddress: its Gateway credentials (Secrets) cannot be read")

    def _security_metrics(self) -> str:
        return self.security.metrics_text() if self.security is not None else ""

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
        key = (self.state, self.envoy.pid, self.envoy.epoch, self.health.bound_port, self.registered,
               self.withdrawn, self.app_up, self.envoy.opts.binary,
               self.security.state_key() if self.security else None)
        if key == self._written:
            return
        doc = {
            "state": self.state, "agentPid": os.getpid(), "envoyPid": self.envoy.pid if self.envoy.running else None,
            "epoch": self.envoy.epoch, "since": round(self.since, 3), "restarts": self.restarts,
            "healthPort": self.health.bound_port, "adminSocket": self.cfg.admin_socket,
            "registered": self.registered, "withdrawn": self.withdrawn, "appUp": self.app_up,
            "hotRestarts": self.hot_restarts, "envoyBinary": self.envoy.opts.binary,
            "controlSocket": self.cfg.control_socket,
        }
        if self.security is not None:
            doc.update(self.security.status())
        if self.credentials is not None:
            doc["credentials"] = self.credentials.status()
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
        if sig == signal.SIGUSR1:
            asyncio.get_running_loop().create_task(self.withdraw())
            return
        self.request_stop()

    # ------------------------------------------------------------------ control
    async def withdraw(self) -> bool:
        """Withdraw the instance from the registry (callers stop picking it) but keep serving: the first
        step of every orderly stop. Idempotent; True when the registry has no instance of ours any more."""
        if self.withdrawn:
            return not self.registered
        self.withdrawn = True  # the register loop stops at its next turn and never PUTs again
        assert self._reg_lock is not None
        ok = True
        async with self._reg_lock:  # an in-flight PUT lands before the DELETE
            if self.cfg.register and self.api is not None:
                try:
                    await self.api.delete_instance(self.cfg.instance_id, timeout=3.0)
                    log.info("withdrew %s from the registry (still serving)", self.cfg.instance_id)
                    self.registered = False
                except ClientError as e:
                    log.warning("withdraw %s failed: %s", self.cfg.instance_id, e)
                    ok = False
            self._write_state()
        # right after the DELETE (the control plane's push is debounced, >= 0.1 s): what callers still send
        # before their EDS drops us is answered and told to reconnect elsewhere
        await self._drain_close()
        return ok

    async def hot_restart(self, binary: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """Envoy epoch N+1 takes over from the running one (see EnvoyProcess.hot_restart)."""
        assert self._hot_lock is not None
        async with self._hot_lock:
            if self._stopping or self.state not in ("ready", "starting"):
                raise RuntimeError(f"agent is {self.state}")
            old_binary = self.envoy.opts.binary
            if binary:
                self.envoy.opts.binary = find_envoy(binary)
            epoch = self.envoy.epoch + 1

            async def ready() -> bool:
                try:
                    stats = await self.admin.stats(r"^server\.hot_restart_epoch$")
                    if stats.get("server.hot_restart_epoch") != epoch:
                        return False
                    live, _ = await self.admin.ready()
                    return live
                except ClientError:
                    return False

            log.info("hot restart: starting envoy epoch %d (%s)", epoch, self.envoy.opts.binary)
            try:
                pid = await self.envoy.hot_restart(epoch, ready, timeout)
            except BaseException:
                self.envoy.opts.binary = old_binary
                raise
            self.hot_restarts += 1
            log.info("hot restart: envoy epoch %d (pid %d) serves; the parent drains and exits", epoch, pid)
            self._write_state()
            return {"epoch": epoch, "envoyPid": pid, "envoyBinary": self.envoy.opts.binary}

    async def _drain_close(self) -> None:
        """Make Envoy fail its health checks, which puts every listener in drain-close mode at once: each
        response from now on closes its connection gracefully (HTTP/1.1 `Connection: close`, HTTP/2 and gRPC a
        GOAWAY), while listeners keep accepting and serving. Called right after the withdrawal's registry
        DELETE: callers' proxies keep sending here until their EDS drops the endpoint, and with pooled
        connections that are told to close they reconnect (to the remaining replicas once EDS has moved on)
        instead of holding a connection to a replica about to stop. Clients that bypass EDS (sidecar-less,
        DNATed VIPs) are told the same. Best effort: a failure is logged, the stop goes on."""
        if not self.envoy.running:
            return
        try:
            await self.admin.healthcheck_fail()
            log.info("envoy now fails health checks: responses tell callers to close (Connection: close / GOAWAY)")
        except ClientError as e:
            log.warning("cannot make envoy fail health checks (callers are not told to close): %s", e)

    def _state_doc(self) -> dict[str, Any]:
        doc = read_state(self.cfg.state_path) or {}
        if self.security is not None:
            doc.update(self.security.status())  # live: the file is rewritten only when something changed
        return doc

    async def _start_control(self) -> None:
        from aiohttp import web

        async def state(request: web.Request) -> web.Response:
            return web.json_response(self._state_doc())

        async def withdraw(request: web.Request) -> web.Response:
            ok = await self.withdraw()
            return web.json_response({"withdrawn": True, "deregistered": ok})

        async def hot_restart(request: web.Request) -> web.Response:
            body: dict[str, Any] = {}
            if request.can_read_body:
                try:
                    body = await request.json()
                except ValueError:
                    return web.json_response({"message": "body must be JSON"}, status=400)
            try:
                out = await self.hot_restart(body.get("envoy"), float(body.get("timeout", 60.0)))
            except Exception as e:  # noqa: BLE001 - reported to the caller
                log.error("hot restart failed: %s", e)
                return web.json_response({"message": str(e)}, status=409)
            return web.json_response(out)

        async def rotate_cert(request: web.Request) -> web.Response:
            if self.security is None:
                return web.json_response({"message": "this sidecar has no workload certificate (no caAddress)"},
                                         status=409)
            self.security.rotate_now()
            return web.json_response({"rotating": True})

        app = web.Application()
        app.router.add_post("/rotate-cert", rotate_cert)
        app.router.add_get("/state", state)
        app.router.add_post("/withdraw", withdraw)
        app.router.add_post("/hot-restart", hot_restart)
        app.add_routes(self.obs.control_routes())
        path = self.cfg.control_socket
        try:
            self._control = await serve_app(app, path, mode=0o600)
        except (OSError, SocketInUse) as e:
            log.warning("no control socket at %s (the runner withdraws this pod with SIGUSR1 instead): %s", path, e)
            return
        log.info("control socket %s", path)

    # ------------------------------------------------------------------ main
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop, self._hurry = asyncio.Event(), asyncio.Event()
        self._ever_ready, self._reg_lock = asyncio.Event(), asyncio.Lock()
        self._hot_lock = asyncio.Lock()
        if self._signal_count:
            self._stop.set()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
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
            self.envoy.ensure_reachable(self._envoy_paths())
            self._write_state()
            await self.obs.start()  # Envoy's access-log stream connects to it
            await self.health.start()
            await self._start_control()
            self._write_state()
            log.info("node %s: xds %s (%s), admin %s", self.cfg.node_id, self.cfg.xds_address,
                     self.cfg.xds_protocol, self.cfg.admin_socket)
            if self.security is not None and not await self._first_certificate():
                raise _Stopped()
            if self._own_sds is not None:
                await self._own_sds.start()
            await self.envoy.start(0)
            self._write_state()
            tasks = [
                asyncio.create_task(self._guard(self._supervise), name="supervise"),
                asyncio.create_task(self._guard(self._monitor), name="readiness"),
                asyncio.create_task(self._guard(self._register_loop), name="register"),
            ]
            if self.security is not None:
                tasks.append(asyncio.create_task(self._guard(self._watch_cert), name="cert-state"))
            if self.credentials is not None:
                tasks.append(asyncio.create_task(self._guard(self.credentials.run), name="credentials"))
            await self._stop.wait()
            await self._drain(tasks)
        except _Stopped:
            log.info("stopped before the sidecar started")
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
        if self._control is not None:
            try:
                await self._control.cleanup()
            except Exception:  # noqa: BLE001
                log.debug("control close failed", exc_info=True)
            self._control = None  # its cleanup removed the socket file (if still ours)
        for c in (self.health.stop(), self.obs.stop(), self.admin.close(), self.api.close() if self.api else None,
                  self.security.stop() if self.security else None,
                  self._own_sds.stop() if self._own_sds else None):
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

    # ------------------------------------------------------------------ the workload certificate
    async def _first_certificate(self) -> bool:
        """SDS up and the first certificate in hand before Envoy starts (its mTLS listeners and clusters
        would otherwise wait for the secrets). False: asked to stop meanwhile."""
        assert self.security is not None and self._stop is not None
        await self.security.start()
        log.info("SDS on %s; asking %s for the certificate of %s", self.cfg.sds_socket,
                 ", ".join(self.cfg.ca_addresses), self.security.spiffe_id)

        def waiting(reason: str) -> None:
            if reason != self.readiness.reason:
                log.warning("%s", reason)
            self.readiness = Readiness(False, reason)

        return await self.security.wait_first(self._stop, waiting)

    async def _watch_cert(self) -> None:
        """Keep agent.state's `cert` current (state changes, rotations, failures; expiry is logged by the
        certificate manager on every failed attempt)."""
        while not self._stopping:
            self._write_state()
            await asyncio.sleep(1.0)

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
                self.envoy.ensure_reachable(self._envoy_paths())
                await self.envoy.start(0)
                self.restarts += 1
            except OSError as e:
                log.error("envoy failed to start: %s", e)
            self._write_state()

    def _envoy_paths(self) -> list[str]:
        """Directories Envoy must reach: its work dir, its admin socket's, every unix xDS socket's."""
        dirs = [self.cfg.work_dir, os.path.dirname(self.cfg.admin_socket)]
        dirs += [os.path.dirname(a[len("unix:"):]) for a in self.cfg.xds_addresses if a.startswith("unix:")]
        return list(dict.fromkeys(d for d in dirs if d))

    async def _monitor(self) -> None:
        """Poll Envoy's admin: readiness for /healthz/ready and the starting -> ready transition; now and then
        make sure Envoy can still reach its files and the control plane's socket (see ensure_reachable)."""
        next_reach = 0.0
        while not self._stopping:
            if time.monotonic() >= next_reach:
                next_reach = time.monotonic() + _REACH_CHECK_SECONDS
                try:
                    self.envoy.ensure_reachable(self._envoy_paths())
                except OSError as e:
                    log.debug("reachability check: %s", e)
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
        last_put, last_healthy = -1e9, None
        while not self._stopping and not self.withdrawn:
            # the app is probed often: a crashed app is marked unhealthy (callers' EDS drops it) within
            # about a second, and healthy again as soon as it listens again
            app_up = app_listening(cfg.app_host, cfg.app_ports) if cfg.app_ports else True
            if app_up != self.app_up:
                if self.app_up is not None:
                    log.warning("app %s", "listening again" if app_up else "not listening: marking unhealthy")
                self.app_up = app_up
                self._write_state()
            healthy = bool(self.readiness.ready) and app_up
            now = time.monotonic()
            if failing or healthy != last_healthy or now - last_put >= cfg.heartbeat_seconds:
                async with self._reg_lock:
                    if self._stopping or self.withdrawn:
                        return
                    inst = instance_of(cfg, healthy=healthy)
                    try:
                        await self.api.put_instance(inst, timeout=min(3.0, cfg.heartbeat_seconds))
                        if not self.registered or failing:
                            log.info("registered %s (%s %s)", inst.id, inst.address, list(inst.ports))
                        self.registered, failing = True, False
                        last_put, last_healthy = time.monotonic(), healthy
                        self._write_state()
                    except ClientError as e:
                        if not failing:
                            log.warning("registration failed (will retry): %s", e)
                        failing = True
            await asyncio.sleep(min(cfg.app_probe_seconds, cfg.heartbeat_seconds))

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
        if self.withdrawn and not self.registered:
            step("already withdrawn (the runner waited for callers)")
        elif cfg.register and self.api is not None:
            self.withdrawn = True
            try:
                await self.api.delete_instance(cfg.instance_id, timeout=max(0.5, min(2.0, left())))
                step("withdrew %s from the registry", cfg.instance_id)
            except ClientError as e:
                step("withdraw %s failed: %s", cfg.instance_id, e)
            self.registered = False
            self._write_state()
            await self._drain_close()  # what callers send until their EDS drops us is told to close
            delay = min(cfg.withdraw_delay, left())
            step("waiting %.2fs for the withdrawal to reach callers", delay)
            await self._sleep(delay)
        if self.envoy.running:
            for name, call in (("healthcheck/fail", self.admin.healthcheck_fail),
                               ("drain_listeners?graceful", self.admin.drain_listeners)):
                try:
                    await call()
                    step("envoy %s", name)
                except ClientError as e:
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
        """Poll the sum of `http.*.downstream_rq_active` and of the listeners' `downstream_cx_active` (the
        admin's own excluded) until 0 or the deadline: requests end, and connections (the app's, callers'
        idle keep-alive ones) are closed; returns the last sum (0: drained)."""
        active = -1
        while self.envoy.running:
            try:
                stats = await self.admin.stats(_ACTIVE_FILTER)
                active = sum(v for k, v in stats.items()
                             if not k.startswith(("http.admin.", "listener.admin.")))
            except ClientError as e:
                log.debug("stats: %s", e)
            if active == 0:
                return 0
            if time.monotonic() >= deadline or await self._sleep(min(0.1, deadline - time.monotonic())):
                return max(active, 0)
        return 0


class _Stopped(Exception):
    """Asked to stop before Envoy was started."""


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
