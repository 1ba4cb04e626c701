"""Envoy as a child process (start, watch, stop); its admin API is `mizzen.client.aio.AsyncEnvoyAdmin`.

The process is started with plain `subprocess.Popen` from the event loop's thread (PR_SET_PDEATHSIG is tied to
the thread that forks; a worker thread that ends would take Envoy with it) and its exit is awaited through a
pidfd, so this works the same under asyncio's default loop and uvloop.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from ..envoybin import remove_hot_restart_memory

log = logging.getLogger("mizzen.agent")

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# resolved here, in the parent: the forked child of this multi-threaded process should not dlopen (the loader's
# lock may have been held by another thread at the fork)
_PRCTL = _load_prctl()


def _child_setup(parent_pid: int) -> None:
    """preexec_fn: runs in the child after setuid (so the death signal is not reset by the uid change)."""
    try:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort; try/finally in the agent is the first line of defence
        pass
    if os.getppid() != parent_pid:  # the agent died between fork and prctl
        os._exit(1)


@dataclass
class EnvoyOptions:
    binary: str
    config_path: str
    work_dir: str
    log_path: str
    base_id_path: str
    access_log_path: str = ""  # Envoy's stdout (access logs); default: access.log next to log_path
    concurrency: int = 1
    log_level: str = "warning"
    drain_seconds: float = 5.0  # --drain-time-s: a replaced filter chain's (and a hot-restart parent's) drain
    parent_shutdown_seconds: float = 10.0
    uid: int | None = None
    gid: int | None = None
    extra_args: Sequence[str] = ()
    env: dict[str, str] | None = None


@dataclass
class EnvoyProcess:
    """One Envoy at a time, with its restart epoch kept for hot restart.

    `epoch` is the hot-restart epoch of the running (or last) process. A restart after a crash starts over at
    epoch 0 with a fresh dynamic base id; a hot restart (`hot_restart`) starts epoch+1 with
    `--base-id <the saved base id>` while the old process still runs.
    """

    opts: EnvoyOptions
    epoch: int = 0
    starts: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_at: float = 0.0
    _exited: asyncio.Event | None = field(default=None, repr=False)
    # hot restart: parents still draining (they exit after --parent-shutdown-time-s), and an event that is
    # unset while a hot restart decides which process is current
    parents: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    _settled: asyncio.Event | None = field(default=None, repr=False)
    _warned: set[tuple[str, int]] = field(default_factory=set, repr=False)
    log_offset: int = 0  # size of log_path when the current process started: its own lines come after

    # ------------------------------------------------------------------ command line
    def command(self, epoch: int = 0) -> list[str]:
        o = self.opts
        cmd = [
            o.binary, "-c", o.config_path,
            "--concurrency", str(o.concurrency),
            "--log-level", o.log_level,
            "--drain-time-s", str(max(0, round(o.drain_seconds))),
            # every connection of a replaced filter chain is told to close on its next response at once (Istio's
            # choice): with the default "gradual" most kept serving under the old config for most of the drain
            "--drain-strategy", "immediate",
            "--parent-shutdown-time-s", str(max(1, round(o.parent_shutdown_seconds))),
            "--restart-epoch", str(epoch),
        ]
        if epoch == 0:
            cmd += ["--use-dynamic-base-id", "--base-id-path", o.base_id_path]
        else:
            base_id = self.base_id()
            if base_id is None:
                raise RuntimeError(f"hot restart epoch {epoch} needs the base id in {o.base_id_path}")
            cmd += ["--base-id", str(base_id)]
        return cmd + list(o.extra_args)

    def base_id(self) -> int | None:
        try:
            with open(self.opts.base_id_path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------------ lifecycle
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def prepare_dirs(self, extra_dirs: Sequence[str] = ()) -> None:
        """Make the work dir (and e.g. the admin socket's dir) writable by Envoy's uid/gid."""
        o = self.opts
        os.makedirs(o.work_dir, exist_ok=True)
        if o.uid is not None and os.geteuid() != 0:
            log.warning("envoyUid %d ignored: the agent is not root, Envoy runs as uid %d", o.uid, os.geteuid())
        if o.uid is None or os.geteuid() != 0:
            return
        gid = o.gid if o.gid is not None else o.uid
        for d in dict.fromkeys([o.work_dir, *extra_dirs]):
            os.makedirs(d, exist_ok=True)
            os.chown(d, o.uid, gid)
        for p in (o.base_id_path,):
            if os.path.exists(p):
                os.chown(p, o.uid, gid)
        self.ensure_reachable([o.work_dir])

    def ensure_reachable(self, paths: Sequence[str]) -> list[str]:
        """Envoy (another uid) must search every directory above its files and above the control plane's
        unix socket (connect() on a socket path needs it). A directory under the system temp dir that it may
        not search gets o+x again (search, no listing), as `mizzen up` did at start: pytest, for one, resets
        /tmp/pytest-of-<user> to 0700 whenever a session starts, and from then on Envoy can neither start
        (its bootstrap is unreadable) nor reconnect its ADS stream after a control-plane restart (EACCES on
        xds.sock) -- it keeps serving its last config, disconnected for good. Anything else is only logged.
        Returns the directories still blocked. No-op unless root and Envoy runs under its own uid."""
        o = self.opts
        if o.uid is None or os.geteuid() != 0:
            return []
        gid = o.gid if o.gid is not None else o.uid
        tmp = os.path.realpath(tempfile.gettempdir())
        blocked: list[str] = []
        for path in paths:
            for d in _untraversable_parents(os.path.join(path, "x"), o.uid, gid):
                if os.path.realpath(d).startswith(tmp + os.sep):
                    try:
                        os.chmod(d, os.stat(d).st_mode | 0o001)
                        log.warning("made %s searchable by others again (o+x): Envoy (uid %d) must reach its files "
                                    "and the control plane's socket", d, o.uid)
                        continue
                    except OSError as e:
                        log.warning("cannot make %s searchable for Envoy: %s", d, e)
                if d not in blocked:
                    blocked.append(d)
                    if (d, o.uid) not in self._warned:
                        self._warned.add((d, o.uid))
                        try:
                            mode = f"{os.stat(d).st_mode & 0o777:o}"
                        except OSError:
                            mode = "?"
                        log.warning("envoy uid %d may not traverse %s (mode %s): Envoy will not find its files or "
                                    "the control plane's socket", o.uid, d, mode)
        return blocked

    async def start(self, epoch: int = 0, *, hot: bool = False) -> int:
        """Start Envoy (must be called on the event loop's thread); returns its pid. With `hot`, the running
        process becomes the parent of a hot restart (see `hot_restart`)."""
        if self.running and not hot:
            raise RuntimeError(f"envoy already running (pid {self.pid})")
        o = self.opts
        cmd = self.command(epoch)
        if epoch == 0 and not self.running and not self._any_alive():
            self._remove_stale_shm(check_in_use=True)  # left by an Envoy of a previous (SIGKILLed) agent
        logf = open(o.log_path, "ab", buffering=0)  # noqa: SIM115 - handed to the child
        self.log_offset = os.fstat(logf.fileno()).st_size
        # access logs (switched on per workload by a Telemetry resource) are Envoy's stdout
        access = o.access_log_path or os.path.join(os.path.dirname(o.log_path), "access.log")
        accessf = open(access, "ab", buffering=0)  # noqa: SIM115
        try:
            logf.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            kw: dict[str, Any] = {}
            if o.uid is not None and os.geteuid() == 0:
                kw.update(user=o.uid, group=o.gid if o.gid is not None else o.uid, extra_groups=[])
            me = os.getpid()
            self.proc = subprocess.Popen(  # noqa: S603
                cmd, stdin=subprocess.DEVNULL, stdout=accessf, stderr=logf, cwd=o.work_dir,
                env=o.env, start_new_session=True, close_fds=True,
                preexec_fn=lambda: _child_setup(me), **kw,  # noqa: PLW1509
            )
        finally:
            logf.close()
            accessf.close()
        self.epoch = epoch
        self.starts += 1
        self.started_at = time.monotonic()
        self._exited = asyncio.Event()
        self._watch(self.proc, self._exited)
        log.info("envoy started: pid %d epoch %d (%s)", self.proc.pid, epoch, o.binary)
        return self.proc.pid

    def _watch(self, proc: subprocess.Popen[bytes], exited: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            fd = -1
        if fd >= 0:
            def on_exit() -> None:
                loop.remove_reader(fd)
                os.close(fd)
                proc.poll()
                exited.set()
            loop.add_reader(fd, on_exit)
        else:
            async def poll() -> None:
                while proc.poll() is None:
                    await asyncio.sleep(0.1)
                exited.set()
            loop.create_task(poll())

    async def wait(self) -> int | None:
        """Wait for the current process to exit; returns its exit code (negative: killed by a signal). A
        process replaced by a hot restart is not "the current process": the wait follows its successor."""
        while True:
            if self.proc is None or self._exited is None:
                return None
            await self._exited.wait()
            if self._settled is not None:
                await self._settled.wait()
            if self.proc.poll() is None:
                continue  # the one that exited was a hot-restart parent; the current one runs
            rc = self.proc.wait()
            self._remove_stale_shm()
            return rc

    async def hot_restart(self, epoch: int, ready: "Callable[[], Awaitable[bool]]", timeout: float) -> int:
        """Start `epoch` (> 0) next to the running process: it takes over the listen sockets and tells the
        parent to drain (`--drain-time-s`) and exit (`--parent-shutdown-time-s`). `ready()` is polled until it
        says the new process serves; if the new process exits first or `timeout` passes, the parent stays
        current and RuntimeError is raised.

        A new process that dies of a signal while the parent still serves is started once more at the same
        epoch: the parent has not handed anything over for good (it terminates only when a child asks it to,
        after `--parent-shutdown-time-s`). The deaths this was added for (SIGSEGV, later SIGABRT, in CI) were not
        Envoy's: the agent's forked child died before exec, in gRPC's at-fork handlers (fixed in
        agent/commands.py, `_no_grpc_fork_handlers`). An Envoy that itself dies after it attached the
        hot-restart memory leaves Envoy's "initializing" flag set there, and the second try then exits with
        "previous envoy process is still initializing"; the error says so."""
        if not self.running or self.proc is None or self._exited is None:
            raise RuntimeError("envoy is not running: nothing to hot-restart")
        if self.base_id() is None:
            raise RuntimeError(f"no base id in {self.opts.base_id_path}")
        parent = self.proc
        for attempt in (1, 2):
            try:
                return await self._hot_restart_once(epoch, ready, timeout)
            except _ChildCrashed as e:
                if attempt == 2 or parent.poll() is not None:
                    raise RuntimeError(str(e)) from None
                log.warning("%s; the old process (pid %d, epoch %d) still serves: starting epoch %d once more",
                            e, parent.pid, self.epoch, epoch)
                await asyncio.sleep(1.0)
        raise AssertionError("unreachable")

    async def _hot_restart_once(self, epoch: int, ready: "Callable[[], Awaitable[bool]]", timeout: float) -> int:
        parent, parent_exited, parent_epoch, parent_started = self.proc, self._exited, self.epoch, self.started_at
        assert parent is not None
        self._settled = asyncio.Event()
        try:
            await self.start(epoch, hot=True)
            child = self.proc
            assert child is not None
            deadline = time.monotonic() + timeout
            while True:
                if child.poll() is not None:
                    msg = (f"envoy epoch {epoch} exited ({child.returncode}) during the hot restart; "
                           f"see {self.opts.log_path}. Its log: "
                           + (_crash_report(self.opts.log_path, self.log_offset) or
                              "(nothing after its start line: the process may have died before it ran Envoy; "
                              "see the agent's own log)"))
                    raise _ChildCrashed(msg) if child.returncode < 0 else RuntimeError(msg)
                if await ready():
                    break
                if time.monotonic() > deadline:
                    child.kill()
                    raise RuntimeError(f"envoy epoch {epoch} not ready after {timeout:.0f}s")
                await asyncio.sleep(0.1)
            self.parents = [p for p in self.parents if p.poll() is None] + [parent]
            return child.pid
        except BaseException:
            if parent.poll() is None:  # the old process stays in charge
                self.proc, self._exited, self.epoch, self.started_at = (parent, parent_exited, parent_epoch,
                                                                        parent_started)
            raise
        finally:
            self._settled.set()
            self._settled = None

    def _any_alive(self) -> bool:
        return self.running or any(p.poll() is None for p in self.parents)

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    async def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL; then SIGKILL hot-restart parents still draining.
        Idempotent. The current process goes first: a hot-restart child whose parent still runs asks it to
        terminate as it shuts down, and with that parent SIGKILLed first it retried the send for the whole
        `timeout` (Envoy retries a refused hot-restart sendmsg for 10 s, then aborts) and was SIGKILLed."""
        rc = None
        if self.proc is not None:
            if self.running:
                log.info("envoy stopping: SIGTERM pid %d", self.proc.pid)
                self.signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(self.wait(), timeout)
                except asyncio.TimeoutError:
                    log.warning("envoy pid %d still running after %.1fs: SIGKILL", self.proc.pid, timeout)
                    self.signal(signal.SIGKILL)
            rc = await self.wait()
        left = [p for p in self.parents if p.poll() is None]
        for p in left:
            try:
                p.kill()  # a parent is draining already; its listeners belong to the current process
                p.wait(2)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.parents = []
        if left:
            self._remove_stale_shm()  # wait() left it while a parent ran
        return rc

    def kill_now(self) -> None:
        """Synchronous last resort (crash paths, atexit): SIGKILL and reap."""
        for p in [*self.parents, self.proc]:
            if p is not None and p.poll() is None:
                try:
                    p.kill()
                    p.wait(timeout=5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        self._remove_stale_shm()

    def _remove_stale_shm(self, check_in_use: bool = False) -> None:
        """Envoy leaves its hot-restart shared memory in /dev/shm when it exits (even cleanly). Right after our
        epoch-0 process exits nothing else uses that base id (a dynamic base id is unique among live Envoys),
        so remove it. With `check_in_use`, first make sure no Envoy holds the id's hot-restart socket (the
        base-id file may be old and the id reused)."""
        if self._any_alive():
            return
        base = self.base_id()
        if base is None:
            return
        if check_in_use and _hot_restart_socket_bound(base):
            return
        remove_hot_restart_memory(self.opts.base_id_path)


class _ChildCrashed(RuntimeError):
    """The new process of a hot restart was killed by a signal."""


_ABSL_FATAL = re.compile(r"^[FE]\d{4} ")  # gRPC core's (absl) CHECK failures and errors go to stderr as is


def _crash_report(log_path: str, since: int = 0, limit: int = 12) -> str:
    """What one Envoy process wrote to its log from byte `since` on (its start; a hot-restart parent shares the
    file but logs little at warning level): its errors and, when it died of a signal, its own crash report (the
    assertion that failed, then "Caught <signal>" and the first frames, at critical level; an absl CHECK of
    gRPC core as "F<mmdd> ..."). At most `limit` lines, each cut to 300 characters, joined with " | "; "" if it
    wrote nothing."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(since, os.fstat(f.fileno()).st_size - 262144))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    lines = [ln for ln in lines if ln.strip() and not ln.startswith("--- ")]  # not the agent's start line
    picked = [ln for ln in lines if "[critical]" in ln or "[error]" in ln or "Caught " in ln
              or _ABSL_FATAL.match(ln)] or lines[-limit:]
    return " | ".join(ln.strip()[-300:] for ln in picked[:limit])


def _hot_restart_socket_bound(base_id: int) -> bool:
    """Is an Envoy with this base id alive in this network namespace (its abstract hot-restart socket)?"""
    prefix = b"@envoy_domain_socket_parent_"
    try:
        with open("/proc/net/unix", "rb") as f:
            for line in f:
                name = line.split()[-1].rstrip(b"@") if line.strip() else b""
                if name.startswith(prefix) and name[len(prefix):].isdigit() \
                        and int(name[len(prefix):]) // 10 == base_id:
                    return True
        return False
    except OSError:
        return True  # cannot tell: leave it


def _untraversable_parents(path: str, uid: int, gid: int) -> list[str]:
    out = []
    p = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            st = os.stat(p)
        except OSError:
            break
        if st.st_uid == uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid == gid:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if not ok:
            out.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return out
