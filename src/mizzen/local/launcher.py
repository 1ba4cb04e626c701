"""The processes of a local mesh: the control-plane replicas, and per pod its agent (with Envoy) and its app.

`ProcessLauncher` is the runner's `Launcher` (protocols.py): it makes a pod's dir and `agent.json` (from the
`AgentConfig` dataclass the agent reads), starts the agent and the app as `Child` processes recorded in the
`PodTable`, and does the process-level steps of an orderly stop: ask the agent to withdraw, count what is in
flight, stop apps, stop sidecars.

Security: a pod with a sidecar gets its own credential (issued by the control plane, `pods/<pod>/secrets/`,
readable by its agent only — the agent registers the pod's instance with it; revoked when the pod goes).
As root, an app runs as its user (`Pod.app_user`: the Workload's securityContext or the mesh's app user) with
its own $HOME (`pods/<pod>/home`, 0700), so it can read neither the CA's keys, the admin credential nor any
pod's credential, and cannot connect to the API socket. Every pod's app gets a credential of its own instead
(`pods/<pod>/app-secrets/token`, readable by that app's uid only; `$MIZZEN_TOKEN_FILE`): read-only, scoped to
the config that routes its calls (server/auth.py), accepted on the pods' socket `pod-api.sock` only — what
`mizzen.sdk` in the pod reads the mesh with. It is revoked with the pod.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import stat
import sys
import time
from typing import Any, Callable, Sequence

from ..agent.config import AgentConfig, AgentConfigError, load_config
from ..ca.credentials import provision_app, provision_pod
from ..client import (ENVOY_UID, Address, AgentControl, ApiClient, ClientError, EnvoyAdmin, HttpError, StateLayout,
                      replica_name)
from ..envoybin import remove_hot_restart_memory
from ..model.types import labels_tuple
from ..proxyless.bootstrap import grpc_bootstrap
from . import netns
from .meshstate import write_json
from .options import Options
from .pods import OperationError, Pod, RunnerError, path_for, searchable_by
from .procs import Child, alive, cmdline, env_without_proxies, signal_pid, tail, wait_children
from .table import PodTable

log = logging.getLogger("mizzen.local")

_ACTIVE_RQ = "/stats?format=json&filter=%5Ehttp%5C..*%5C.downstream_rq_active%24"


def _addresses(sockets: Sequence[str]) -> str | tuple[str, ...]:
    """One address per control-plane replica (a plain string when there is one)."""
    out = tuple(f"unix:{s}" for s in sockets)
    return out[0] if len(out) == 1 else out


def _join(addresses: tuple[str, ...]) -> str | tuple[str, ...] | None:
    """A host runner's pods reach the control planes over TCP (one address per replica)."""
    if not addresses:
        return None
    return addresses[0] if len(addresses) == 1 else addresses


