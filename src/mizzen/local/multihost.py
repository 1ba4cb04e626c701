"""`mizzen up` of a mesh file with hosts (local/hosts.py): one machine playing several, exactly as they would run.

    MultiHostRunner (this runner, in the machine's namespace; state dir STATE)
     ├─ HostsNetwork              the hosts' namespaces on a private bridge (10.250.0.0/24)
     ├─ etcd members              on the hosts with `etcd: true` (STATE/etcd), unless --store names a cluster
     ├─ control plane(s)          in the control-plane host's namespace: xDS on <ip>:15010+i, REST on <ip>:15080+i,
     │                            Consul API on <ip>:8500, and STATE/api.sock, xds.sock as usual (the CLI)
     └─ per host with workloads:  `mizzen up MESH --host NAME --join <ip>:15080 --xds <ip>:15010 ...` run inside
                                  the host's namespace: a runner of its own (STATE/hosts/NAME), its pods on a
                                  bridge behind the host's gateway (10.244.<i>.0/24), sidecars on TCP xDS

The mesh file is applied once, to the control plane; each host runner runs the Workloads placed on it (and
follows the store, as any runner does). `status.json` merges the host runners' pods and components (each
named with its `host`), so `mizzen status`, `exec` and `proxy-status` work from STATE. Operations
(`rollout restart`, `scale`, `proxy upgrade`) are passed to the runner of the host the workload runs on.
Teardown: host runners first (each stops its pods in order), then the control planes, etcd, the hosts.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import sys
import threading
import time
from typing import Any, Callable

from ..api import LoadResult, Resource, load_sources
from ..client import ApiClient, HttpError, RunnerClient, StateLayout
from ..client.errors import ClientError
from ..manifests import read_inputs
from ..server.backends import display_url
from . import netns
from .control import ControlServer
from .hosts import (API_PORT, CA_PORT, CONSUL_PORT, HOSTS_NETWORK, PODS_NETWORK, XDS_PORT, HostPlan, HostsNetwork,
                    control_plane_host, plan_hosts)
from .launcher import ProcessLauncher
from .meshstate import issue_text, read_json, read_pid, runner_alive, summary_lines, write_json, write_private
from .options import LISTENER_DRAIN_SECONDS, Options
from .pods import OperationError, RunnerError
from .procs import Child, env_without_proxies, wait_children
from .protocols import Progress
from .runner import Interrupted, install_stop_signals, resolve_mode
from .table import MeshInfo, PodTable, status_of

log = logging.getLogger("mizzen.local")

LOOP_SECONDS = 0.5


class MultiHostRunner:
    """Same surface as `Runner` for `mizzen up` (preflight, run, on_ready) and the control channel."""

    def __init__(self, mesh_file: str, state_dir: str, *, mode: str = "auto", concurrency: int = 1,
                 timeout: float = 120.0, drain_seconds: float = 2.0,
                 listener_drain_seconds: float = LISTENER_DRAIN_SECONDS, withdraw_timeout: float = 10.0,
                 app_stop_seconds: float = 10.0, on_ready: Callable[[dict[str, Any]], None] | None = None,
                 control_planes: int = 1, store_url: str | None = None, consul_api: str | None = "auto",
                 trust_domain: str = "cluster.local", cert_ttl_seconds: float = 24 * 3600.0,
                 outbound_traffic_policy: str = "ALLOW_ANY", ratelimit: bool = True, ratelimit_replicas: int = 1,
                 ratelimit_redis: str | None = None):
        self.mesh_file = os.path.abspath(mesh_file)
        self.layout = StateLayout(state_dir)
        self.state_dir = self.layout.root
        self.requested_mode = mode
        self.consul_request = consul_api
        self.options = Options(concurrency=concurrency, timeout=timeout, drain_seconds=drain_seconds,
                               listener_drain_seconds=listener_drain_seconds,
                               withdraw_timeout=withdraw_timeout, app_stop_seconds=app_stop_seconds,
                               control_planes=control_planes, store_url=store_url, trust_domain=trust_domain,
                               cert_ttl_seconds=cert_ttl_seconds, outbound_traffic_policy=outbound_traffic_policy,
                               ratelimit=ratelimit, ratelimit_replicas=ratelimit_replicas,
                               ratelimit_redis=ratelimit_redis)
        self.on_ready = on_ready
        self.table = PodTable(MeshInfo(netns.mesh_id(self.state_dir), self.state_dir, self.mesh_file, mode,
                                       store=display_url(store_url)))
        self.op_lock = threading.Lock()
        self.api = ApiClient(self.state_dir, replicas=control_planes, timeout=10.0)
        self.hosts: list[HostPlan] = []
        self.resources: list[Resource] = []
        self.mesh_text = ""
        self.network: HostsNetwork | None = None
        self.cluster: Any = None  # etcd.cluster.LocalCluster of the mesh's own members
        self.host_runners: dict[str, Child] = {}
        self.host_tokens: dict[str, str] = {}  # host name -> id of the token its runner uses
        self.control: ControlServer | None = None
        self.launcher = ProcessLauncher(self.table, self.options)
        self._last_status: Any = None

    @property
    def phase(self) -> str:
        return self.table.run.phase

    # ------------------------------------------------------------------------------- preflight
    def preflight(self) -> LoadResult:
        sources = read_inputs([self.mesh_file])
        result = load_sources(sources)
        self.mesh_text = sources[0][1]
        self.resources = list(result.resources)
        hosts = plan_hosts(self.resources)
        if hosts is None:
            raise RunnerError(f"{self.mesh_file} places nothing on hosts (no Host, no Workload spec.host)")
        self.hosts = hosts
        if resolve_mode(self.requested_mode) != "netns":
            raise RunnerError("a mesh with hosts runs each host in a network namespace: it needs netns mode (root)")
        self.table.info.mode = "netns"
        pid = runner_alive(self.state_dir)
        if pid:
            raise RunnerError(f"a mesh is already running in {self.state_dir} (runner pid {pid}); "
                              f"stop it with `mizzen down --state-dir {self.state_dir}`")
        cp = control_plane_host(hosts)
        etcd_hosts = [h for h in hosts if h.etcd]
        store = self.options.store_url
        if store is None and etcd_hosts:
            store = "etcd://" + ",".join(f"{h.ip}:2379" for h in etcd_hosts) + "/mizzen/"
        consul = None if self.consul_request in (None, "", "off", "0") else \
            (f"{cp.ip}:{CONSUL_PORT}" if self.consul_request == "auto" else self.consul_request)
        self.options = dataclasses.replace(self.options, store_url=store, consul_api=consul,
                                           cp_netns=cp.netns(self.table.info.meshid), cp_address=cp.ip)
        self.launcher = ProcessLauncher(self.table, self.options)
        self.table.info.store, self.table.info.consul_api = display_url(store), consul
        return result

    # ------------------------------------------------------------------------------------- run
    def run(self) -> int:
        if not self.hosts:
            self.preflight()
        self.table.info.runner_pid = os.getpid()
        self._install_signals()
        code = 0
        run = self.table.run
        try:
            self._prepare_state_dir()
            self.start()
            run.phase = "running"
            self.write_status()
            self.control = ControlServer(self, self.layout.runner_socket)
            self.control.start()
            self.loop()
        except Interrupted as e:
            log.info("%s", e)
            code = 130
        except RunnerError as e:
            run.error, run.phase = str(e), "failed"
            log.error("%s", e)
            code = 1
        except Exception as e:
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

    def _check_stop(self) -> None:
        if self.table.run.stop_requested:
            raise Interrupted("stopped before the mesh was up")

    def _prepare_state_dir(self) -> None:
        os.makedirs(self.layout.logs_dir, exist_ok=True)
        meshid = self.table.info.meshid
        left = netns.cleanup_mesh(meshid)
        for name in self.layout.host_names():  # host runners of a previous run
            left += netns.cleanup_mesh(netns.mesh_id(self.layout.host(name).root))
        if left:
            log.info("removed leftovers of a previous run: %s", ", ".join(left))
        for path in self.layout.previous_run_files():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        shutil.rmtree(self.layout.hosts_dir, ignore_errors=True)
        shutil.rmtree(self.layout.etcd_dir, ignore_errors=True)
        os.makedirs(self.layout.hosts_dir, exist_ok=True)
        with open(self.layout.runner_pid, "w") as f:
            f.write(f"{os.getpid()}\n")

    def start(self) -> None:
        meshid = self.table.info.meshid
        log.info("mesh %s: %d hosts, state dir %s", meshid, len(self.hosts), self.state_dir)
        self.network = HostsNetwork(meshid, self.hosts)
        self.network.create()
        self._check_stop()
        etcd_hosts = [h for h in self.hosts if h.etcd]
        if etcd_hosts and not self._external_store():
            from ..etcd.cluster import ClusterError, LocalCluster

            self.cluster = LocalCluster(self.layout.etcd_dir)
            try:
                self.cluster.up(len(etcd_hosts), timeout=self.options.timeout,
                                placement=[(h.name, h.netns(meshid), h.ip) for h in etcd_hosts])
            except ClusterError as e:
                raise RunnerError(f"the mesh's etcd cluster did not start: {e}") from None
            log.info("etcd members on %s", ", ".join(f"{h.name} ({h.ip})" for h in etcd_hosts))
        self.launcher.start_controlplanes(self._check_stop)
        self._apply()
        for h in self.hosts:
            self._check_stop()
            if h.workloads:
                self._start_host_runner(h)

    def _external_store(self) -> bool:
        return self.options.store_url is not None and not self.options.store_url.startswith(
            "etcd://" + ",".join(f"{h.ip}:2379" for h in self.hosts if h.etcd) + "/")

    def _apply(self) -> None:
        try:
            out = self.api.apply([(self.mesh_file, self.mesh_text)])
        except HttpError as e:
            lines = [str(e)] + ["  " + issue_text(i) for i in e.body.get("errors") or []]
            raise RunnerError("the control plane rejected the mesh file: " + "\n".join(lines)) from None
        log.info("applied %d resources (revision %s)", len(out.get("applied") or []), out.get("revision"))

    def _provision_host(self, h: HostPlan) -> None:
        """What a host needs to join a secured mesh, in its state dir, as an operator would copy it to a machine:
        an admin token of its own (`admin.token`, 0600, named `host/NAME`; revoked at teardown) and the mesh
        root (`ca/root-cert.pem`) its runner checks the control planes' TLS certificate against."""
        layout = self.layout.host(h.name)
        try:
            out = self.api.request("POST", "/api/v1/tokens", {"admin": True, "name": f"host/{h.name}",
                                                               "namespaces": [], "readOnly": False})
            root = str(self.api.ca_info()["rootCert"])
        except ClientError as e:
            raise RunnerError(f"host {h.name}: cannot get a token from the control plane: {e}") from None
        self.host_tokens[h.name] = str(out["id"])
        os.makedirs(os.path.dirname(layout.admin_token), mode=0o700, exist_ok=True)
        write_private(layout.admin_token, str(out["token"]))
        os.makedirs(os.path.join(layout.root, "ca"), exist_ok=True)
        with open(os.path.join(layout.root, "ca", "root-cert.pem"), "w") as f:
            f.write(root)

    def _revoke_host_tokens(self) -> None:
        for name, token_id in list(self.host_tokens.items()):
            try:
                self.api.request("DELETE", f"/api/v1/tokens/{token_id}", timeout=3.0)
                del self.host_tokens[name]
            except ClientError as e:
                log.warning("host %s: could not revoke its token %s (%s): `mizzen token revoke %s`", name,
                            token_id, e, token_id)

    def _start_host_runner(self, h: HostPlan) -> None:
        cp = control_plane_host(self.hosts)
        self._provision_host(h)
        n, o = self.options.control_planes, self.options
        argv = [sys.executable, "-m", "mizzen.cli.main", "up", self.mesh_file,
                "--state-dir", self.layout.host(h.name).root, "--mode", "netns", "--consul-api", "off",
                "--host", h.name, "--default-host", cp.name,
                "--join", ",".join(f"{cp.ip}:{API_PORT + i}" for i in range(n)),
                "--xds", ",".join(f"{cp.ip}:{XDS_PORT + i}" for i in range(n)),
                "--ca", ",".join(f"{cp.ip}:{CA_PORT + i}" for i in range(n)),
                "--pod-subnet", h.subnet, "--route", PODS_NETWORK, "--route", str(HOSTS_NETWORK),
                "--exclude-outbound", f"{cp.ip}/32",
                "--envoy-concurrency", str(o.concurrency), "--timeout", str(o.timeout),
                "--drain-seconds", str(o.drain_seconds), "--listener-drain-seconds", str(o.listener_drain_seconds),
                "--withdraw-timeout", str(o.withdraw_timeout),
                "--app-stop-seconds", str(o.app_stop_seconds),
                # the host's own rate-limit service (in-memory counters unless a shared Redis is named)
                "--ratelimit" if o.ratelimit else "--no-ratelimit"]
        if o.ratelimit_redis and o.ratelimit_redis != "managed":
            argv += ["--ratelimit-redis", o.ratelimit_redis, "--ratelimit-replicas", str(o.ratelimit_replicas)]
        # nsenter, not `ip netns exec`: the latter gives the process a mount namespace of its own, and the pod
        # namespaces the host runner makes (/run/netns bind mounts) would be invisible outside it
        enter = ["nsenter", f"--net={os.path.join(netns.NETNS_DIR, h.netns(self.table.info.meshid))}", "--"]
        child = Child(f"host/{h.name}", enter + argv,
                      self.layout.host_log(h.name), env=env_without_proxies(), exec_argv=argv, restart=False)
        self.host_runners[h.name] = child
        child.start()
        log.info("host %s (%s): runner pid %s for %s", h.name, h.ip, child.pid, ", ".join(h.workloads))

    def loop(self) -> None:
        while not self.table.run.stop_requested:
            now = time.monotonic()
            with self.table.lock:
                for cp in self.table.cps:
                    cp.check(now)
            for name, child in self.host_runners.items():
                if child.running and not child.poll():
                    log.error("the runner of host %s exited (%s); see %s", name, child.popen and
                              child.popen.returncode, child.log_path)
            st = self.status()
            if st["ready"] and not self.table.run.ready:
                self.table.run.ready = True
                if self.on_ready:
                    self.on_ready(st)
                else:
                    for line in summary_lines(st):
                        log.info("%s", line)
            self.write_status(st)
            time.sleep(LOOP_SECONDS)
        log.info("stopping")

    # ------------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """The control planes' status, with every host runner's pods and components merged in."""
        with self.table.lock:
            st = status_of(self.table)
        ready = st["ready"]
        hosts_out = []
        cp = control_plane_host(self.hosts) if self.hosts else None
        for h in self.hosts:
            child = self.host_runners.get(h.name)
            sub = read_json(self.layout.host(h.name).status_file) if child else None
            entry: dict[str, Any] = {"name": h.name, "ip": h.ip, "podSubnet": h.subnet,
                                     "controlPlane": h.control_plane, "etcd": h.etcd,
                                     "netns": h.netns(self.table.info.meshid), "workloads": list(h.workloads)}
            if child is not None:
                entry.update({"runnerPid": child.pid, "stateDir": self.layout.host(h.name).root,
                              "phase": (sub or {}).get("phase", "starting"), "ready": bool((sub or {}).get("ready"))})
                st["components"].append({"name": f"host/{h.name}", "kind": "host-runner", "pid": child.pid,
                                         "address": h.ip, "state": "running" if child.running else "stopped",
                                         "log": child.log_path, "cmdline": child.exec_argv})
                ready = ready and child.running and entry["ready"]
                for c in (sub or {}).get("components", []):
                    st["components"].append({**c, "host": h.name})
                for p in (sub or {}).get("pods", []):
                    st["pods"].append({**p, "host": h.name})
            hosts_out.append(entry)
        if self.cluster is not None:
            for m, h in zip(self.cluster.members, [x for x in self.hosts if x.etcd]):
                st["components"].append({"name": f"etcd/{m.name}", "kind": "etcd", "pid": m.pid,
                                         "address": m.endpoint, "host": h.name, "state": "running",
                                         "log": str(self.cluster.dir / f"{m.name}.log")})
        for c in st["components"]:
            if c.get("kind") == "controlplane" and cp is not None:
                c.update({"host": cp.name, "tcpAddress": f"{cp.ip}:{API_PORT + c.get('replica', 0)}",
                          "xdsTcpAddress": f"{cp.ip}:{XDS_PORT + c.get('replica', 0)}"})
        st.update({"ready": bool(ready), "hosts": hosts_out})
        return st

    def write_status(self, st: dict[str, Any] | None = None) -> None:
        st = st if st is not None else self.status()
        if st == self._last_status:
            return
        self._last_status = st
        if os.path.isdir(self.state_dir):
            write_json(self.layout.status_file, dict(st, updatedAt=time.time()))

    # ------------------------------------------------------------------- ControlTarget
    def _forward(self, path: str, body: dict[str, Any], progress: Progress) -> Any:
        workload, namespace = body["workload"], body.get("namespace")
        for h in self.hosts:
            sub = read_json(self.layout.host(h.name).status_file) or {}
            if any(p.get("workload") == workload and (namespace is None or p.get("namespace") == namespace)
                   for p in sub.get("pods", [])) or f"{namespace or 'default'}/{workload}" in h.workloads:
                progress(f"host {h.name}: {path} {workload}")
                done: dict[str, Any] | None = None
                try:
                    for ev in RunnerClient(self.layout.host(h.name).runner_socket).operation(path, body):
                        if ev.get("event") == "progress":
                            progress(str(ev.get("message", "")))
                        elif ev.get("event") == "done":
                            done = ev
                except ClientError as e:
                    raise OperationError(f"host {h.name}: {e}") from None
                if done is None or not done.get("ok"):
                    raise OperationError(f"host {h.name}: {(done or {}).get('error') or 'no answer'}")
                return done.get("result")
        raise OperationError(f"no host runs workload {workload!r}")

    def rollout_restart(self, workload: str, namespace: str | None, progress: Progress) -> list[str]:
        return self._forward("/rollout/restart", {"workload": workload, "namespace": namespace}, progress)

    def scale(self, workload: str, namespace: str | None, replicas: int, progress: Progress) -> list[str]:
        return self._forward("/scale", {"workload": workload, "namespace": namespace, "replicas": replicas},
                             progress)

    def proxy_upgrade(self, workload: str, namespace: str | None, envoy: str | None,
                      progress: Progress) -> list[dict[str, Any]]:
        return self._forward("/proxy/upgrade", {"workload": workload, "namespace": namespace, "envoy": envoy},
                             progress)

    # ---------------------------------------------------------------------------- teardown
    def teardown(self) -> None:
        t = self.table
        t.run.phase = "stopping"
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, lambda s, f: setattr(t.run, "force", True))
            except ValueError:
                pass
        self.write_status()
        if self.control is not None:
            self.control.stop()
        runners = [c for c in self.host_runners.values() if c.poll()]
        for c in runners:  # each stops its pods in order (withdraw, wait, apps, sidecars)
            c.stop(signal.SIGTERM)
        wait_children(runners, 5.0 if t.run.force else self.options.withdraw_timeout + self.options.drain_seconds
                      + self.options.app_stop_seconds + 30.0, group=True, force=t.run.force)
        self._revoke_host_tokens()
        self.launcher.stop_controlplanes(1.0 if t.run.force else 5.0)
        if self.cluster is not None:
            self.cluster.down(purge=True)
        if self.network is not None:
            self.network.teardown()
        left = netns.cleanup_mesh(t.info.meshid)
        for name in self.layout.host_names():
            left += netns.cleanup_mesh(netns.mesh_id(self.layout.host(name).root))
        if left:
            log.warning("removed what was left: %s", ", ".join(left))
        t.run.phase = "failed" if t.run.error else "stopped"
        self._last_status = None
        self.write_status()
        try:
            if read_pid(self.state_dir) == os.getpid():
                os.unlink(self.layout.runner_pid)
        except OSError:
            pass
        log.info("mesh %s stopped", t.info.meshid)
