"""Process faults: kill (a pod's app, Envoy, agent, or a control-plane replica), freeze (a control plane cut off
from every sidecar), and CPU stress in a pod.

Only processes the runner recorded in its status are ever signalled, and only while they still run the
command line it recorded (PID reuse). Envoy's command line is not recorded by the runner: an Envoy is checked
to run the `envoy` binary with the pod's own bootstrap.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from typing import Any

from ..local.netns import NETNS_DIR
from ..local.procs import alive, cmdline
from .actions import ChaosError, NothingToKill, check_netns, in_netns
from .spec import Fault, Selection
from .targets import components, pick_processes

HOG = ["sh", "-c", "while :; do :; done"]


def _netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _verified(proc: dict[str, Any], netns: str | None = None) -> bool:
    """Is pid still the mesh's process? A pod's process must live in the pod's network namespace (netns mode);
    otherwise (the control plane, loopback mode) it must run the recorded command line — argv[0] compared by
    name, as an interpreter found on PATH may show its full path."""
    pid = proc.get("pid")
    if not alive(pid):
        return False
    argv = cmdline(pid)
    if proc["kind"] == "envoy" and not (argv and os.path.basename(argv[0]).startswith("envoy")
                                        and any(f"/pods/{proc.get('pod')}/" in a for a in argv)):
        return False
    if netns:
        want = _netns_inode(os.path.join(NETNS_DIR, netns))
        return want is not None and _netns_inode(f"/proc/{pid}/ns/net") == want
    want_argv = proc.get("cmdline")
    if not want_argv or proc["kind"] == "envoy":
        return True
    return len(argv) == len(want_argv) and argv[1:] == list(want_argv[1:]) and \
        os.path.basename(argv[0]) == os.path.basename(want_argv[0])


def kill(status: dict[str, Any], target: str, sel: Selection, seed: int, sig: int) -> list[dict[str, Any]]:
    """Signal what the selection picks; returns what was hit ({name, kind, pod, pid, signal, at})."""
    procs = pick_processes(status, target, sel, seed)
    netns = {p["name"]: p.get("netns") for p in status.get("pods") or []}
    ips = {p["name"]: p.get("ip") for p in status.get("pods") or []}
    hits = []
    for p in procs:
        if not _verified(p, netns.get(p.get("pod") or "")):
            continue
        try:
            if p.get("group"):
                os.killpg(p["pid"], sig)
            else:
                os.kill(p["pid"], sig)
        except ProcessLookupError:
            continue
        except PermissionError as e:
            raise ChaosError(f"cannot signal {p['name']} (pid {p['pid']}): {e}") from None
        hits.append({k: p.get(k) for k in ("name", "kind", "pod", "pid", "replica") if p.get(k) is not None}
                    | {"signal": sig, "at": time.time()} | ({"ip": ips[p["pod"]]} if p.get("pod") in ips else {}))
    if not hits:
        raise NothingToKill(f"no running {target} process to kill among {', '.join(p['name'] for p in procs)}")
    _envoy_deaths(status, hits)
    return hits


def _envoy_deaths(status: dict[str, Any], hits: list[dict[str, Any]]) -> None:
    """A killed agent takes its Envoy with it (PR_SET_PDEATHSIG), a little later: record when it died, which
    is when the requests in flight through it failed (explain.py)."""
    envoys = components(status, "envoy")
    waiting = {h["pod"]: envoys[h["pod"]]["pid"] for h in hits
               if h["kind"] == "agent" and h.get("pod") in envoys and alive(envoys[h["pod"]].get("pid"))}
    deadline = time.monotonic() + 2.0
    while waiting and time.monotonic() < deadline:
        for pod, pid in list(waiting.items()):
            if not alive(pid):
                for h in hits:
                    if h.get("pod") == pod and h["kind"] == "agent":
                        h["envoyDiedAt"] = time.time()
                del waiting[pod]
        time.sleep(0.002)


# ---------------------------------------------------------------------------------- control plane cut off

def freeze(targets: list[dict[str, Any]], undo: list[dict[str, Any]]) -> None:
    """SIGSTOP control-plane replicas: alive, holding every connection, answering nothing — what a partition
    between it and every sidecar looks like from both ends (see docs/chaos.md for why not iptables)."""
    for t in targets:
        if not _verified(t):
            raise ChaosError(f"{t['name']} (pid {t['pid']}) is not running")
        undo.append({"op": "cont", "pid": t["pid"], "cmdline": cmdline(t["pid"])})
        os.kill(t["pid"], signal.SIGSTOP)


# ------------------------------------------------------------------------------------------------ stress

def stress(f: Fault, meshid: str, st: dict[str, Any], undo: list[dict[str, Any]]) -> None:
    """`cpus` busy loops in the pod's namespace, sharing one CPU with the pod's app and Envoy (pinned for the
    duration): a noisy neighbour inside the pod, without starving the rest of the machine."""
    cpus = sorted(os.sched_getaffinity(0))
    cpu = random.Random(f.seed).choice(cpus)
    for t in f.targets:
        netns = check_netns(meshid, t.get("netns"))
        pinned = []
        for kind in ("app", "envoy"):
            c = components(st or {}, kind).get(t["name"])
            if c and alive(c.get("pid")):
                pinned.append(c["pid"])
        for pid in pinned:
            try:
                before = sorted(os.sched_getaffinity(pid))
                undo.append({"op": "affinity", "pid": pid, "cmdline": cmdline(pid), "cpus": before})
                os.sched_setaffinity(pid, {cpu})
            except OSError:
                continue
        for _ in range(int(f.params.get("cpus", 1))):
            proc = subprocess.Popen(in_netns(netns, HOG), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 5
            while cmdline(proc.pid) != HOG and time.monotonic() < deadline:
                time.sleep(0.02)
            if cmdline(proc.pid) != HOG:
                proc.kill()
                raise ChaosError(f"the CPU hog in {t['name']} did not start")
            undo.append({"op": "kill", "pid": proc.pid, "cmdline": HOG})
            os.sched_setaffinity(proc.pid, {cpu})
        t["cpu"] = cpu
