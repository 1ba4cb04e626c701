"""`Chaos(state_dir)`: inject, list and stop faults on a running mesh — what the CLI and scenarios call.

A kill happens at once (the runner and the agents restart what died) and is recorded as `done`. Every fault
with a duration (network, partition, stress, a repeated kill) is handed to a keeper process of its own
(keeper.py), started detached, so the command returns at once and the fault expires on its own; `inject`
returns once the keeper says it is active (or why it failed). `stop()` asks keepers to undo (SIGTERM) and
undoes from the record whatever a dead keeper left; the runner's teardown and `mizzen down` call
`stop_all()` (cleanup.py) before anything else stops.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

from ..client import StateLayout
from ..local.meshstate import live_status, runner_alive
from ..local.netns import mesh_id
from .actions import ChaosError
from .cleanup import stop_faults
from .netfault import qdisc_busy
from .procfault import kill as kill_processes
from .records import FaultStore
from .spec import Fault, NetworkParams, Selection, SpecError
from .targets import pick_pods, pick_processes

APPLY_TIMEOUT = 60.0


def new_seed() -> int:
    return secrets.randbelow(1 << 31)


class Chaos:
    def __init__(self, state_dir: str, source: str = "cli"):
        self.layout = StateLayout(state_dir)
        self.state_dir = self.layout.root
        self.meshid = mesh_id(self.state_dir)
        self.store = FaultStore(self.state_dir)
        self.source = source
        self.keepers: list[subprocess.Popen] = []

    # ------------------------------------------------------------------ the mesh
    def status(self) -> dict[str, Any]:
        if runner_alive(self.state_dir) is None:
            raise ChaosError(f"no mesh running in {self.state_dir} (start one with `mizzen up`)")
        st = live_status(self.state_dir)
        if st is None or st.get("phase") != "running":
            raise ChaosError(f"the mesh in {self.state_dir} is not running (phase {st and st.get('phase')})")
        return st

    def _netns_mode(self, st: dict[str, Any]) -> None:
        if st.get("mode") != "netns":
            raise ChaosError("network faults and stress need a mesh in netns mode (`mizzen up` as root); "
                             "in loopback mode every pod shares the host's network")

    def _new(self, kind: str, params: dict[str, Any], sel: Selection, seed: int | None,
             duration: float | None, targets: list[dict[str, Any]], st: dict[str, Any]) -> Fault:
        return Fault(id=self.store.new_id(kind), kind=kind, params=params, selection=sel.to_dict(),
                     seed=seed if seed is not None else new_seed(), created=time.time(), duration=duration,
                     targets=targets, runner_pid=(st.get("runner") or {}).get("pid"), source=self.source)

    # ------------------------------------------------------------------ faults
    def kill(self, target: str, sel: Selection, *, seed: int | None = None, sig: int = signal.SIGKILL,
             every: float | None = None, duration: float | None = None) -> Fault:
        st = self.status()
        seed = seed if seed is not None else new_seed()
        if every:
            if not duration:
                raise SpecError("--every needs a --duration (how long to keep killing)")
            pick_processes(st, target, sel, seed)  # fails now if nothing matches
            f = self._new("kill", {"target": target, "signal": sig, "every": every}, sel, seed, duration, [], st)
            return self._start_keeper(f)
        f = self._new("kill", {"target": target, "signal": sig}, sel, seed, None, [], st)
        f.targets = kill_processes(st, target, sel, seed, sig)
        now = time.time()
        f.started = f.ended = now
        f.state, f.ended_by = "done", "instant"
        self.store.save(f)
        return f

    def network(self, sel: Selection, params: NetworkParams, duration: float, *, seed: int | None = None) -> Fault:
        params.validate()
        if duration <= 0:
            raise SpecError("--duration: a network fault needs one (e.g. 20s)")
        st = self.status()
        self._netns_mode(st)
        seed = seed if seed is not None else new_seed()
        pods = pick_pods(st, sel, seed, need_netns=True)
        busy = self._busy_pods({"network"})
        for p in pods:
            if p["name"] in busy:
                raise ChaosError(f"{p['name']} already has an active network fault ({busy[p['name']]}); "
                                 f"stop it first (`mizzen chaos stop {busy[p['name']]}`)")
            if params.bandwidth or params.latency:
                q = qdisc_busy(p["netns"])
                if q:
                    raise ChaosError(f"{p['name']} already has a {q} qdisc on eth0 that no active fault owns")
        targets = [_pod_target(p) for p in pods]
        pdict = {"latency": params.latency, "jitter": params.jitter, "loss": params.loss,
                 "bandwidth": params.bandwidth}
        return self._start_keeper(self._new("network", pdict, sel, seed, duration, targets, st))

    def partition(self, a: Selection | str, b: Selection | str, duration: float, *,
                  seed: int | None = None) -> Fault:
        """Between two sets of pods, or ("controlplane") between the control plane and every sidecar."""
        if duration <= 0:
            raise SpecError("--duration: a partition needs one (e.g. 60s)")
        st = self.status()
        seed = seed if seed is not None else new_seed()
        if a == "controlplane" or b == "controlplane":
            other = b if a == "controlplane" else a
            if other not in ("controlplane", "all", None) and not (isinstance(other, Selection)
                                                                   and other == Selection()):
                raise SpecError("a partition between the control plane and *some* pods is not supported: sidecars "
                                "reach it over unix sockets, which no network fault cuts (docs/chaos.md); "
                                "partition it from every sidecar (`--b all`), or kill it")
            cp_sel = a if isinstance(a, Selection) else Selection()
            procs = pick_processes(st, "controlplane", cp_sel if cp_sel.replica is not None
                                   else Selection(percent=1.0), seed)
            targets = [{k: p[k] for k in ("name", "kind", "pid", "replica") if k in p} | {"cmdline": p.get("cmdline")}
                       for p in procs]
            f = self._new("partition", {"a": "controlplane", "b": "all", "controlplane": True}, cp_sel, seed,
                          duration, targets, st)
            return self._start_keeper(f)
        assert isinstance(a, Selection) and isinstance(b, Selection)
        self._netns_mode(st)
        side_a = pick_pods(st, a, seed, need_netns=True)
        side_b = pick_pods(st, b, seed + 1, need_netns=True)
        names_a, names_b = {p["name"] for p in side_a}, {p["name"] for p in side_b}
        if names_a & names_b:
            raise SpecError(f"a pod cannot be on both sides of a partition: {', '.join(sorted(names_a & names_b))}")
        ips_a, ips_b = [p["ip"] for p in side_a], [p["ip"] for p in side_b]
        targets = [dict(_pod_target(p), side="a", peers=ips_b) for p in side_a] + \
                  [dict(_pod_target(p), side="b", peers=ips_a) for p in side_b]
        f = self._new("partition", {"a": {"pods": sorted(names_a)}, "b": {"pods": sorted(names_b)}},
                      a, seed, duration, targets, st)
        f.selection = {"a": a.to_dict(), "b": b.to_dict()}
        return self._start_keeper(f)

    def stress(self, sel: Selection, cpus: int, duration: float, *, seed: int | None = None) -> Fault:
        if duration <= 0:
            raise SpecError("--duration: a stress needs one (e.g. 30s)")
        if not 1 <= cpus <= 8:
            raise SpecError(f"--cpus: 1 to 8 busy loops, got {cpus}")
        st = self.status()
        self._netns_mode(st)
        seed = seed if seed is not None else new_seed()
        pods = pick_pods(st, sel, seed, need_netns=True)
        return self._start_keeper(self._new("stress", {"cpus": cpus}, sel, seed, duration,
                                            [_pod_target(p) for p in pods], st))

    def _busy_pods(self, kinds: set[str]) -> dict[str, str]:
        out = {}
        for f in self.store.active():
            if f.kind in kinds:
                for t in f.targets:
                    out[t.get("name")] = f.id
        return out

    # ------------------------------------------------------------------ keepers
    def _start_keeper(self, f: Fault) -> Fault:
        self.store.save(f)
        os.makedirs(self.layout.logs_dir, exist_ok=True)
        with open(self.layout.chaos_log(f.id), "ab") as logf:
            proc = subprocess.Popen([sys.executable, "-m", "mizzen.chaos.keeper", self.state_dir, f.id],
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
                                    env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.keepers.append(proc)
        self.store.update(f.id, keeper_pid=proc.pid)
        deadline = time.monotonic() + APPLY_TIMEOUT
        while time.monotonic() < deadline:
            rec = self.store.load(f.id)
            if rec is not None and rec.state != "applying":
                if rec.state == "failed":
                    raise ChaosError(f"{f.id}: {rec.error or 'failed'} (see {self.layout.chaos_log(f.id)})")
                return rec
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop([f.id])
        raise ChaosError(f"{f.id} was not applied (see {self.layout.chaos_log(f.id)})")

    def reap(self) -> None:
        self.keepers = [p for p in self.keepers if p.poll() is None]

    # ------------------------------------------------------------------ list / stop
    def list(self, include_all: bool = False) -> list[Fault]:
        faults = self.store.all()
        if include_all:
            return faults
        runner = runner_alive(self.state_dir)
        return [f for f in faults if not f.final or (runner and f.runner_pid == runner)]

    def stop(self, ids: list[str] | None = None, reason: str = "stop", timeout: float = 30.0) -> list[Fault]:
        """Undo active faults (all, or these ids): their keepers undo and exit; what a dead keeper left is
        undone here from the record. Returns the faults as they ended."""
        faults = self.store.active() if not ids else [f for f in (self.store.load(i) for i in ids) if f]
        if ids:
            missing = set(ids) - {f.id for f in faults}
            if missing:
                raise SpecError(f"no fault {', '.join(sorted(missing))} (see `mizzen chaos list`)")
        out = stop_faults(self.store, [f for f in faults if not f.final], reason, timeout)
        self.reap()
        return out + [f for f in faults if f.final]


def _pod_target(p: dict[str, Any]) -> dict[str, Any]:
    return {"name": p["name"], "pod": p["name"], "netns": p.get("netns"), "ip": p.get("ip"),
            "sidecar": bool(p.get("sidecar")), "ports": list(p.get("ports") or []), "workload": p.get("workload")}
