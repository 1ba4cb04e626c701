"""The chaos soak: a fixed-rate load while apps, Envoys, agents and control-plane replicas are killed at random
every few seconds, with one rollout restart — the e2e test (a few minutes) and `make bench` (30 minutes, with
the control plane's and a sidecar's memory and open files sampled every minute).

`soak_scenario()` builds the schedule (seeded: the same seed, the same kills) as an ordinary `Scenario`, so a
soak is `ScenarioRun` — the same load, records, failure explanation and sync check as `mizzen chaos run`.
`Sampler` reads /proc of the mesh's processes (as the runner's status names them) while it runs.
"""
from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

from ..local.meshstate import live_status
from .scenario import LoadSpec, Scenario, Step, SteadyState
from .spec import Selection

SOAK_MESH = """\
# The chaos soak's mesh: `web` (3 replicas of a small HTTP app) and `sleep`, where the load runs.
apiVersion: v1
kind: Service
metadata: {{name: web, labels: {{app: web}}}}
spec:
  ports: [{{port: 9080, name: http}}]
  selector: {{app: web}}
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {{name: web-v1, labels: {{app: web, version: v1}}}}
spec:
  replicas: {replicas}
  workdir: {apps}
  command: [python3, details.py]
  env: {{SERVICE_VERSION: v1}}
  ports: [{{containerPort: 9080}}]
---
apiVersion: mizzen.dev/v1
kind: Workload
metadata: {{name: sleep, labels: {{app: sleep}}}}
spec:
  command: [sh, -c, "trap 'exit 0' TERM INT; while true; do sleep 3600 & wait $!; done"]
"""
KILL_KINDS = ("app", "envoy", "agent", "controlplane")


def soak_mesh(apps_dir: str, replicas: int = 3) -> str:
    return SOAK_MESH.format(apps=apps_dir, replicas=replicas)


def soak_scenario(*, seconds: float, rps: float, kill_every: float, seed: int, rollout_at: float | None = None,
                  workload: str = "web-v1", source: str = "sleep", target: str = "http://web:9080/details/0",
                  quiet_tail: float = 15.0, cp_replica: int | None = None) -> Scenario:
    """Kills every `kill_every` seconds (± a third, seeded) from 5 s until `quiet_tail` before the end, each of a
    random kind (app, Envoy, agent of one `workload` pod, or a control-plane replica: `cp_replica`, else one at
    random), and one rollout restart of `workload` (at `rollout_at`, default a third of the way)."""
    rng = random.Random(seed)
    steps: list[Step] = []
    t = 5.0
    while t < seconds - quiet_tail:
        kind = rng.choice(KILL_KINDS)
        args: dict[str, Any] = {"target": kind, "signal": 9, "every": None, "duration": None,
                                "selection": (Selection(count=1) if cp_replica is None else Selection(replica=cp_replica))
                                if kind == "controlplane" else Selection(workload=workload, count=1)}
        steps.append(Step(at=round(t, 2), action="kill", args=args, index=len(steps)))
        t += kill_every * rng.uniform(2 / 3, 4 / 3)
    ra = rollout_at if rollout_at is not None else seconds / 3
    steps.append(Step(at=ra, action="rollout", args={"workload": workload, "namespace": None}, index=len(steps)))
    steps.sort(key=lambda s: (s.at, s.index))
    return Scenario(name=f"chaos-soak-{int(seconds)}s", file="<soak>", seed=seed,
                    load=LoadSpec(source=source, target=target, rate=rps, duration=seconds, concurrency=32),
                    steps=tuple(steps),
                    steady=SteadyState(max_unexplained=0, synced_within=60.0))


# ------------------------------------------------------------------------------------------ sampling

def proc_sample(pid: int | None) -> dict[str, Any] | None:
    """RSS (MiB) and open file descriptors of a process, from /proc; None if it is gone."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError):
        return None
    return {"pid": pid, "rssMiB": round(rss / 1024.0, 1), "fds": fds}


class Sampler:
    """Every `every` seconds: each control-plane replica, and the Envoy and agent of `pod` (the load's: it is
    never killed, so one process is followed over the whole run)."""

    def __init__(self, state_dir: str, pod: str, every: float = 60.0):
        self.state_dir, self.pod, self.every = state_dir, pod, every
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.time()

    def sample(self) -> dict[str, Any]:
        st = live_status(self.state_dir) or {}
        row: dict[str, Any] = {"t": round(time.time() - self.t0, 1)}
        for c in st.get("components") or []:
            if c.get("kind") == "controlplane":
                row[c["name"]] = proc_sample(c.get("pid"))
            elif c.get("pod") == self.pod and c.get("kind") in ("envoy", "agent"):
                row[f"sidecar-{c['kind']}"] = proc_sample(c.get("pid"))
        self.samples.append(row)
        return row

    def _run(self) -> None:
        self.sample()
        while not self._stop.wait(self.every):
            self.sample()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(10)
        self.sample()
        return self.samples


def growth(samples: list[dict[str, Any]], key: str, field: str) -> tuple[float, float] | None:
    """(first, last) value of one process's field, over the samples where it was the same process."""
    rows = [r[key] for r in samples if r.get(key)]
    if not rows:
        return None
    last_pid = rows[-1]["pid"]
    same = [r for r in rows if r["pid"] == last_pid]
    return float(same[0][field]), float(same[-1][field])
