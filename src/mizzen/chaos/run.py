"""`mizzen chaos run FILE`: a ChaosScenario on the running mesh — load, fault schedule, steady-state checks.

1. the setup resources are applied (and, with `load.accessLog`, a Telemetry that logs the load's requests at
   its own sidecar), and every proxy is SYNCED;
2. the load starts in its pod (`load.py`, through the pod's sidecar); each step runs at its offset: faults via
   `Chaos` (recorded, with the scenario as their source), a rollout over the runner's control channel;
3. once the last fault has ended, a watcher polls the proxies until every one is SYNCED again;
4. at the end (or on Ctrl-C / SIGTERM) every fault still active is undone, the setup removed; the failed
   requests are matched to the faults (explain.py), and the checks give the verdict (verdict.py).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import yaml

from ..client import ApiClient, ClientError, RunnerClient, StateLayout
from ..local.procs import env_without_proxies
from .actions import ChaosError, NothingToKill, in_netns
from .engine import Chaos, new_seed
from .explain import access_entries, classify, fault_windows, kill_events
from .scenario import Scenario, Step
from .spec import Fault, SpecError
from .targets import pods_of
from .verdict import checks, summary_rows

LOG_TELEMETRY = "mizzen-chaos-load-log"


class Interrupted(Exception):
    pass


def find_pod(status: dict[str, Any], target: str) -> dict[str, Any]:
    """A running pod by name, else the first of a workload, else of an `app` label of that name."""
    pods = pods_of(status)
    for key in (lambda p: p["name"], lambda p: p.get("workload"), lambda p: (p.get("labels") or {}).get("app")):
        matches = sorted((p for p in pods if key(p) == target), key=lambda p: p["name"])
        if matches:
            return matches[0]
    raise SpecError(f"spec.load.from: no pod, workload or app named {target!r} "
                    f"(pods: {', '.join(p['name'] for p in pods) or 'none'})")


def sync_state(api: ApiClient, status: dict[str, Any]) -> tuple[bool, str]:
    """(every sidecar's proxy connected and SYNCED, what is not)."""
    want = {p["name"] for p in pods_of(status) if p.get("sidecar")}
    try:
        items = api.proxies()
    except ClientError as e:
        return False, f"control plane: {e}"
    good = set()
    bad = []
    for it in items:
        pod = str(it.get("id", "")).split("~")[2].split(".")[0] if it.get("id", "").count("~") >= 3 else ""
        states = {t: (v or {}).get("state") for t, v in (it.get("types") or {}).items()}
        if it.get("connected") and all(s in ("SYNCED", "NOT_SENT") for s in states.values()):
            good.add(pod)
        elif pod in want:
            bad.append(f"{pod}: {'connected' if it.get('connected') else 'disconnected'} {states}")
    missing = sorted(want - good)
    return not missing, "; ".join(bad) or (f"not connected: {', '.join(missing)}" if missing else "")


class Timeline:
    def __init__(self, t0: float):
        self.t0 = t0
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.echo: Callable[[str], None] | None = None

    def add(self, kind: str, text: str, at: float | None = None) -> None:
        e = {"t": round((at if at is not None else time.time()) - self.t0, 2), "kind": kind, "text": text}
        with self.lock:
            self.events.append(e)
        if self.echo:
            self.echo(f"  {e['t']:+8.1f}s  {kind:<9} {text}")


class ScenarioRun:
    def __init__(self, scenario: Scenario, state_dir: str, *, echo: Callable[[str], None] | None = None):
        self.s = scenario
        self.layout = StateLayout(state_dir)
        self.chaos = Chaos(state_dir, source=f"scenario {scenario.name}")
        self.api = ApiClient(self.layout.root, timeout=10.0)
        self.seed = scenario.seed if scenario.seed is not None else new_seed()
        self.echo = echo
        self.faults: list[str] = []
        self.fault_ends: list[float] = []
        self.threads: list[threading.Thread] = []
        self.interrupted = False
        self.error: str | None = None
        self.load_proc: subprocess.Popen | None = None
        self.stop_file = ""
        self.tl = Timeline(time.time())
        self.ips: dict[str, str] = {}  # pod address -> pod name, for every pod seen during the run

    # ------------------------------------------------------------------ main
    def run(self) -> dict[str, Any]:
        started = time.time()
        st = self.chaos.status()
        src = find_pod(st, self.s.load.source)
        applied: list[tuple[str, str]] = []
        old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def on_signal(signum: int, frame: Any) -> None:
            self.interrupted = True
            raise Interrupted()

        for sig in old:
            signal.signal(sig, on_signal)
        load: dict[str, Any] = {}
        sync_after: float | None = None
        sync_known = False
        try:
            applied = self._setup(src)
            self.tl = Timeline(time.time())
            self.tl.echo = self.echo
            self._start_load(src)
            self.tl.add("load", f"{self.s.load.rate:g} rps for {self.s.load.duration:g}s to {self.s.load.target} "
                                f"from {src['name']}")
            for step in self.s.steps:
                self._sleep_until(self.tl.t0 + step.at)
                self._do(step, st)
            for t in self.threads:
                while t.is_alive():
                    t.join(0.2)
            last_end = self._wait_faults_end()
            sync_after, sync_known = self._wait_synced(last_end)
            load = self._finish_load()
        except Interrupted:
            self.error = "interrupted: every fault of this run was undone"
        except (ChaosError, SpecError, ClientError) as e:
            self.error = str(e)
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
            # every fault of this run still active (also one whose start was interrupted before it was listed)
            ours = set(self.faults) | {f.id for f in self.chaos.store.active()
                                       if f.source == self.chaos.source and f.created >= started}
            ended = self.chaos.stop(sorted(ours), reason="scenario end" if not self.interrupted else "interrupt") \
                if ours else []  # (no ids would mean every active fault)
            for f in ended:
                if f.ended_by in ("scenario end", "interrupt"):
                    self.tl.add("undo", f"{f.id} stopped at the end of the run")
            if not load:
                load = self._finish_load(stop=True)
            if self.stop_file:  # its private temp dir (17 empty ones were left behind by earlier runs)
                shutil.rmtree(os.path.dirname(self.stop_file), ignore_errors=True)
            self._cleanup(applied)
        return self._result(src, load, sync_after, sync_known)

    # ------------------------------------------------------------------ setup
    def _setup(self, src: dict[str, Any]) -> list[tuple[str, str]]:
        docs = [dict(d) for d in self.s.setup]
        if self.s.load.access_log and src.get("sidecar"):
            labels = src.get("labels") or {}
            docs.append({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
                         "metadata": {"name": LOG_TELEMETRY, "namespace": src.get("namespace", "default")},
                         "spec": {"selector": {"matchLabels": labels},
                                  "accessLogging": [{"providers": [{"name": "envoy"}]}]}})
        if not docs:
            return []
        files = [(f"{self.s.file} (setup)", yaml.safe_dump_all(docs, sort_keys=False))]
        self.api.apply(files)
        deadline = time.monotonic() + 60
        while True:
            ok, why = sync_state(self.api, self.chaos.status())
            if ok:
                return files
            if time.monotonic() > deadline:
                raise ChaosError(f"proxies not SYNCED after the setup: {why}")
            time.sleep(0.3)

    def _cleanup(self, applied: list[tuple[str, str]]) -> None:
        if applied:
            try:
                self.api.delete_files(applied)
            except ClientError as e:
                self.tl.add("error", f"cannot remove the setup resources: {e}")

    # ------------------------------------------------------------------ load
    def _start_load(self, src: dict[str, Any]) -> None:
        L = self.s.load
        self.stop_file = os.path.join(tempfile.mkdtemp(prefix="mizzen-chaos-"), "stop")
        argv = [sys.executable, "-m", "mizzen.chaos.load", L.target, "--rps", f"{L.rate:g}",
                "--seconds", f"{L.duration:g}", "--concurrency", str(L.concurrency),
                "--expect", ",".join(map(str, L.expect)), "--timeout", f"{L.timeout:g}", "--stop-file", self.stop_file]
        env = env_without_proxies()
        if src.get("netns"):
            argv = in_netns(src["netns"], argv)
        elif src.get("sidecar") and src.get("outboundPort"):
            proxy = f"http://127.0.0.1:{src['outboundPort']}"
            env.update(HTTP_PROXY=proxy, http_proxy=proxy)
        self.load_proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                          start_new_session=True)

    def _finish_load(self, stop: bool = False) -> dict[str, Any]:
        p = self.load_proc
        if p is None:
            return {}
        if stop and self.stop_file:
            open(self.stop_file, "w").close()
        try:
            out, err = p.communicate(timeout=self.s.load.duration + self.s.load.timeout + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        self.load_proc = None
        try:
            r = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.error = self.error or f"the load failed: {err.strip()[-500:]}"
            return {}
        self.tl.add("load", f"ended: {r['total']} requests, {r['failed']} failed", at=r.get("end"))
        return dict(r)

    # ------------------------------------------------------------------ steps
    def _sleep_until(self, t: float) -> None:
        while time.time() < t:
            time.sleep(min(0.1, t - time.time()))

    def _step_seed(self, step: Step) -> int:
        return (self.seed * 1000003 + step.index * 7919) % (1 << 31)

    def _remember_pods(self) -> None:
        for p in self._status_pods():
            if p.get("ip"):
                self.ips[p["ip"]] = p["name"]

    def _do(self, step: Step, st: dict[str, Any]) -> None:
        self._remember_pods()
        a = step.args
        try:
            if step.action == "rollout":
                t = threading.Thread(target=self._rollout, args=(a["workload"], a.get("namespace")), daemon=True)
                t.start()
                self.threads.append(t)
                return
            seed = self._step_seed(step)
            if step.action == "kill":
                f = self.chaos.kill(a["target"], a["selection"], seed=seed, sig=a.get("signal", 9),
                                    every=a.get("every"), duration=a.get("duration"))
            elif step.action == "network":
                f = self.chaos.network(a["selection"], a["params"], a["duration"], seed=seed)
            elif step.action == "partition":
                if a.get("controlplane"):
                    from .spec import Selection
                    f = self.chaos.partition(Selection(replica=a.get("replica")), "controlplane", a["duration"],
                                             seed=seed)
                else:
                    f = self.chaos.partition(a["a"], a["b"], a["duration"], seed=seed)
            else:
                f = self.chaos.stress(a["selection"], a["cpus"], a["duration"], seed=seed)
        except NothingToKill as e:  # e.g. that Envoy is being restarted right now: a kill with nothing to hit
            self.tl.add("skipped", f"step {step.index} ({step.describe()}): {e}")
            return
        except (ChaosError, SpecError) as e:
            self.tl.add("error", f"step {step.index} ({step.describe()}): {e}")
            self.error = self.error or f"step {step.index} failed: {e}"
            return
        self.faults.append(f.id)
        self.tl.add("fault", f"{f.id} {f.describe()} on {f.where()}"
                             + (f" for {f.duration:g}s" if f.duration else ""), at=f.started or time.time())

    def _rollout(self, workload: str, namespace: str | None) -> None:
        self.tl.add("rollout", f"rollout restart {workload}")
        try:
            for ev in RunnerClient(self.layout.runner_socket).operation("/rollout/restart",
                                                                        {"workload": workload, "namespace": namespace}):
                if ev.get("event") == "progress":
                    self.tl.add("rollout", str(ev.get("message", "")))
                elif ev.get("event") == "done":
                    self.tl.add("rollout", "done" if ev.get("ok") else f"failed: {ev.get('error')}")
                    if not ev.get("ok"):
                        self.error = self.error or f"rollout of {workload} failed: {ev.get('error')}"
        except ClientError as e:
            self.tl.add("error", f"rollout of {workload}: {e}")
            self.error = self.error or f"rollout of {workload} failed: {e}"
        self.fault_ends.append(time.time())

    def _wait_faults_end(self) -> float:
        """Wait for the run's faults with a duration to expire (or the load to end); the time the last fault
        ended (its expiry, a kill's moment, a rollout's end), or the load's start if there was none."""
        end = self.tl.t0
        while True:
            recs = [self.chaos.store.load(i) for i in self.faults]
            active = [f for f in recs if f is not None and not f.final]
            if not active or self.load_proc is None or self.load_proc.poll() is not None:
                break
            time.sleep(0.2)
        for f in (r for r in (self.chaos.store.load(i) for i in self.faults) if r is not None):
            if f.final and f.ended:
                if f.ended_by not in ("scenario end", "interrupt"):
                    self.tl.add("fault", f"{f.id} {f.state}", at=f.ended)
                end = max(end, f.ended)
            kills = [t.get("at") for t in f.targets if t.get("at")]
            if kills:
                end = max(end, max(kills))
        return max([end] + self.fault_ends)

    def _wait_synced(self, since: float) -> tuple[float | None, bool]:
        """Poll until every proxy is SYNCED again: (seconds after `since`, whether it was measured)."""
        limit = self.s.steady.synced_within
        deadline = time.time() + max(60.0, (limit or 0) * 2)
        why = ""
        while time.time() < deadline:
            try:
                ok, why = sync_state(self.api, self.chaos.status())
            except ChaosError as e:
                ok, why = False, str(e)
            if ok:
                after = max(0.0, time.time() - since)
                self.tl.add("synced", f"every proxy SYNCED ({after:.1f}s after the last fault ended)")
                return after, True
            time.sleep(0.5)
        self.tl.add("synced", f"not every proxy SYNCED: {why}")
        return None, True

    # ------------------------------------------------------------------ result
    def _result(self, src: dict[str, Any], load: dict[str, Any], sync_after: float | None,
                sync_known: bool) -> dict[str, Any]:
        faults = [f for f in (self.chaos.store.load(i) for i in self.faults) if f is not None]
        explained = None
        if load and self.s.load.access_log and src.get("sidecar"):
            explained = self._explain(src, load, faults)
        elif load and not load.get("failures"):
            explained = {"categories": {}, "explained": 0, "unexplained": []}
        res_checks = checks(self.s.steady, load, explained, sync_after, sync_known) if load else []
        ok = bool(load) and self.error is None and all(c["ok"] for c in res_checks)
        every = max(1, int(self.s.load.duration // 12) or 1)
        return {"scenario": self.s.name, "file": self.s.file, "seed": self.seed, "pass": ok, "error": self.error,
                "loadPod": src["name"], "checks": res_checks, "timeline": self.tl.events,
                "loadRows": summary_rows(load.get("buckets") or [], every) if load else [],
                "load": {k: v for k, v in load.items() if k not in ("buckets", "failures")},
                "explained": explained, "faults": [f.to_dict() for f in faults]}

    def _explain(self, src: dict[str, Any], load: dict[str, Any], faults: list[Fault]) -> dict[str, Any]:
        time.sleep(1.0)  # Envoy flushes its access log about every second
        try:
            with open(self.layout.pod(src["name"]).access_log, errors="replace") as f:
                text = f.read()
        except OSError:
            text = ""
        entries = access_entries(text, load.get("runId", ""))
        pod_of_ip = dict(self.ips)  # every pod seen during the run (a rollout replaces them)
        pod_of_ip.update({p["ip"]: p["name"] for p in self._status_pods()})
        for f in faults:
            for t in f.targets:
                if t.get("ip") and (t.get("pod") or t.get("name")):
                    pod_of_ip.setdefault(t["ip"], t.get("pod") or t["name"])
        docs = [f.to_dict() for f in faults]
        return classify(load.get("failures") or [], entries, kill_events(docs), pod_of_ip, src["name"],
                        fault_windows(docs))

    def _status_pods(self) -> list[dict[str, Any]]:
        try:
            return list(self.chaos.status().get("pods") or [])
        except ChaosError:
            return []
