"""Choosing what a fault hits, from the runner's status document (`status.json`). Pure.

Only what the mesh created is ever a target: pods listed in the status (their network namespaces, which the
runner made) and the processes it records for them (control-plane replicas, agents, Envoys, apps). Random
choices use `random.Random(seed)`, so a recorded seed replays the same choice on the same mesh.
"""
from __future__ import annotations

import math
import random
from typing import Any

from .spec import Selection, SpecError


def pods_of(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods that run (not being stopped by a rollout or scale)."""
    return [p for p in status.get("pods") or [] if not p.get("terminating")]


def components(status: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """kind ("app", "agent", "envoy") → {pod name: component}; "controlplane" → {name: component}."""
    out = {}
    for c in status.get("components") or []:
        if c.get("kind") == kind:
            out[c.get("pod") or c["name"]] = c
    return out


def candidate_pods(status: dict[str, Any], sel: Selection, *, need_sidecar: bool = False,
                   need_netns: bool = False) -> list[dict[str, Any]]:
    pods = pods_of(status)
    known = {p["name"] for p in status.get("pods") or []}
    if sel.pods:
        missing = [n for n in sel.pods if n not in known]
        if missing:
            raise SpecError(f"no pod named {', '.join(missing)} (pods: {', '.join(sorted(known)) or 'none'})")
        pods = [p for p in pods if p["name"] in sel.pods]
    if sel.workload:
        pods = [p for p in pods if p.get("workload") == sel.workload]
        if not pods:
            raise SpecError(f"no running pod of workload {sel.workload!r}")
    if sel.app:
        pods = [p for p in pods if (p.get("labels") or {}).get("app") == sel.app]
        if not pods:
            raise SpecError(f"no running pod with label app={sel.app}")
    if sel.namespace:
        pods = [p for p in pods if p.get("namespace") == sel.namespace]
    pods = [p for p in pods if p["name"] not in sel.exclude]
    if need_sidecar:
        pods = [p for p in pods if p.get("sidecar")]
    if need_netns:
        pods = [p for p in pods if p.get("netns")]
    return sorted(pods, key=lambda p: p["name"])


def how_many(n: int, sel: Selection) -> int:
    """How many of n candidates a selection takes: count, percent (rounded up, at least 1), or all."""
    if sel.count is not None:
        if sel.count < 1:
            raise SpecError(f"count: at least 1, got {sel.count}")
        return min(sel.count, n)
    if sel.percent is not None:
        return min(n, max(1, math.ceil(n * sel.percent))) if sel.percent > 0 else 0
    return n


def choose(items: list[Any], sel: Selection, seed: int) -> list[Any]:
    """`how_many` of items, at random with seed (the order of items must be stable: sort them first)."""
    k = how_many(len(items), sel)
    if k >= len(items):
        return list(items)
    return sorted(random.Random(seed).sample(items, k), key=lambda x: x.get("name", "") if isinstance(x, dict) else x)


def pick_pods(status: dict[str, Any], sel: Selection, seed: int, **need: bool) -> list[dict[str, Any]]:
    pods = candidate_pods(status, sel, **need)
    if not pods:
        raise SpecError("no pod matches" + (" (only pods with a sidecar can be chosen)" if need.get("need_sidecar")
                                            else "") + (" (only pods in network namespaces: netns mode)"
                                                        if need.get("need_netns") else ""))
    return choose(pods, sel, seed)


def pick_processes(status: dict[str, Any], target: str, sel: Selection, seed: int) -> list[dict[str, Any]]:
    """The processes a kill hits: [{"name", "kind", "pod"?, "pid", "cmdline"?, "group"}]; `group` True: signal
    the process group (an app: it may be a shell with children)."""
    if target == "controlplane":
        cps = sorted(components(status, "controlplane").values(), key=lambda c: c.get("replica", 0))
        if sel.replica is not None:
            cps = [c for c in cps if c.get("replica") == sel.replica]
            if not cps:
                raise SpecError(f"no control-plane replica {sel.replica}")
        if not cps:
            raise SpecError("no control-plane replica")
        cps = [c for c in cps if c.get("pid") and c.get("state") == "running"]
        if not cps:  # being restarted by the runner (e.g. after the previous kill): nothing to hit right now
            from .actions import NothingToKill
            raise NothingToKill("no running control-plane replica (each is being restarted)")
        chosen = choose(cps, sel if (sel.count or sel.percent) else Selection(count=1), seed) \
            if sel.replica is None else cps
        return [{"name": c["name"], "kind": "controlplane", "pid": c["pid"], "cmdline": c.get("cmdline"),
                 "group": False, "replica": c.get("replica")} for c in chosen]
    kinds = {"app": ("app",), "envoy": ("envoy",), "agent": ("agent",), "pod": ("app", "agent")}[target]
    comps_of = {kind: components(status, kind) for kind in kinds}
    pods = candidate_pods(status, sel, need_sidecar=target in ("envoy", "agent"))
    if pods:
        # chosen among the pods where that process runs now: a replica a rollout is still starting (its app not
        # up yet) or an Envoy being restarted is not a target a drill can hit -- drawing it would skip the kill
        live = [p for p in pods if any((comps_of[k].get(p["name"]) or {}).get("pid") for k in kinds)]
        pods = choose(live, sel, seed) if live else pods
    else:
        pods = pick_pods(status, sel, seed, need_sidecar=target in ("envoy", "agent"))  # its clear error
    out = []
    for kind in kinds:
        comps = comps_of[kind]
        for p in pods:
            c = comps.get(p["name"])
            if c is None or not c.get("pid"):
                continue
            out.append({"name": c["name"], "kind": kind, "pod": p["name"], "pid": c["pid"],
                        "cmdline": c.get("cmdline"), "group": kind == "app"})
    if not out:
        from .actions import NothingToKill
        raise NothingToKill(f"no running {target} process in {', '.join(p['name'] for p in pods)}")
    return out
