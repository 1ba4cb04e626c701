"""The `mizzen up` runner: control plane, pods (network namespaces or loopback), agents and apps.

One `Runner` owns one state dir (`client.StateLayout`) and wires the parts together:

    PodTable (table.py)          the state, its lock, and `status_of(table)` → status.json
    ProcessLauncher (launcher.py)  control-plane replicas; per pod its agent (+ Envoy) and app
    NetnsNetwork | LoopbackNetwork (network.py)  where pods run: namespaces + capture, or loopback ports
    Supervisor (supervisor.py)   `step()` every 0.25 s: restarts, agent states, held apps, refreshes
    Operations (operations.py)   orderly stops, rollout, scale, hot upgrade — explicit collaborators
    Reconciler (reconcile.py)    follows the store's Workloads
    ControlServer (control.py)   `STATE/runner.sock`; calls the runner through the `ControlTarget` protocol

`run()` starts everything in order — control plane → apply the mesh file → pods → agents → each app once its
agent reports ready (Istio's holdApplicationUntilProxyStarts) — supervises it, and tears it all down on
SIGTERM/SIGINT: instances withdrawn first (and a bounded wait until callers' proxies dropped them), then
apps, then agents (they drain and stop Envoy), then the control plane, then the namespaces. The runner owns
the one operation lock (`op_lock`): control-channel operations and reconcile passes never overlap.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Callable

from ..api import LoadResult, Resource, load_sources
from ..chaos.cleanup import stop_all as stop_chaos_faults
from ..client import ENVOY_UID, MAX_CONTROL_PLANES, ApiClient, ClientError, HttpError, StateLayout
from ..manifests import read_inputs
from ..unixpath import UNIX_PATH_MAX
from . import meshview, netns
from .control import ControlServer
from .launcher import ProcessLauncher, joined_api
from .meshstate import issue_text, not_ready_reasons, read_pid, runner_alive, summary_lines
from .network import LoopbackNetwork, NetnsNetwork
from .operations import Operations
from .options import APP_STOP_SECONDS, LISTENER_DRAIN_SECONDS, WITHDRAW_TIMEOUT_SECONDS, Options
from .pods import POLL_SECONDS, Pod, RunnerError, check_host_ports, plan_pods
from .procs import free_ports
from ..server.backends import display_url
from .ratelimit import RateLimitServices, check_redis_option
from .protocols import Progress
from .reconcile import Reconciler
from .supervisor import Supervisor
from .table import MeshInfo, PodTable

log = logging.getLogger("mizzen.local")

LOOPBACK_MEANS = ("no network namespaces and no traffic capture: every app listens on 127.0.0.1 at the port "
                  "in $PORT (not its containerPort) and reaches other services only through its sidecar as "
                  "an explicit proxy (HTTP_PROXY); an app that ignores $PORT or HTTP_PROXY is not in the mesh")


class Interrupted(RunnerError):
    """Asked to stop (signal) before the mesh was up."""


def resolve_mode(mode: str, *, euid: int | None = None, path: str | None = None) -> str:
    """`--mode` → netns | loopback. auto: netns as root, loopback otherwise (apps get $PORT and HTTP_PROXY).
    As root, a missing `ip`/`iptables` (or a broken `ip netns`) is an error naming what is missing and how to
    install it — never a silent fall-back to loopback mode; only `--mode loopback` runs without them."""
    if mode == "loopback":
        return mode
    if mode not in ("auto", "netns"):
        raise RunnerError(f"unknown mode {mode!r}")
    root = (os.geteuid() if euid is None else euid) == 0
    if not root and mode == "auto":
        log.info("not root: loopback mode (%s)", LOOPBACK_MEANS)
        return "loopback"
    reason = netns.unavailable_reason(euid=euid, path=path)
    if reason is None:
        return "netns"
    raise RunnerError(f"cannot run pods in network namespaces: {reason}.\n"
                      f"To run without them, ask for it: `mizzen up --mode loopback` ({LOOPBACK_MEANS}).")


CONSUL_DEFAULT = ("127.0.0.1", 8500)


def resolve_consul_api(value: str | None) -> str | None:
    """`--consul-api`: "auto" → 127.0.0.1:8500 when it is free, else a free loopback port (`mizzen status`
    shows which); "off" → none; HOST:PORT as given."""
    if value in (None, "", "off", "0"):
        return None
    if value != "auto":
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit():
            raise RunnerError(f"--consul-api {value!r}: expected HOST:PORT, auto or off")
        return f"{host or '127.0.0.1'}:{port}"
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(CONSUL_DEFAULT)
            return f"{CONSUL_DEFAULT[0]}:{CONSUL_DEFAULT[1]}"
        except OSError:
            pass
    port = free_ports(1)[0]
    log.info("127.0.0.1:%d is taken: the Consul API goes on 127.0.0.1:%d", CONSUL_DEFAULT[1], port)
    return f"127.0.0.1:{port}"


def untraversable(path: str, uid: int) -> str | None:
    """The first existing ancestor of path (or path) that uid may not search, or None."""
    p = os.path.abspath(path)
    chain = []
    while True:
        chain.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for d in reversed(chain):
        try:
            st = os.stat(d)
        except FileNotFoundError:
            return None  # made by the runner (0755) from here on
        if st.st_uid == uid or st.st_mode & 0o001:
            continue
        return d
    return None


def install_stop_signals(run: Any) -> None:
    """SIGTERM/SIGINT (and SIGHUP from a terminal) ask the runner to stop; a second one forces it. Without a
    terminal SIGHUP is ignored (a detached runner outlives its shell)."""
    def on_stop(signum: int, frame: Any) -> None:
        if run.stop_requested:
            run.force = True
        run.stop_requested = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_stop)
    signal.signal(signal.SIGHUP, on_stop if sys.stdin is not None and sys.stdin.isatty() else signal.SIG_IGN)


class Runner:
    """Implements `control.ControlTarget` for the control channel."""

    def __init__(self, mesh_file: str, state_dir: str, *, mode: str = "auto", concurrency: int = 1,
                 timeout: float = 120.0, drain_seconds: float = 2.0,
                 listener_drain_seconds: float = LISTENER_DRAIN_SECONDS,
                 withdraw_timeout: float = WITHDRAW_TIMEOUT_SECONDS, app_stop_seconds: float = APP_STOP_SECONDS,
                 on_ready: Callable[[dict[str, Any]], None] | None = None, control_planes: int = 1,
                 trust_domain: str = "cluster.local", cert_ttl_seconds: float = 24 * 3600.0,
                 outbound_traffic_policy: str = "ALLOW_ANY", ratelimit: bool = True, ratelimit_replicas: int = 1,
                 ratelimit_redis: str | None = None, store_url: str | None = None, consul_api: str | None = "auto",
                 host_options: dict[str, Any] | None = None):
        if not 1 <= control_planes <= MAX_CONTROL_PLANES:
            raise RunnerError(f"--control-planes must be 1 to {MAX_CONTROL_PLANES}")
        self.mesh_file = os.path.abspath(mesh_file)
        self.mesh_dir = os.path.dirname(self.mesh_file)
        self.layout = StateLayout(state_dir)
        self.state_dir = self.layout.root
        self.requested_mode = mode
        self.options = Options(concurrency=concurrency, timeout=timeout, drain_seconds=drain_seconds,
                               listener_drain_seconds=listener_drain_seconds,
                               withdraw_timeout=withdraw_timeout, app_stop_seconds=app_stop_seconds,
                               control_planes=control_planes, trust_domain=trust_domain,
                               cert_ttl_seconds=cert_ttl_seconds, outbound_traffic_policy=outbound_traffic_policy,
                               ratelimit=ratelimit, ratelimit_replicas=ratelimit_replicas,
                               ratelimit_redis=ratelimit_redis, store_url=store_url,
                               consul_api=resolve_consul_api(consul_api), **(host_options or {}))
        self.on_ready = on_ready
        self.table = PodTable(MeshInfo(netns.mesh_id(self.state_dir), self.state_dir, self.mesh_file, mode,
                                       host=self.options.host, store=display_url(store_url),
                                       consul_api=self.options.consul_api))
        self.op_lock = threading.Lock()  # one operation at a time: control channel and reconciler
        self.api = joined_api(self.state_dir, self.options, 5.0) if self.options.joined else \
            ApiClient(self.state_dir, replicas=control_planes, timeout=5.0)
        self.resources: list[Resource] = []
        self.mesh_text = ""
        self.control: ControlServer | None = None
        self.network: NetnsNetwork | LoopbackNetwork = LoopbackNetwork()
        self.launcher = ProcessLauncher(self.table, self.options)
        self.ratelimit = RateLimitServices(self.table, ratelimit_replicas, ratelimit_redis, self.options.join_api_urls)
        self.ops = Operations(self.table, self.launcher, self.api, self.network, self.options)
        self.supervisor = Supervisor(self.table, self.api, self.network, self._ready)
        self._prepared = False

    @property
    def mode(self) -> str:
        return self.table.info.mode

    @property
    def phase(self) -> str:
        return self.table.run.phase

    # ------------------------------------------------------------------------------- preflight
    def preflight(self) -> LoadResult:
        """Everything checked before anything starts: input, mode, a mesh already running here."""
        sources = read_inputs([self.mesh_file])  # raises InvalidConfig naming the file
        result = load_sources(sources)
        self.mesh_text = sources[0][1]
        self.resources = list(result.resources)
        pods = plan_pods([r for r in self.resources if self._runs_here(r)], self.mesh_dir)
        self.table.pods, self.table.next_index = pods, len(pods)
        self.table.info.mode = resolve_mode(self.requested_mode)
        pid = runner_alive(self.state_dir)
        if pid:
            raise RunnerError(f"a mesh is already running in {self.state_dir} (runner pid {pid}); "
                              f"stop it with `mizzen down --state-dir {self.state_dir}`")
        longest = max((len(self.layout.pod(p.name).admin_socket) for p in pods), default=0)
        if self.options.ratelimit:
            check_redis_option(self.options.ratelimit_redis, self.options.ratelimit_replicas)
            longest = max(longest, len(self.layout.ratelimit_admin_socket(self.options.ratelimit_replicas - 1)),
                          len(self.layout.redis_socket))
        if not self.options.joined:
            longest = max(longest, len(self.layout.xds_socket(self.options.control_planes - 1)))
        if longest > UNIX_PATH_MAX:
            raise RunnerError(f"state dir path too long for unix sockets ({UNIX_PATH_MAX} bytes max): "
                              f"use a shorter --state-dir")
        if self.mode == "netns" and any(p.sidecar for p in pods):
            self._let_envoy_reach_state_dir()
        if len(pods) > 250 * 256:
            raise RunnerError("too many pods")
        check_host_ports(pods)
        self._assemble()
        return result

    def _let_envoy_reach_state_dir(self) -> None:
        blocked = untraversable(self.state_dir, ENVOY_UID)
        tmp = os.path.realpath(tempfile.gettempdir())
        while blocked and os.path.realpath(blocked).startswith(tmp + os.sep) and os.geteuid() == 0:
            # e.g. a mkdtemp() state dir (mode 700): let Envoy search it (o+x, no listing)
            os.chmod(blocked, os.stat(blocked).st_mode | 0o001)
            log.warning("made %s searchable by others (o+x) so Envoy (uid %d) reaches its files", blocked, ENVOY_UID)
            blocked = untraversable(self.state_dir, ENVOY_UID)
        if blocked:
            raise RunnerError(f"Envoy runs as uid {ENVOY_UID} and cannot reach {self.state_dir}: {blocked} "
                              f"is mode {os.stat(blocked).st_mode & 0o777:o}; use a --state-dir under "
                              f"world-searchable directories (e.g. chmod o+x {blocked})")

    def _assemble(self) -> None:
        """The collaborators, once the mode is known."""
        o = self.options
        if o.joined and self.mode != "netns":
            raise RunnerError("a host of a multi-host mesh runs its pods in network namespaces (root)")
        self.network = NetnsNetwork(self.table.info.meshid, subnet=o.pod_subnet, routed=o.routed,
                                    outbound_excluded=o.outbound_excluded) if self.mode == "netns" \
            else LoopbackNetwork()
        self.ops = Operations(self.table, self.launcher, self.api, self.network, self.options,
                              resources=self.resources, mesh_dir=self.mesh_dir)
        self.supervisor = Supervisor(self.table, self.api, self.network, self._ready)
        self._prepared = True

    def _ready(self, st: dict[str, Any]) -> None:
        if self.on_ready:
            self.on_ready(st)
        else:
            for line in summary_lines(st):
                log.info("%s", line)

    # ------------------------------------------------------------------------------------- run
    def run(self) -> int:
        """Start, supervise until asked to stop, tear down. Returns the exit code."""
        if not self._prepared:
            self.preflight()
        self.table.info.runner_pid = os.getpid()
        self._install_signals()
        run = self.table.run
        code = 0
        try:
            self._prepare_state_dir()
            self.start()
            run.phase = "running"
            self.write_status()
            self.control = ControlServer(self, self.layout.runner_socket)
            self.control.start()
            Reconciler(self.table, self.api, lambda w, ns, n, p: self.ops.scale(w, ns, n, p, persist=False),
                       self.op_lock, after=self.write_status, accept=self._runs_here).start()
            self.loop()
        except Interrupted as e:
            log.info("%s", e)
            code = 130
        except RunnerError as e:
            run.error, run.phase = str(e), "failed"
            log.error("%s", e)
            code = 1
        except Exception as e:  # a bug: say what, still tear down
            run.error, run.phase = f"{type(e).__name__}: {e}", "failed"
            log.exception("runner failed")
            code = 1
        finally:
            try:
                self.write_status()
            except OSError:
                pass
            self.teardown()
        return code

    def _install_signals(self) -> None:
        install_stop_signals(self.table.run)

    def _prepare_state_dir(self) -> None:
        os.makedirs(self.layout.logs_dir, exist_ok=True)
        # a fresh mesh: what a previous run left (store, sockets, pods, namespaces) goes
        if self.mode == "netns" or netns.unavailable_reason() is None:
            left = netns.cleanup_mesh(self.table.info.meshid)
            if left:
                log.info("removed leftovers of a previous run: %s", ", ".join(left))
        for path in self.layout.previous_run_files():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        shutil.rmtree(self.layout.pods_dir, ignore_errors=True)
        os.makedirs(self.layout.pods_dir, exist_ok=True)
        # searchable (Envoy reaches its files, apps their $HOME) but not listable by others: an app does not
        # get the mesh's file and pod names handed to it; the keys and tokens in here are 0600 besides
        for d in (self.state_dir, self.layout.pods_dir):
            if os.stat(d).st_uid == os.geteuid():
                os.chmod(d, 0o711)
        with open(self.layout.runner_pid, "w") as f:
            f.write(f"{os.getpid()}\n")

    def _check_stop(self) -> None:
        if self.table.run.stop_requested:
            raise Interrupted("stopped before the mesh was up")

    def start(self) -> None:
        t = self.table
        log.info("mesh %s: state dir %s, mode %s, %d pods", t.info.meshid, self.state_dir, self.mode, len(t.pods))
        if self.options.joined:  # a host of a multi-host mesh: the control planes run elsewhere, config is there
            self._wait_joined()
        else:
            self.launcher.start_controlplanes(self._check_stop)
            self.apply()
        if self.options.ratelimit:  # before the sidecars: a global limit of the mesh file is enforced at once
            self.ratelimit.start(self._check_stop)
        meshview.refresh_services(t, self.api, self.network)
        self.network.create(t.services)
        for pod in t.pods:
            self._check_stop()
            self.network.add_pod(pod, meshview.vip_chain(t, self.api, pod))
            self.launcher.make_pod(pod)
        log.info("%d pods made (%s)", len(t.pods), self.mode)
        for pod in t.pods:
            self.launcher.launch(pod)
        self.write_status()

    def _runs_here(self, workload: Any) -> bool:
        """Which Workloads (Resources or REST items) this runner runs: all, or on a host of a multi-host mesh
        those placed on it (local/hosts.py)."""
        if self.options.host is None:
            return True
        if not isinstance(workload, dict) and getattr(workload, "kind", "Workload") != "Workload":
            return True
        from .hosts import runs_here

        return runs_here(workload, self.options.host, self.options.default_host or "")

    def _wait_joined(self) -> None:
        deadline = time.monotonic() + self.options.timeout
        while True:
            self._check_stop()
            try:
                if self.api.healthz().get("ready"):
                    log.info("host %s joined the control plane at %s", self.options.host,
                             ", ".join(self.options.join_api))
                    return
            except (ClientError, ValueError) as e:
                reason = str(e)
            else:
                reason = "not ready"
            if time.monotonic() > deadline:
                raise RunnerError(f"the control plane at {', '.join(self.options.join_api)} did not answer in "
                                  f"{self.options.timeout:.0f}s: {reason}")
            time.sleep(0.3)

    def apply(self) -> None:
        try:
            # the first apply validates every resource (Envoy's own check): on a loaded machine that takes longer
            # than the 5 s an ordinary call gets, and a timeout here would stop the whole mesh
            out = self.api.apply([(self.mesh_file, self.mesh_text)], timeout=self.options.timeout)
        except HttpError as e:
            lines = [str(e)] + ["  " + issue_text(issue) for issue in e.body.get("errors") or []]
            raise RunnerError("the control plane rejected the mesh file: " + "\n".join(lines)) from None
        for w in out.get("warnings") or []:
            log.warning("apply: %s", w)
        log.info("applied %d resources (revision %s)", len(out.get("applied") or []), out.get("revision"))

    def loop(self) -> None:
        ready_deadline = time.monotonic() + self.options.timeout
        warned = False
        while not self.table.run.stop_requested:
            self.supervisor.step()
            if not self.table.run.ready and not warned and time.monotonic() > ready_deadline:
                warned = True
                log.warning("not ready after %.0fs: %s", self.options.timeout,
                            "; ".join(not_ready_reasons(self.status())))
            time.sleep(POLL_SECONDS)
        log.info("stopping")

    # ------------------------------------------------------------------- ControlTarget
    def status(self) -> dict[str, Any]:
        return self.supervisor.status()

    def write_status(self) -> None:
        self.supervisor.write_status()

    def _operation(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        finally:
            self.write_status()

    def rollout_restart(self, workload: str, namespace: str | None, progress: Progress) -> list[str]:
        return self._operation(lambda: self.ops.rollout_restart(workload, namespace, progress))

    def scale(self, workload: str, namespace: str | None, replicas: int, progress: Progress) -> list[str]:
        return self._operation(lambda: self.ops.scale(workload, namespace, replicas, progress))

    def proxy_upgrade(self, workload: str, namespace: str | None, envoy: str | None,
                      progress: Progress) -> list[dict[str, Any]]:
        return self._operation(lambda: self.ops.proxy_upgrade(workload, namespace, envoy, progress))

    # ---------------------------------------------------------------------------- teardown
    def teardown(self) -> None:
        t = self.table
        t.run.phase = "stopping"
        self._ignore_signals_for_teardown()
        self.write_status()
        try:  # failure drills first: a frozen control plane would hang the stop, a fault's rules outlive it
            for line in stop_chaos_faults(self.state_dir):
                log.info("%s", line)
        except Exception:  # noqa: BLE001 - never keep the mesh from stopping
            log.exception("undoing chaos faults failed; `mizzen chaos stop` retries")
        grace = 1.0 if t.run.force else 5.0
        if self.control is not None:
            self.control.stop()
        # the orderly stop of every pod: withdraw all, wait (bounded) until callers' proxies dropped them,
        # stop the apps, then the agents (they drain and stop Envoy); namespaces last
        with t.lock:
            pods: list[Pod] = list(t.pods)
        if any(c.poll() for c in t.cps) and not t.run.force:
            self.ops.withdraw(pods)
            if any(p.ports for p in pods):
                self.ops.wait_endpoints(remove=[p for p in pods if p.ports],
                                        timeout=min(self.options.withdraw_timeout, 5.0))
        self.launcher.stop_apps(pods, grace)
        for iid in list(t.static_registered):
            meshview.deregister(t, self.api, iid)
        self.launcher.stop_sidecars(pods, 1.0 if t.run.force else self.options.drain_seconds + 15.0)
        self.ratelimit.stop(grace)
        self.launcher.stop_controlplanes(grace)
        if self.mode == "netns":
            try:
                self.network.teardown()
            except netns.NetnsError as e:
                log.error("namespace teardown: %s", e)
        t.run.phase = "failed" if t.run.error else "stopped"
        self.write_status()
        try:
            if read_pid(self.state_dir) == os.getpid():
                os.unlink(self.layout.runner_pid)
        except OSError:
            pass
        log.info("mesh %s stopped", t.info.meshid)

    def _ignore_signals_for_teardown(self) -> None:
        def on_signal(signum: int, frame: Any) -> None:
            self.table.run.force = True

        try:
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        except ValueError:  # not the main thread
            pass


def setup_logging(stream: Any = None, level: int = logging.INFO) -> None:
    h = logging.StreamHandler(stream or sys.stderr)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("mizzen.local")
    root.handlers[:] = [h]
    root.setLevel(level)
    root.propagate = False
