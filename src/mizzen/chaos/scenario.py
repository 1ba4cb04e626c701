"""`ChaosScenario` files (`apiVersion: mizzen.dev/v1`): parse and validate. Pure (the text is passed in).

    apiVersion: mizzen.dev/v1
    kind: ChaosScenario
    metadata: {name: rollout-during-cp-kill}
    spec:
      seed: 42                          # optional: every random choice of the run derives from it
      setup:                            # optional: resources applied before the load, deleted after the run
      - {apiVersion: networking.istio.io/v1, kind: DestinationRule, ...}
      load:
        from: sleep                     # pod, workload or app label of the pod the load runs in (its sidecar)
        target: http://web:9080/details/0
        rate: 200                       # requests per second (open loop)
        duration: 60s
        concurrency: 32                 # optional, default 32 (open loop: enough for rate × latency)
        expectStatus: [200]             # optional, default [200]
        timeout: 10s                    # optional, per request
        accessLog: true                 # optional: log the load's requests at its sidecar to explain failures
      faults:                           # `at` is the offset from the load's start
      - at: 10s
        kill: {target: controlplane, replica: 0}          # app|envoy|agent|pod|controlplane; pod/pods/workload/app,
                                                          # count/percent, signal, every + duration
      - at: 12s
        rollout: {workload: web-v1}                        # `mizzen rollout restart` (an operation, not a fault)
      - at: 20s
        network: {pods: [web-v1-0], latency: 100ms, jitter: 20ms, loss: 30%, bandwidth: 1mbit, duration: 30s}
      - at: 5s
        partition: {controlplane: true, duration: 60s}    # or {a: {workload: x}, b: {pods: [y]}, duration}
      - at: 5s
        stress: {pod: web-v1-0, cpus: 1, duration: 20s}
      steadyState:                      # every check is optional
        maxErrorRatio: 1%               # failed / total
        maxUnexplained: 0               # failures not explained by a killed process's in-flight requests
        p99: 250ms                      # over the whole run
        syncedWithin: 30s               # every proxy SYNCED again at most this long after the last fault ended
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .spec import (KILL_TARGETS, NetworkParams, Selection, SpecError, parse_duration, parse_percent, parse_rate,
                   parse_signal)

KIND = "ChaosScenario"
API_VERSION = "mizzen.dev/v1"
ACTIONS = ("kill", "network", "partition", "stress", "rollout")
MAX_LOAD_SECONDS = 3600.0


class ScenarioError(ValueError):
    """Bad scenario file: every problem, each naming the file, the scenario and the field."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class LoadSpec:
    source: str
    target: str
    rate: float
    duration: float
    concurrency: int = 32
    expect: tuple[int, ...] = (200,)
    timeout: float = 10.0
    access_log: bool = True


@dataclass(frozen=True)
class Step:
    at: float
    action: str  # kill | network | partition | stress | rollout
    args: dict[str, Any]  # validated, parsed values (see _step)
    index: int = 0

    def describe(self) -> str:
        a = self.args
        if self.action == "kill":
            return f"kill {a['target']}" + (f" every {a['every']:g}s for {a['duration']:g}s" if a.get("every") else "")
        if self.action == "rollout":
            return f"rollout restart {a['workload']}"
        if self.action == "network":
            return f"network {a['params'].describe()} for {a['duration']:g}s"
        if self.action == "partition":
            return f"partition {'controlplane' if a.get('controlplane') else 'pods'} for {a['duration']:g}s"
        return f"stress {a['cpus']} cpu for {a['duration']:g}s"


@dataclass(frozen=True)
class SteadyState:
    max_error_ratio: float | None = None
    max_unexplained: int | None = None
    p99: float | None = None  # seconds
    synced_within: float | None = None  # seconds


@dataclass(frozen=True)
class Scenario:
    name: str
    file: str
    load: LoadSpec
    steps: tuple[Step, ...]
    steady: SteadyState
    seed: int | None = None
    setup: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def setup_yaml(self) -> str:
        return yaml.safe_dump_all(list(self.setup), sort_keys=False) if self.setup else ""


def _selection(d: dict[str, Any], where: str, problems: list[str]) -> Selection:
    pods = d.get("pods") or ([d["pod"]] if d.get("pod") else [])
    if not isinstance(pods, list) or not all(isinstance(p, str) for p in pods):
        problems.append(f"{where}.pods: a list of pod names")
        pods = []
    percent = None
    if d.get("percent") is not None:
        try:
            percent = parse_percent(d["percent"], f"{where}.percent")
        except SpecError as e:
            problems.append(str(e))
    count = d.get("count")
    if count is not None and (not isinstance(count, int) or count < 1):
        problems.append(f"{where}.count: a whole number ≥ 1, got {count!r}")
        count = None
    exclude = d.get("exclude") or []
    return Selection(pods=tuple(pods), workload=d.get("workload"), app=d.get("app"), namespace=d.get("namespace"),
                     count=count, percent=percent, exclude=tuple(exclude), replica=d.get("replica"))