def agent_config(pod: Pod, layout: StateLayout, options: Options, mode: str, trust_domain: str | None = None
                 ) -> AgentConfig:
    """The pod's agent.json, as the agent will read it. `trust_domain`: the pod has a credential and gets a
    workload certificate from the control plane's certificate service (None: no certificate, no mTLS)."""
    files = layout.pod(pod.name)
    netns_mode = mode == "netns"
    # a gateway's Envoy binds its host ports in the runner's (the host's) network namespace, which takes
    # CAP_SYS_ADMIN: it runs as root (it captures nothing, so it needs no uid of its own)
    envoy_uid = ENVOY_UID if netns_mode and not pod.gateway else None
    cfg = AgentConfig(
        pod=pod.name, namespace=pod.namespace, workload=pod.workload, labels=labels_tuple(pod.labels), ip=pod.ip,
        ports=tuple(pod.ports), service_account=pod.service_account, locality=pod.locality, interception=mode,
        outbound_port=pod.outbound_port, inbound_port=pod.inbound_port,
        port_map=tuple(sorted(pod.port_map.items())),
        register_port_map=() if netns_mode else tuple(sorted(pod.register_port_map.items())),
        xds_address=_join(options.join_xds) or _addresses(layout.xds_sockets(options.control_planes)),
        api_address=_join(options.join_api_urls) or _addresses(layout.api_sockets(options.control_planes)),
        admin_socket=files.admin_socket, control_socket=files.agent_socket, sds_socket=files.sds_socket,
        work_dir=files.path,
        concurrency=options.concurrency, envoy_uid=envoy_uid, envoy_gid=envoy_uid,
        health_host="0.0.0.0" if netns_mode else "127.0.0.1",
        health_port=pod.health_port, drain_seconds=options.drain_seconds,
        listener_drain_seconds=options.listener_drain_seconds, register=True,
        ca_address=(_join(options.join_ca) or _addresses(layout.ca_sockets(options.control_planes)))
        if trust_domain else None,
        trust_domain=trust_domain or "cluster.local",
        telemetry=True, traces_address=f"unix:{layout.traces_socket}", app_metrics_url=pod.app_metrics_url(),
        ratelimit_address=_addresses(layout.ratelimit_sockets(options.ratelimit_replicas))
        if options.ratelimit else None,
        gateway=pod.gateway, host_ports=tuple(sorted(pod.host_ports.items())),
        host_netns=f"/proc/{os.getpid()}/ns/net" if netns_mode and pod.gateway else "",
    )
    cfg.validate()
    return cfg


def joined_api(state_dir: str, options: Options, timeout: float) -> ApiClient:
    """A host runner's client of the control planes it joined: TLS over TCP, checked against the mesh root in its
    state dir (`ca/root-cert.pem`), with the token in its state dir (`admin.token`) — both put there by whoever
    started the host (the multi-host runner, or an operator on a real machine: docs/distributed.md)."""
    return ApiClient(state_dir, addresses=list(options.join_api_urls), timeout=timeout)


def controlplane_backend_args(options: Options, replica: int) -> list[str]:
    """The store every replica shares (etcd URL, TLS files in its query), the Consul API (replica 0), and on a
    multi-host mesh the TCP addresses the hosts' sidecars reach it at (local/hosts.py's ports)."""
    from .hosts import API_PORT, CA_PORT, XDS_PORT

    out = ["--store", options.store_url] if options.store_url else []
    if options.consul_api and replica == 0:
        out += ["--consul-api", options.consul_api]
    if options.cp_address:
        out += ["--xds-port", f"{options.cp_address}:{XDS_PORT + replica}",
                "--api-port", f"{options.cp_address}:{API_PORT + replica}",
                "--ca-port", f"{options.cp_address}:{CA_PORT + replica}"]
    return out


