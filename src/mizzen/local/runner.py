"""The `mizzen up` runner: control plane, pods (network namespaces or loopback), agents and apps.

One Runner owns one state dir. `run()` starts everything, supervises it (restarts crashed processes with
back-off, keeps hosts files in step with services, writes `status.json` on every change) and tears it
all down on SIGTERM/SIGINT: instances withdrawn first (and a bounded wait until callers' proxies dropped
them), then apps, then agents (they drain and stop Envoy), then the control plane, then the namespaces.
Rolling restarts, scaling and sidecar hot upgrades come in over the control channel (local/control.py,
`STATE/runner.sock`) and run on its thread under `self.lock`; they (and the orderly stop of pods that
teardown uses too) are in local/operations.py, the plan (Pod) and supervised processes (Child) in
local/pods.py. Processes are started in order: control plane → apply the mesh file → pods → agents → each
app once its agent reports ready (Istio's holdApplicationUntilProxyStarts).
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Callable

from ..api import InvalidConfig, LoadResult, Resource
from ..manifests import load_files
from ..cli.client import ApiClient, ApiError, api_socket_name, replica_name, unix_request
from . import netns
from .control import CONTROL_SOCKET, ControlServer
from .meshstate import (PID_FILE, STATUS_FILE, envoy_pid_of, failing_logs, issue_text, live_status,
                        not_ready_reasons, read_json, read_pid, runner_alive, stop_mesh, summary_lines,
                        write_json)
from .operations import APP_STOP_SECONDS, WITHDRAW_TIMEOUT_SECONDS, Operations
from .plainroutes import service_chain, vip_table
from .reconcile import Reconciler
from .pods import API_ERRORS, POLL_SECONDS, Child, Pod, RunnerError, plan_pods
from .procs import alive, cmdline, env_without_proxies, free_ports, signal_pid, tail

log = logging.getLogger("mizzen.local")

ENVOY_UID = 1337
UNIX_PATH_MAX = 107
SERVICES_POLL_SECONDS = 1.5
REGISTER_REFRESH_SECONDS = 10.0
MAX_CONTROL_PLANES = 3
STATE_FILES = ("store.db", "store.db-wal", "store.db-shm", "api.sock", "xds.sock", STATUS_FILE, CONTROL_SOCKET,
               *(f"{k}-{i}.sock" for i in range(1, MAX_CONTROL_PLANES) for k in ("api", "xds")))


class Interrupted(RunnerError):
    """Asked to stop (signal) before the mesh was up."""


def resolve_mode(mode: str) -> str:
    """auto → netns when root with `ip netns` and iptables, else loopback. netns asked but impossible → error."""
    reason = netns.unavailable_reason()
    if mode == "auto":
        return "loopback" if reason else "netns"
    if mode == "netns" and reason:
        raise RunnerError(f"--mode netns: {reason}")
    if mode not in ("netns", "loopback"):
        raise RunnerError(f"unknown mode {mode!r}")
    return mode


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


# ------------------------------------------------------------------------------------------- runner

class Runner(Operations):
    def __init__(self, mesh_file: str, state_dir: str, *, mode: str = "auto", concurrency: int = 1,
                 timeout: float = 120.0, drain_seconds: float = 2.0,
                 withdraw_timeout: float = WITHDRAW_TIMEOUT_SECONDS, app_stop_seconds: float = APP_STOP_SECONDS,
                 on_ready: Callable[[dict[str, Any]], None] | None = None, control_planes: int = 1):
        self.mesh_file = os.path.abspath(mesh_file)
        self.mesh_dir = os.path.dirname(self.mesh_file)
        self.state_dir = os.path.abspath(state_dir)
        self.requested_mode = mode
        self.mode = mode
        self.concurrency = concurrency
        self.timeout = timeout
        self.drain_seconds = drain_seconds
        self.withdraw_timeout = withdraw_timeout
        self.app_stop_seconds = app_stop_seconds
        self.on_ready = on_ready
        if not 1 <= control_planes <= MAX_CONTROL_PLANES:
            raise RunnerError(f"--control-planes must be 1 to {MAX_CONTROL_PLANES}")
        self.control_planes = control_planes
        self.lock = threading.RLock()  # step() and the control channel's operations
        self.control: ControlServer | None = None
        self._next_index = 0
        self._generation = 0
        self.meshid = netns.mesh_id(self.state_dir)
        self.api = ApiClient(self.state_dir, timeout=5.0)
        self.resources: list[Resource] = []
        self.mesh_text = ""
        self.pods: list[Pod] = []
        self.net: netns.MeshNet | None = None
        self.cps: list[Child] = []  # control-plane replicas; replica 0 on api.sock/xds.sock
        self.agents: dict[str, Child] = {}
        self.apps: dict[str, Child] = {}
        self.agent_states: dict[str, dict[str, Any]] = {}
        self.envoy_pids: dict[str, int] = {}
        self.registered: set[str] = set()
        self.static_registered: dict[str, float] = {}  # sidecar-less pods the runner registered: id -> time
        self.services: list[dict[str, Any]] = []
        self.instance_items: list[dict[str, Any]] = []  # the registry's instances, as last read
        self._vip_table: dict[tuple[str, int], list[tuple[str, int]]] | None = None  # last synced to pods
        self.stop_requested = False
        self.force = False
        self.phase = "starting"
        self.error: str | None = None
        self.ready = False
        self.started = time.monotonic()
        self._last_status: Any = None
        self._next_services = 0.0

    # ------------------------------------------------------------------------------------ paths
    def path(self, *parts: str) -> str:
        return os.path.join(self.state_dir, *parts)

    @property
    def api_sock(self) -> str:
        return self.path("api.sock")

    @property
    def cp(self) -> Child | None:
        """Replica 0 of the control plane."""
        return self.cps[0] if self.cps else None

    def api_sock_of(self, replica: int) -> str:
        return self.path(api_socket_name(replica))

    def xds_sock_of(self, replica: int) -> str:
        return self.path("xds.sock" if replica == 0 else f"xds-{replica}.sock")

    @property
    def cps_running(self) -> bool:
        return bool(self.cps) and all(c.running for c in self.cps)

    # ------------------------------------------------------------------------------- preflight
    def preflight(self) -> LoadResult:
        """Everything checked before anything starts: input, mode, a mesh already running here."""
        result = load_files([self.mesh_file])  # raises InvalidConfig
        with open(self.mesh_file, encoding="utf-8") as f:
            self.mesh_text = f.read()
        self.resources = list(result.resources)
        self.pods = plan_pods(self.resources, self.mesh_dir)
        self._next_index = len(self.pods)
        self.mode = resolve_mode(self.requested_mode)
        pid = runner_alive(self.state_dir)
        if pid:
            raise RunnerError(f"a mesh is already running in {self.state_dir} (runner pid {pid}); "
                              f"stop it with `mizzen down --state-dir {self.state_dir}`")
        longest = max((len(self.path("pods", p.name, "admin.sock")) for p in self.pods), default=0)
        if max(longest, len(self.xds_sock_of(self.control_planes - 1))) > UNIX_PATH_MAX:
            raise RunnerError(f"state dir path too long for unix sockets ({UNIX_PATH_MAX} bytes max): "
                              f"use a shorter --state-dir")
        if self.mode == "netns" and any(p.sidecar for p in self.pods):
            blocked = untraversable(self.state_dir, ENVOY_UID)
            tmp = os.path.realpath(tempfile.gettempdir())
            while blocked and os.path.realpath(blocked).startswith(tmp + os.sep) and os.geteuid() == 0:
                # e.g. a mkdtemp() state dir (mode 700): let Envoy search it (o+x, no listing)
                os.chmod(blocked, os.stat(blocked).st_mode | 0o001)
                log.warning("made %s searchable by others (o+x) so Envoy (uid %d) reaches its files",
                            blocked, ENVOY_UID)
                blocked = untraversable(self.state_dir, ENVOY_UID)
            if blocked:
                raise RunnerError(f"Envoy runs as uid {ENVOY_UID} and cannot reach {self.state_dir}: {blocked} "
                                  f"is mode {os.stat(blocked).st_mode & 0o777:o}; use a --state-dir under "
                                  f"world-searchable directories (e.g. chmod o+x {blocked})")
        if len(self.pods) > 250 * 256:
            raise RunnerError("too many pods")
        return result

    # ----------------------------------------------------------------------------------- run
    def run(self) -> int:
        """Start, supervise until asked to stop, tear down. Returns the exit code."""
        if not self.pods and not self.resources:
            self.preflight()
        self._install_signals()
        code = 0
        try:
            self._prepare_state_dir()
            self.start()
            self.phase = "running"
            self.write_status()
            self.control = ControlServer(self, self.path(CONTROL_SOCKET))
            self.control.start()
            Reconciler(self).start()  # Workloads applied, scaled or deleted later (reconcile.py)
            self.loop()
        except Interrupted as e:
            log.info("%s", e)
            code = 130
        except RunnerError as e:
            self.error = str(e)
            self.phase = "failed"
            log.error("%s", e)
            code = 1
        except Exception as e:  # a bug: say what, still tear down
            self.error = f"{type(e).__name__}: {e}"
            self.phase = "failed"
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
        def on_stop(signum: int, frame: Any) -> None:
            if self.stop_requested:
                self.force = True
            self.stop_requested = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        if sys.stdin is not None and sys.stdin.isatty():
            signal.signal(signal.SIGHUP, on_stop)
        else:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _prepare_state_dir(self) -> None:
        os.makedirs(self.path("logs"), exist_ok=True)
        # a fresh mesh: what a previous run left (store, sockets, pods, namespaces) goes
        if self.mode == "netns" or netns.unavailable_reason() is None:
            left = netns.cleanup_mesh(self.meshid)
            if left:
                log.info("removed leftovers of a previous run: %s", ", ".join(left))
        for name in STATE_FILES:
            try:
                os.unlink(self.path(name))
            except FileNotFoundError:
                pass
        shutil.rmtree(self.path("pods"), ignore_errors=True)
        os.makedirs(self.path("pods"), exist_ok=True)
        with open(self.path(PID_FILE), "w") as f:
            f.write(f"{os.getpid()}\n")

    def _check_stop(self) -> None:
        if self.stop_requested:
            raise Interrupted("stopped before the mesh was up")

    # ---------------------------------------------------------------------------------- start
    def start(self) -> None:
        log.info("mesh %s: state dir %s, mode %s, %d pods", self.meshid, self.state_dir, self.mode,
                 len(self.pods))
        self.start_controlplane()
        self.apply()
        self.refresh_services()
        self.make_pods()
        for pod in self.pods:
            self.launch(pod)
        self.write_status()

    def start_controlplane(self) -> None:
        for i in range(self.control_planes):
            argv = [sys.executable, "-m", "mizzen.cli.main", "controlplane", "--state-dir", self.state_dir]
            if i > 0:
                argv += ["--xds-socket", self.xds_sock_of(i), "--api-socket", self.api_sock_of(i)]
            logname = "controlplane.log" if i == 0 else f"controlplane-{i}.log"
            cp = Child(replica_name(i), argv, self.path("logs", logname), env=env_without_proxies(), exec_argv=argv)
            self.cps.append(cp)
            cp.start()
            log.info("control plane %s started (pid %s), waiting for %s", cp.name, cp.pid, self.api_sock_of(i))
            self._wait_controlplane(cp, self.api_sock_of(i))
        log.info("control plane ready%s", f" ({self.control_planes} replicas)" if self.control_planes > 1 else "")

    def _wait_controlplane(self, cp: Child, sock: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            self._check_stop()
            if not cp.running:
                raise RunnerError(f"the control plane ({cp.name}) exited during start-up:\n"
                                  + tail(cp.log_path, 30))
            try:
                status, raw = unix_request(sock, "GET", "/healthz", timeout=5.0)
                if status == 200 and json.loads(raw).get("ready"):
                    break
            except (OSError, ValueError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise RunnerError(f"the control plane ({cp.name}) did not become healthy in {self.timeout:.0f}s:\n"
                                  + tail(cp.log_path, 30))
            time.sleep(0.1)

    def apply(self) -> None:
        try:
            out = self.api.apply([(self.mesh_file, self.mesh_text)])
        except ApiError as e:
            lines = [str(e)]
            for issue in e.body.get("errors") or []:
                lines.append("  " + (issue_text(issue)))
            raise RunnerError("the control plane rejected the mesh file: " + "\n".join(lines)) from None
        for w in out.get("warnings") or []:
            log.warning("apply: %s", w)
        log.info("applied %d resources (revision %s)", len(out.get("applied") or []), out.get("revision"))

    def refresh_services(self) -> bool:
        try:
            items = self.api.services()
        except API_ERRORS:
            return False
        items = sorted(items, key=lambda s: (s.get("namespace") or "", s.get("name") or "", s.get("hostname") or ""))
        if items == self.services:
            return False
        self.services = items
        if self.net is not None:
            if self.net.set_services(items):
                log.info("hosts files rewritten (%d services)", len(items))
        return True

    def make_pods(self) -> None:
        if self.mode == "netns":
            self.net = netns.MeshNet(self.meshid)
            self.net.services = list(self.services)
            self.net.create()
        for pod in self.pods:
            self._check_stop()
            self.make_pod(pod)
        log.info("%d pods made (%s)", len(self.pods), self.mode)

    def make_pod(self, pod: Pod) -> None:
        """The pod's dir, namespace (netns mode) or ports (loopback mode), and agent.json."""
        pod.dir = self.path("pods", pod.name)
        os.makedirs(pod.dir, exist_ok=True)
        if self.mode == "netns":
            assert self.net is not None
            pn = self.net.add_pod(pod.name, pod.index, namespace=pod.namespace, capture=pod.sidecar)
            pod.ip, pod.netns = pn.ip, pn.netns
            pod.port_map = {p: p for p in pod.ports}
            # the service VIPs lead somewhere (plainroutes.py): for a sidecar-less pod's connections, or
            # Envoy's passthrough ones
            self.net.set_vip_rules(pod.name, service_chain(vip_table(self.services, self.instance_items)))
        else:
            ports = free_ports(len(pod.ports) + 3)
            pod.ip = "127.0.0.1"
            pod.port_map = {p: ports[i] for i, p in enumerate(pod.ports)}
            pod.outbound_port, pod.inbound_port, pod.health_port = ports[-3:]
            pod.register_port_map = {p: pod.inbound_port for p in pod.ports}
        if pod.sidecar:
            write_json(os.path.join(pod.dir, "agent.json"), self.agent_config(pod))
            if self.mode == "netns":  # Envoy runs as uid 1337 and makes its admin socket here
                os.chown(pod.dir, ENVOY_UID, ENVOY_UID)

    def agent_config(self, pod: Pod) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "pod": pod.name, "namespace": pod.namespace, "workload": pod.workload, "labels": pod.labels,
            "ip": pod.ip, "ports": pod.ports, "serviceAccount": pod.service_account,
            "interception": self.mode, "outboundPort": pod.outbound_port, "inboundPort": pod.inbound_port,
            "portMap": {str(a): b for a, b in pod.port_map.items()},
            "xdsAddress": self._addresses(self.xds_sock_of), "apiAddress": self._addresses(self.api_sock_of),
            "adminSocket": os.path.join(pod.dir, "admin.sock"), "workDir": pod.dir,
            "concurrency": self.concurrency, "envoyUid": ENVOY_UID if self.mode == "netns" else None,
            "healthPort": pod.health_port, "drainSeconds": self.drain_seconds, "register": True,
        }
        if self.mode == "loopback":
            cfg["registerPortMap"] = {str(a): b for a, b in pod.register_port_map.items()}
        if pod.locality:
            cfg["locality"] = pod.locality
        return cfg

    def _addresses(self, sock_of: Callable[[int], str]) -> str | list[str]:
        """One address per control-plane replica (a plain string when there is one)."""
        out = [f"unix:{sock_of(i)}" for i in range(self.control_planes)]
        return out[0] if len(out) == 1 else out

    def launch(self, pod: Pod) -> None:
        """Start a pod's agent, then its app — at once unless the app is held until the sidecar is ready."""
        if pod.sidecar:
            self.agents[pod.name] = self._agent_child(pod)
            self.agents[pod.name].start()
        self.apps[pod.name] = self._app_child(pod)
        if not pod.sidecar or not pod.hold:
            self.apps[pod.name].start()

    def _agent_child(self, pod: Pod) -> Child:
        argv = [sys.executable, "-m", "mizzen.cli.main", "agent", "--config", os.path.join(pod.dir, "agent.json")]
        return Child(f"{pod.name}/agent", pod.argv(argv), os.path.join(pod.dir, "agent.log"),
                     env=env_without_proxies(), cwd=pod.dir, exec_argv=argv)

    def _app_child(self, pod: Pod) -> Child:
        env = env_without_proxies()
        env.update({"POD_NAME": pod.name, "POD_NAMESPACE": pod.namespace, "POD_IP": pod.ip,
                    "SERVICE_ACCOUNT": pod.service_account, "PYTHONUNBUFFERED": "1"})
        env.update(pod.env)
        if pod.ports:
            env["PORT"] = str(pod.port_map.get(pod.ports[0], pod.ports[0]))
            for p in pod.ports:
                env[f"PORT_{p}"] = str(pod.port_map.get(p, p))
        if self.mode == "loopback" and pod.sidecar:
            proxy = f"http://127.0.0.1:{pod.outbound_port}"
            env.update({"HTTP_PROXY": proxy, "http_proxy": proxy,
                        "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1"})
        return Child(f"{pod.name}/app", pod.argv(pod.command), os.path.join(pod.dir, "app.log"), env=env,
                     cwd=pod.cwd, exec_argv=list(pod.command))

    # ------------------------------------------------------------------------------ supervise
    def loop(self) -> None:
        ready_deadline = time.monotonic() + self.timeout
        warned = False
        while not self.stop_requested:
            self.step()
            if not self.ready and not warned and time.monotonic() > ready_deadline:
                warned = True
                log.warning("not ready after %.0fs: %s", self.timeout, "; ".join(not_ready_reasons(self.status())))
            time.sleep(POLL_SECONDS)
        log.info("stopping")

    def step(self) -> None:
        with self.lock:
            self._step()

    def _step(self) -> None:
        now = time.monotonic()
        for cp in self.cps:
            cp.check(now)
        for pod in list(self.pods):
            if pod.stopping:
                continue
            agent = self.agents.get(pod.name)
            app = self.apps[pod.name]
            if agent is not None:
                if agent.check(now):
                    self.agent_states.pop(pod.name, None)
                st = self._agent_state(pod, agent)
                if st is not None:
                    self.agent_states[pod.name] = st
                    epid = envoy_pid_of(st)
                    if epid:
                        self.envoy_pids[pod.name] = epid
                if app.popen is None and app.last_exit is None and self.agent_states.get(pod.name, {}).get("state") == "ready":
                    log.info("%s: sidecar ready, starting the app", pod.name)
                    app.start()
                    continue
            if app.popen is not None or app.last_exit is not None:
                app.check(now)
            if not pod.sidecar:
                self._register_static(pod, now)
        if now >= self._next_services:
            self._next_services = now + SERVICES_POLL_SECONDS
            self.refresh_services()
            self.refresh_instances()
            self.sync_vip_rules()
        st = self.status()
        if st["ready"] and not self.ready:
            self.ready = True
            log.info("mesh ready in %.1fs", now - self.started)
            if self.on_ready:
                self.on_ready(st)
            else:
                for line in summary_lines(st):
                    log.info("%s", line)
        self.write_status(st)

    def _agent_state(self, pod: Pod, agent: Child) -> dict[str, Any] | None:
        """agent.state, unless it predates the running agent (a crashed agent's last word)."""
        path = os.path.join(pod.dir, "agent.state")
        try:
            if os.stat(path).st_mtime < agent.started_wall - 1.0:
                return None
        except OSError:
            return None
        return read_json(path)

    def refresh_instances(self) -> None:
        try:
            items = self.api.instances()
        except API_ERRORS:
            return
        self.instance_items = items
        self.registered = {str(i.get("id")) for i in items}

    def _register_static(self, pod: Pod, now: float) -> None:
        """A pod without a sidecar has no agent to register it: the runner does, once the app listens."""
        if not pod.ports:
            return
        app = self.apps[pod.name]
        listening = app.running and all(p in netns.listening_ports(app.pid) for p in pod.app_ports)
        iid = pod.instance_id
        if listening and now - self.static_registered.get(iid, -1e9) >= REGISTER_REFRESH_SECONDS:
            inst = {
                "id": iid, "namespace": pod.namespace, "workload": pod.workload, "address": pod.ip,
                "ports": pod.ports, "labels": pod.labels, "healthy": True, "sidecar": False,
                "locality": pod.locality, "serviceAccount": pod.service_account, "source": "static",
                "portMap": {str(a): b for a, b in pod.port_map.items() if a != b},
            }
            try:
                self.api.put_instance(inst)
                if iid not in self.static_registered:
                    log.info("%s: registered (no sidecar)", pod.name)
                self.static_registered[iid] = now
            except API_ERRORS as e:
                log.warning("%s: cannot register: %s", pod.name, e)
        elif not listening and iid in self.static_registered:
            self._deregister(iid)

    def _deregister(self, iid: str) -> None:
        self.static_registered.pop(iid, None)
        try:
            self.api.delete_instance(iid)
        except API_ERRORS:
            pass

    # --------------------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        comps: list[dict[str, Any]] = []
        for i, cp in enumerate(self.cps):
            comps.append({"name": cp.name, "kind": "controlplane", "pid": cp.pid, "replica": i,
                          "address": f"unix:{self.api_sock_of(i)}", "xdsAddress": f"unix:{self.xds_sock_of(i)}",
                          "state": cp.state(), "restarts": cp.restarts, "log": cp.log_path,
                          "cmdline": cp.exec_argv})
        pods_out = []
        all_ready = self.phase == "running" and self.cps_running
        for pod in self.pods:
            agent, app = self.agents.get(pod.name), self.apps.get(pod.name)
            registered = pod.instance_id in self.registered
            pod_ready = True
            if agent is not None:
                ast = self.agent_states.get(pod.name) or {}
                astate = ast.get("state", "starting") if agent.running else agent.state()
                comps.append({"name": f"{pod.name}/agent", "kind": "agent", "pod": pod.name, "pid": agent.pid,
                              "address": f"{pod.ip}:{ast.get('healthPort') or pod.health_port}", "state": astate,
                              "restarts": agent.restarts, "log": agent.log_path, "cmdline": agent.exec_argv})
                epid = self.envoy_pids.get(pod.name)
                comps.append({"name": f"{pod.name}/envoy", "kind": "envoy", "pod": pod.name, "pid": epid,
                              "epoch": ast.get("epoch"), "binary": ast.get("envoyBinary"),
                              "address": f"unix:{os.path.join(pod.dir, 'admin.sock')}",
                              "state": "running" if epid and alive(epid) else ("starting" if agent.running else "stopped"),
                              "log": os.path.join(pod.dir, "envoy.log")})
                pod_ready = pod_ready and agent.running and astate == "ready"
            if app is not None:
                comps.append({"name": f"{pod.name}/app", "kind": "app", "pod": pod.name, "pid": app.pid,
                              "address": ",".join(f"{pod.ip}:{p}" for p in pod.app_ports),
                              "state": "waiting-for-sidecar" if app.state() == "pending" and agent else app.state(),
                              "restarts": app.restarts, "lastExit": app.last_exit, "log": app.log_path,
                              "cmdline": app.exec_argv})
                pod_ready = pod_ready and app.running
            if pod.ports:
                pod_ready = pod_ready and registered
            all_ready = all_ready and (pod_ready or pod.stopping)
            pods_out.append({
                "name": pod.name, "workload": pod.workload, "namespace": pod.namespace, "labels": pod.labels,
                "ip": pod.ip, "netns": pod.netns, "sidecar": pod.sidecar, "ports": pod.ports,
                "portMap": {str(a): b for a, b in pod.port_map.items()},
                "outboundPort": pod.outbound_port if pod.sidecar else None,
                "inboundPort": pod.inbound_port if pod.sidecar else None,
                "dir": pod.dir, "registered": registered, "ready": pod_ready,
                "generation": pod.generation, "terminating": pod.stopping,
                "holdApplicationUntilProxyStarts": pod.hold,
            })
        return {
            "meshId": self.meshid, "stateDir": self.state_dir, "meshFile": self.mesh_file, "mode": self.mode,
            "phase": self.phase, "error": self.error, "ready": bool(all_ready and self.pods is not None),
            "runner": {"pid": os.getpid()},
            "components": comps, "pods": pods_out,
        }

    def write_status(self, st: dict[str, Any] | None = None) -> None:
        st = st if st is not None else self.status()
        if st == self._last_status:
            return
        self._last_status = st
        st = dict(st, updatedAt=time.time())
        if os.path.isdir(self.state_dir):
            write_json(self.path(STATUS_FILE), st)

    # ------------------------------------------------------------------------------- teardown
    def teardown(self) -> None:
        self.phase = "stopping"
        self._ignore_signals_for_teardown()
        self.write_status()
        grace = 1.0 if self.force else 5.0
        if self.control is not None:
            self.control.stop()
        # the orderly stop of every pod: withdraw all, wait (bounded) until callers' proxies dropped them,
        # stop the apps, then the agents (they drain and stop Envoy); namespaces go in step 4
        with self.lock:
            pods = list(self.pods)
        if any(c.running for c in self.cps) and not self.force:
            self.withdraw_pods(pods)
            if any(p.ports for p in pods):
                self.wait_endpoints(remove=[p for p in pods if p.ports], timeout=min(self.withdraw_timeout, 5.0))
        apps = [c for c in self.apps.values()]
        for c in apps:
            c.stop(signal.SIGTERM, group=True)
        self._wait_children(apps, grace, group=True)
        for iid in list(self.static_registered):
            self._deregister(iid)
        agents = list(self.agents.values())
        for c in agents:
            c.stop(signal.SIGTERM)
        self._wait_children(agents, (1.0 if self.force else self.drain_seconds + 15.0), group=True)
        left = [p for p in self.envoy_pids.values() if alive(p)]
        for pid in left:
            if any("envoy" in a for a in cmdline(pid)):
                signal_pid(pid, signal.SIGKILL)
        # 3. the control plane
        for cp in self.cps:
            cp.stop(signal.SIGTERM)
        if self.cps:
            self._wait_children(list(self.cps), grace, group=True)
        # 4. the namespaces (and whatever still runs in them)
        if self.mode == "netns":
            try:
                if self.net is not None:
                    self.net.teardown()
                else:
                    netns.cleanup_mesh(self.meshid)
            except netns.NetnsError as e:
                log.error("namespace teardown: %s", e)
        self.phase = "failed" if self.error else "stopped"
        self.write_status()
        try:
            if read_pid(self.state_dir) == os.getpid():
                os.unlink(self.path(PID_FILE))
        except OSError:
            pass
        log.info("mesh %s stopped", self.meshid)

    def _ignore_signals_for_teardown(self) -> None:
        def on_signal(signum: int, frame: Any) -> None:
            self.force = True

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


__all__ = ["Runner", "RunnerError", "resolve_mode", "live_status", "stop_mesh",
           "summary_lines", "not_ready_reasons", "failing_logs", "read_json", "runner_alive", "InvalidConfig",
           "STATUS_FILE", "PID_FILE", "setup_logging"]