_KEYS = {
    "kill": {"target", "pod", "pods", "workload", "app", "namespace", "count", "percent", "exclude", "replica",
             "signal", "every", "duration"},
    "network": {"pod", "pods", "workload", "app", "namespace", "count", "percent", "exclude", "latency", "jitter",
                "loss", "bandwidth", "duration"},
    "partition": {"controlplane", "replica", "a", "b", "duration"},
    "stress": {"pod", "pods", "workload", "app", "namespace", "count", "percent", "exclude", "cpus", "duration"},
    "rollout": {"workload", "namespace"},
}


def _dur(d: dict[str, Any], key: str, where: str, problems: list[str], required: bool = False) -> float | None:
    if d.get(key) is None:
        if required:
            problems.append(f"{where}.{key}: required (e.g. 30s)")
        return None
    try:
        return parse_duration(d[key], f"{where}.{key}")
    except SpecError as e:
        problems.append(str(e))
        return None


def _step(i: int, raw: Any, where: str, problems: list[str]) -> Step | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: a mapping with `at` and one of {', '.join(ACTIONS)}")
        return None
    actions = [k for k in raw if k in ACTIONS]
    unknown = [k for k in raw if k not in ACTIONS and k != "at"]
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)} (expected `at` and one of {', '.join(ACTIONS)})")
    if len(actions) != 1:
        problems.append(f"{where}: exactly one of {', '.join(ACTIONS)}, got {', '.join(actions) or 'none'}")
        return None
    action = actions[0]
    at = _dur(raw, "at", where, problems, required=True)
    d = raw[action] or {}
    w = f"{where}.{action}"
    if not isinstance(d, dict):
        problems.append(f"{w}: a mapping")
        return None
    bad = sorted(set(d) - _KEYS[action])
    if bad:
        problems.append(f"{w}: unknown field(s) {', '.join(bad)} (known: {', '.join(sorted(_KEYS[action]))})")
    args: dict[str, Any] = {}
    n = len(problems)
    if action == "kill":
        if d.get("target") not in KILL_TARGETS:
            problems.append(f"{w}.target: one of {', '.join(KILL_TARGETS)}, got {d.get('target')!r}")
        args["target"] = d.get("target")
        args["selection"] = _selection(d, w, problems)
        try:
            args["signal"] = parse_signal(d.get("signal", "KILL"))
        except SpecError as e:
            problems.append(f"{w}.{e}")
        args["every"] = _dur(d, "every", w, problems)
        args["duration"] = _dur(d, "duration", w, problems, required=bool(d.get("every")))
    elif action == "network":
        args["selection"] = _selection(d, w, problems)
        try:
            p = NetworkParams(latency=_dur(d, "latency", w, problems) or 0.0, jitter=_dur(d, "jitter", w, problems) or 0.0,
                              loss=parse_percent(d["loss"], f"{w}.loss") if d.get("loss") is not None else 0.0,
                              bandwidth=parse_rate(d["bandwidth"], f"{w}.bandwidth") if d.get("bandwidth") else None)
            p.validate()
            args["params"] = p
        except SpecError as e:
            problems.append(f"{w}: {e}")
        args["duration"] = _dur(d, "duration", w, problems, required=True)
    elif action == "partition":
        args["duration"] = _dur(d, "duration", w, problems, required=True)
        if d.get("controlplane"):
            if d.get("a") or d.get("b"):
                problems.append(f"{w}: `controlplane: true` cuts the control plane from every sidecar; "
                                f"no `a`/`b` (a partition from some pods only is not supported)")
            args["controlplane"] = True
            args["replica"] = d.get("replica")
        else:
            for side in ("a", "b"):
                if not isinstance(d.get(side), dict):
                    problems.append(f"{w}.{side}: the pods of side {side.upper()} ({{pods: [...]}}, {{workload: x}} "
                                    f"or {{app: x}}), or `controlplane: true`")
                else:
                    args[side] = _selection(d[side], f"{w}.{side}", problems)
    elif action == "stress":
        args["selection"] = _selection(d, w, problems)
        cpus = d.get("cpus", 1)
        if not isinstance(cpus, int) or not 1 <= cpus <= 8:
            problems.append(f"{w}.cpus: 1 to 8, got {cpus!r}")
        args["cpus"] = cpus
        args["duration"] = _dur(d, "duration", w, problems, required=True)
    elif action == "rollout":
        if not d.get("workload"):
            problems.append(f"{w}.workload: required")
        args["workload"], args["namespace"] = d.get("workload"), d.get("namespace")
    if len(problems) > n or at is None:
        return None
    return Step(at=at, action=action, args=args, index=i)


