"""The runner's supervisor: every `POLL_SECONDS` one `step()` observes the mesh and records it in the table.

A step restarts crashed processes (with back-off: procs.Child), reads each agent's `agent.state`, starts an
app held until its sidecar is ready, registers pods without a sidecar once their app listens (there is no
agent to do it), refreshes the services and instances (hosts files, VIP rules) every
`SERVICES_POLL_SECONDS`, and writes `status.json` (`status_of(table)`) when it changed. Pods being stopped
by an operation are left alone.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

from . import bypass, meshview, netns
from .meshstate import envoy_pid_of, read_json, summary_lines, write_json
from .pods import API_ERRORS, Pod
from .procs import Child, alive
from .protocols import ControlPlaneApi, PodNetwork
from .table import PodTable, status_of

log = logging.getLogger("mizzen.local")

SERVICES_POLL_SECONDS = 1.5
REGISTER_REFRESH_SECONDS = 10.0


class Supervisor:
    def __init__(self, table: PodTable, api: ControlPlaneApi, network: PodNetwork,
                 on_ready: Callable[[dict[str, Any]], None] | None = None):
        self.table = table
        self.api = api
        self.network = network
        self.on_ready = on_ready
        self._next_services = 0.0
        self._last_status: Any = None

    def status(self) -> dict[str, Any]:
        with self.table.lock:
            return status_of(self.table)

    def write_status(self, st: dict[str, Any] | None = None) -> None:
        with self.table.lock:
            st = st if st is not None else status_of(self.table)
            if st == self._last_status:
                return
            self._last_status = st
            path = self.table.info.layout.status_file
            if os.path.isdir(os.path.dirname(path)):
                write_json(path, dict(st, updatedAt=time.time()))

    def step(self) -> None:
        t = self.table
        with t.lock:
            now = time.monotonic()
            for cp in t.cps:
                cp.check(now)
            for c in t.ratelimit + ([t.redis] if t.redis is not None else []):
                c.check(now)  # the rate-limit service restarts like the control plane
            for pod in list(t.pods):
                if not pod.stopping:
                    self._pod(pod, now)
                elif pod.name in t.envoy_pids:  # an operation stops it: only look
                    t.envoy_alive[pod.name] = alive(t.envoy_pids[pod.name])
        if now >= self._next_services:
            self._next_services = now + SERVICES_POLL_SECONDS
            meshview.refresh_services(t, self.api, self.network)
            meshview.refresh_instances(t, self.api)
            meshview.sync_vip_rules(t, self.api, self.network)
            bypass.sync(t, self.api, self.network)  # `mizzen mesh bypass`: capture off/on per namespace
        with t.lock:
            st = status_of(t)
            if st["ready"] and not t.run.ready:
                t.run.ready = True
                log.info("mesh ready in %.1fs", now - t.run.started)
                if self.on_ready:
                    self.on_ready(st)
                else:
                    for line in summary_lines(st):
                        log.info("%s", line)
            self.write_status(st)

    def _pod(self, pod: Pod, now: float) -> None:
        t = self.table
        agent = t.agents.get(pod.name)
        app = t.apps[pod.name]
        if agent is not None:
            if agent.check(now):
                t.agent_states.pop(pod.name, None)
            st = self._agent_state(pod, agent)
            if st is not None:
                t.agent_states[pod.name] = st
                epid = envoy_pid_of(st)
                if epid:
                    t.envoy_pids[pod.name] = epid
            epid = t.envoy_pids.get(pod.name)
            t.envoy_alive[pod.name] = bool(epid and alive(epid))
            if app.popen is None and app.last_exit is None and t.agent_states.get(pod.name, {}).get("state") == "ready":
                log.info("%s: sidecar ready, starting the app", pod.name)
                app.start()
                return
        if app.popen is not None or app.last_exit is not None:
            app.check(now)
        if not pod.sidecar:
            self._register_static(pod, app, now)

    @staticmethod
    def _agent_state(pod: Pod, agent: Child) -> dict[str, Any] | None:
        """agent.state, unless it predates the running agent (a crashed agent's last word)."""
        path = pod.files.agent_state
        try:
            if os.stat(path).st_mtime < agent.started_wall - 1.0:
                return None
        except OSError:
            return None
        return read_json(path)

    def _register_static(self, pod: Pod, app: Child, now: float) -> None:
        """A pod without a sidecar has no agent to register it: the runner does, once the app listens."""
        if not pod.ports:
            return
        t = self.table
        listening = app.running and app.pid is not None and \
            all(p in netns.listening_ports(app.pid) for p in pod.app_ports)
        iid = pod.instance_id
        if listening and now - t.static_registered.get(iid, -1e9) >= REGISTER_REFRESH_SECONDS:
            try:
                self.api.put_instance(pod.static_instance())
                if iid not in t.static_registered:
                    log.info("%s: registered (no sidecar)", pod.name)
                t.static_registered[iid] = now
            except API_ERRORS as e:
                log.warning("%s: cannot register: %s", pod.name, e)
        elif not listening and iid in t.static_registered:
            meshview.deregister(t, self.api, iid)