class ProcessLauncher:
    def __init__(self, table: PodTable, options: Options):
        self.table = table
        self.options = options
        self.layout = table.info.layout
        self.api = joined_api(self.layout.root, options, 10.0) if options.joined else \
            ApiClient(self.layout.root, replicas=options.control_planes, timeout=10.0)  # admin

    # ------------------------------------------------------------------ control plane
    def start_controlplanes(self, check_stop: Callable[[], None]) -> None:
        """Start every replica, each once the one before answers `GET /healthz` ready."""
        n = self.options.control_planes
        for i in range(n):
            argv = [sys.executable, "-m", "mizzen.cli.main", "controlplane", "--state-dir", self.layout.root,
                    "--replica", str(i), "--trust-domain", self.options.trust_domain,
                    "--cert-ttl", f"{self.options.cert_ttl_seconds:g}s",
                    "--outbound-traffic-policy", self.options.outbound_traffic_policy,
                    *controlplane_backend_args(self.options, i)]
            run = netns.exec_argv(self.options.cp_netns, argv) if self.options.cp_netns else argv
            cp = Child(replica_name(i), run, self.layout.controlplane_log(i), env=env_without_proxies(),
                       exec_argv=argv)
            with self.table.lock:
                self.table.cps.append(cp)
            cp.start()
            log.info("control plane %s started (pid %s), waiting for %s", cp.name, cp.pid, self.layout.api_socket(i))
            self._wait_controlplane(cp, i, check_stop)
        log.info("control plane ready%s", f" ({n} replicas)" if n > 1 else "")

    def _wait_controlplane(self, cp: Child, replica: int, check_stop: Callable[[], None]) -> None:
        api = ApiClient(addresses=[Address.of_socket(self.layout.api_socket(replica))], timeout=5.0)
        deadline = time.monotonic() + self.options.timeout
        while True:
            check_stop()
            if not cp.poll():
                raise RunnerError(f"the control plane ({cp.name}) exited during start-up:\n" + tail(cp.log_path, 30))
            try:
                if api.healthz().get("ready"):
                    return
            except (ClientError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RunnerError(f"the control plane ({cp.name}) did not become healthy in "
                                  f"{self.options.timeout:.0f}s:\n" + tail(cp.log_path, 30))
            time.sleep(0.1)

    def stop_controlplanes(self, grace: float) -> None:
        cps = list(self.table.cps)
        for cp in cps:
            cp.stop(signal.SIGTERM)
        if cps:
            wait_children(cps, grace, group=True, force=self.table.run.force)

    # ------------------------------------------------------------------ pods
    def make_pod(self, pod: Pod) -> None:
        pod.dir = self.layout.pod(pod.name).path
        os.makedirs(pod.dir, exist_ok=True)
        os.chmod(pod.dir, 0o711)  # not listable by apps (theirs or others')
        self._app_user(pod)
        self._provision_app(pod)
        if pod.proxyless:  # its grpcio xds:/// clients find the control plane by this file
            write_json(pod.files.grpc_bootstrap, grpc_bootstrap(
                list(self.options.join_xds) or self.layout.xds_sockets(self.options.control_planes),
                pod=pod.name, namespace=pod.namespace,
                workload=pod.workload, labels=pod.labels, service_account=pod.service_account or "default",
                locality=pod.locality, ip=pod.ip, ports=pod.ports))
            os.chmod(pod.files.grpc_bootstrap, 0o644)  # the app may run as another user; no secret in it
        if pod.sidecar:
            mode = self.table.info.mode
            trust_domain = self._provision(pod)
            write_json(pod.files.agent_json,
                       agent_config(pod, self.layout, self.options, mode, trust_domain).to_dict())
            if mode == "netns":  # Envoy runs as uid 1337 and makes its admin socket here
                os.chown(pod.dir, ENVOY_UID, ENVOY_UID)

    def _app_user(self, pod: Pod) -> None:
        root = os.geteuid() == 0
        pod.app_user = pod.resolve_app_user(self.table.info.meshid, root=root)
        if pod.run_as_user is not None and not root:
            log.warning("%s: securityContext.runAsUser %s is ignored: the runner is not root, so the app runs as "
                        "uid %d", pod.name, pod.run_as_user, os.geteuid())
        os.makedirs(pod.files.home, mode=0o700, exist_ok=True)
        if pod.app_user is None:
            return
        uid, gid = pod.app_user
        os.chown(pod.files.home, uid, gid)
        os.chmod(pod.files.home, 0o700)
        if not searchable_by(pod.cwd, uid, gid):
            log.warning("%s: the app runs as uid %d and cannot search its working directory %s (mode %o): "
                        "relative paths in its command will fail; make it searchable (chmod o+x) or set "
                        "spec.workdir / spec.securityContext", pod.name, uid, pod.cwd,
                        stat.S_IMODE(os.stat(pod.cwd).st_mode) if os.path.exists(pod.cwd) else 0)
        program = pod.command[0]
        found = shutil.which(program, path=path_for(pod.app_user, os.environ.get("PATH"))) if os.sep not in \
            program else (program if os.access(program, os.X_OK) else None)
        if found is None:
            log.warning("%s: %s is not found on the PATH its app user (uid %d) can reach", pod.name, program, uid)

    def _provision(self, pod: Pod) -> str:
        """The pod's credential (a token bound to its identity, readable by root only) and the mesh root,
        in `pods/<pod>/secrets/`: its agent authenticates with them to get the workload certificate.
        Returns the mesh's trust domain."""
        try:
            ca = self.api.ca_info()
            token = self.api.create_credential(pod.instance_id, pod.namespace, pod.service_account or "default",
                                               pod.workload)
        except ClientError as e:
            raise RunnerError(f"{pod.name}: cannot get a credential from the control plane: {e}") from None
        provision_pod(pod.dir, token, str(ca["rootCert"]).encode(), uid=os.getuid(), gid=os.getgid())  # the agent's uid
        return str(ca["trustDomain"])

    def _provision_app(self, pod: Pod) -> None:
        """The app's read-only credential (`pods/<pod>/app-secrets/token`, owned by the app's uid, 0400): what
        `mizzen.sdk` in the pod authenticates with on the pods' socket (a new pod replaces an earlier one)."""
        try:
            token = self.api.create_credential(pod.instance_id, pod.namespace, pod.service_account or "default",
                                               pod.workload, app=True)
        except ClientError as e:
            raise RunnerError(f"{pod.name}: cannot get its app credential from the control plane: {e}") from None
        uid, gid = pod.app_user if pod.app_user is not None else (os.getuid(), os.getgid())
        provision_app(pod.dir, token, uid=uid, gid=gid)

    def launch(self, pod: Pod) -> None:
        """Start a pod's agent, then its app — at once unless the app is held until the sidecar is ready (the
        supervisor starts it then)."""
        with self.table.lock:
            if pod.sidecar:
                self.table.agents[pod.name] = self._agent_child(pod)
                self.table.agents[pod.name].start()
            self.table.apps[pod.name] = self._app_child(pod)
            if not pod.sidecar or not pod.hold:
                self.table.apps[pod.name].start()

    def _agent_child(self, pod: Pod) -> Child:
        argv = [sys.executable, "-m", "mizzen.cli.main", "agent", "--config", pod.files.agent_json]
        return Child(f"{pod.name}/agent", pod.argv(argv), pod.files.agent_log, env=env_without_proxies(),
                     cwd=pod.dir, exec_argv=argv)

    def _app_child(self, pod: Pod) -> Child:
        env = env_without_proxies()
        env.update({"POD_NAME": pod.name, "POD_NAMESPACE": pod.namespace, "POD_IP": pod.ip,
                    "SERVICE_ACCOUNT": pod.service_account, "PYTHONUNBUFFERED": "1", "HOME": pod.files.home,
                    # where the mesh is: `mizzen.sdk.Mesh()` and the CLI find its control plane by it, and
                    # the app's own read-only credential (mizzen.sdk authenticates with it on pod-api.sock)
                    "MIZZEN_STATE_DIR": self.layout.root, "MIZZEN_TOKEN_FILE": pod.files.app_token})
        if pod.app_user is not None:
            for k in ("USER", "LOGNAME", "MAIL"):
                env.pop(k, None)
            env["PATH"] = path_for(pod.app_user, env.get("PATH")) or ""
        if pod.proxyless:
            env["GRPC_XDS_BOOTSTRAP"] = pod.files.grpc_bootstrap
        if self.options.join_api:  # a host runner: the control planes are reached over TCP
            env["MIZZEN_API"] = ",".join(f"http://{a}" for a in self.options.join_api)
        env.update(pod.env)
        if pod.ports:
            env["PORT"] = str(pod.port_map.get(pod.ports[0], pod.ports[0]))
            for p in pod.ports:
                env[f"PORT_{p}"] = str(pod.port_map.get(p, p))
        if self.table.info.mode == "loopback" and pod.sidecar:
            proxy = f"http://127.0.0.1:{pod.outbound_port}"
            env.update({"HTTP_PROXY": proxy, "http_proxy": proxy,
                        "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1"})
        return Child(f"{pod.name}/app", pod.app_argv(pod.command), pod.files.app_log, env=env, cwd=pod.cwd,
                     exec_argv=list(pod.command))

    # ------------------------------------------------------------------ an orderly stop
    def withdraw(self, pod: Pod) -> bool:
        agent = self.table.agents.get(pod.name)
        if not pod.sidecar or agent is None or not agent.poll():
            return False
        try:
            AgentControl(pod.files.agent_socket).withdraw(timeout=5)
            return True
        except ClientError as e:
            log.warning("%s: agent did not withdraw over its control socket (%s); sending SIGUSR1", pod.name, e)
        signal_pid(agent.pid, signal.SIGUSR1)  # the agent withdraws on SIGUSR1 too
        return False

    def in_flight(self, pod: Pod) -> int:
        if pod.sidecar:
            try:
                stats = EnvoyAdmin(pod.files.admin_socket, timeout=2).get_json(_ACTIVE_RQ).get("stats", [])
            except (ClientError, ValueError):
                return 0
            return sum(int(x.get("value") or 0) for x in stats
                       if "name" in x and not str(x["name"]).startswith("http.admin."))
        app = self.table.apps.get(pod.name)
        if app is None or not pod.ports or not app.poll() or app.pid is None:
            return 0
        return netns.established_to(app.pid, pod.app_ports)

    def stop_apps(self, pods: Sequence[Pod], grace: float) -> None:
        apps, _ = self.table.children(pods)
        for c in apps:
            c.stop(signal.SIGTERM, group=True)
        wait_children(apps, grace, group=True, force=self.table.run.force)

    def stop_sidecars(self, pods: Sequence[Pod], grace: float) -> None:
        _, agents = self.table.children(pods)
        for c in agents:
            c.stop(signal.SIGTERM)
        wait_children(agents, grace, group=True, force=self.table.run.force)
        for p in pods:  # an Envoy its dead agent left behind
            epid = self.table.envoy_pids.get(p.name)
            if epid and alive(epid) and any("envoy" in a for a in cmdline(epid)):
                signal_pid(epid, signal.SIGKILL)
                deadline = time.monotonic() + 3.0
                while alive(epid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                # its agent (SIGKILLed, or dead before) could not remove Envoy's hot-restart memory
                remove_hot_restart_memory(p.files.base_id)

    def revoke(self, pod: Pod) -> None:
        """A stopped pod's credentials (its agent's and its app's) stop working (best effort: a pod made later
        under its name replaces them)."""
        try:
            self.api.revoke_credential(pod.instance_id)
        except ClientError as e:
            log.warning("%s: could not revoke its credential (%s); a pod made later under this name replaces it",
                        pod.name, e)

    def forget(self, pod: Pod) -> None:
        self.revoke(pod)
        for sock in pod.files.sockets:  # the dir stays for its logs; dead sockets go
            try:
                os.unlink(sock)
            except OSError:
                pass

    def hot_restart(self, pod: Pod, envoy: str | None) -> dict[str, Any]:
        if envoy:  # a restarted agent keeps the new binary
            try:
                cfg = load_config(pod.files.agent_json)
            except AgentConfigError:
                cfg = agent_config(pod, self.layout, self.options, self.table.info.mode)
            write_json(pod.files.agent_json, dataclasses.replace(cfg, envoy_binary=envoy).to_dict())
        try:
            return AgentControl(pod.files.agent_socket).hot_restart(envoy, timeout=120)
        except HttpError as e:
            raise OperationError(f"{pod.name}: hot restart failed: {e}") from None
        except ClientError as e:
            raise OperationError(f"{pod.name}: agent unreachable: {e}") from None