def parse(text: str, file: str = "<input>") -> Scenario:
    """A scenario from YAML text; ScenarioError lists every problem found (file, scenario, field)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ScenarioError([f"{file}: not valid YAML: {e}"]) from None
    scen = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if len(scen) != 1:
        raise ScenarioError([f"{file}: expected one document of kind {KIND} ({API_VERSION}), found {len(scen)}"])
    doc = scen[0]
    name = ((doc.get("metadata") or {}).get("name")) or "?"
    where = f"{file}: {KIND} {name}"
    problems: list[str] = []
    if doc.get("apiVersion") != API_VERSION:
        problems.append(f"{where} field apiVersion: must be {API_VERSION}, got {doc.get('apiVersion')!r}")
    if name == "?":
        problems.append(f"{where} field metadata.name: required")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise ScenarioError(problems + [f"{where} field spec: required (load, faults, steadyState)"])
    bad = sorted(set(spec) - {"seed", "setup", "load", "faults", "steadyState"})
    if bad:
        problems.append(f"{where} field spec: unknown field(s) {', '.join(bad)}")
    sub: list[str] = []
    load = _load(spec.get("load"), sub)
    steps = []
    raw_faults = spec.get("faults") or []
    if not isinstance(raw_faults, list):
        sub.append("spec.faults: a list")
        raw_faults = []
    for i, raw in enumerate(raw_faults):
        s = _step(i, raw, f"spec.faults[{i}]", sub)
        if s is not None:
            steps.append(s)
    steady = _steady(spec.get("steadyState") or {}, sub)
    setup = spec.get("setup") or []
    if not isinstance(setup, list) or not all(isinstance(r, dict) and r.get("kind") for r in setup):
        sub.append("spec.setup: a list of resources (each with apiVersion, kind, metadata)")
        setup = []
    seed = spec.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        sub.append(f"spec.seed: a whole number, got {seed!r}")
    if load is not None:
        for s in steps:
            if s.at >= load.duration:
                sub.append(f"spec.faults[{s.index}].at: {s.at:g}s is not within the load's {load.duration:g}s")
    problems += [f"{where} field {p}" for p in sub]
    if problems or load is None:
        raise ScenarioError(problems or [f"{where} field spec.load: required"])
    return Scenario(name=name, file=file, load=load, steps=tuple(sorted(steps, key=lambda s: (s.at, s.index))),
                    steady=steady, seed=seed, setup=tuple(setup))


def _load(d: Any, problems: list[str]) -> LoadSpec | None:
    if not isinstance(d, dict):
        problems.append("spec.load: required (from, target, rate, duration)")
        return None
    bad = sorted(set(d) - {"from", "target", "rate", "duration", "concurrency", "expectStatus", "timeout",
                           "accessLog"})
    if bad:
        problems.append(f"spec.load: unknown field(s) {', '.join(bad)}")
    n = len(problems)
    for k in ("from", "target"):
        if not isinstance(d.get(k), str) or not d.get(k):
            problems.append(f"spec.load.{k}: required")
    if isinstance(d.get("target"), str) and not d["target"].startswith("http://"):
        problems.append(f"spec.load.target: an http:// URL, got {d['target']!r}")
    rate = d.get("rate")
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 < rate <= 5000:
        problems.append(f"spec.load.rate: requests per second, 0 < rate ≤ 5000, got {rate!r}")
    duration = _dur(d, "duration", "spec.load", problems, required=True)
    if duration is not None and not 0 < duration <= MAX_LOAD_SECONDS:
        problems.append(f"spec.load.duration: at most {MAX_LOAD_SECONDS:g}s")
    conc = d.get("concurrency", 32)
    if not isinstance(conc, int) or not 1 <= conc <= 256:
        problems.append(f"spec.load.concurrency: 1 to 256, got {conc!r}")
    expect = d.get("expectStatus", [200])
    expect = [expect] if isinstance(expect, int) else expect
    if not isinstance(expect, list) or not all(isinstance(x, int) and 100 <= x <= 599 for x in expect):
        problems.append(f"spec.load.expectStatus: HTTP status codes, got {d.get('expectStatus')!r}")
    timeout = _dur(d, "timeout", "spec.load", problems) or 10.0
    if len(problems) > n:
        return None
    return LoadSpec(source=d["from"], target=d["target"], rate=float(rate), duration=float(duration or 0),
                    concurrency=conc, expect=tuple(expect), timeout=timeout, access_log=bool(d.get("accessLog", True)))


def _steady(d: Any, problems: list[str]) -> SteadyState:
    if not isinstance(d, dict):
        problems.append("spec.steadyState: a mapping")
        return SteadyState()
    bad = sorted(set(d) - {"maxErrorRatio", "maxUnexplained", "p99", "syncedWithin"})
    if bad:
        problems.append(f"spec.steadyState: unknown field(s) {', '.join(bad)}")
    ratio = None
    if d.get("maxErrorRatio") is not None:
        try:
            ratio = parse_percent(d["maxErrorRatio"], "spec.steadyState.maxErrorRatio")
        except SpecError as e:
            problems.append(str(e))
    unexplained = d.get("maxUnexplained")
    if unexplained is not None and (not isinstance(unexplained, int) or unexplained < 0):
        problems.append(f"spec.steadyState.maxUnexplained: a whole number ≥ 0, got {unexplained!r}")
        unexplained = None
    return SteadyState(max_error_ratio=ratio, max_unexplained=unexplained,
                       p99=_dur(d, "p99", "spec.steadyState", problems),
                       synced_within=_dur(d, "syncedWithin", "spec.steadyState", problems))
