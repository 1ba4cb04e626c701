"""Doing and undoing one step of a fault, inside the mesh's own namespaces and on the mesh's own processes.

Every change a fault makes is recorded as an *undo action* (a dict, kept in the fault's record) before or as it
is made, so anyone — the fault's keeper at expiry, `mizzen chaos stop`, the runner's teardown, `mizzen down`
after a crash — can undo it from the record alone. Undo actions are idempotent: what is already gone (a rule,
a namespace, a process) is skipped.

    {"op": "jump",  "netns", "table", "chain", "rule": [...]}   iptables -D <chain> <rule...> (every copy)
    {"op": "chain", "netns", "table", "name"}                   iptables -F/-X <name>
    {"op": "qdisc", "netns", "dev"}                             tc qdisc del dev <dev> root
    {"op": "kill",  "pid", "cmdline", "drain": bool}            SIGTERM (drain: no wait) / SIGKILL a helper we started
    {"op": "cont",  "pid", "cmdline"}                           SIGCONT a frozen process
    {"op": "affinity", "pid", "cmdline", "cpus": [...]}         restore a process's CPU affinity

A namespace is only ever entered if its name starts with the mesh's prefix (`mizzen-<meshid>-`) and it exists;
a process is only ever signalled if it still runs the command line recorded for it.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from typing import Any, Sequence

from ..local.netns import NetnsError, exec_argv, list_namespaces, prefix
from ..local.netns import run as netns_run
from ..local.procs import alive, cmdline, wait_gone

log = logging.getLogger("mizzen.chaos")


class ChaosError(RuntimeError):
    """A fault could not be applied or undone; the message says which command failed and why."""


class NothingToKill(ChaosError):
    """A kill found its pods but no running process of the kind asked for (e.g. an Envoy restarting)."""


def check_netns(meshid: str, netns: str | None) -> str:
    """The namespace, if it is one of this mesh's (else ChaosError): faults never touch any other."""
    if not netns or not netns.startswith(prefix(meshid)):
        raise ChaosError(f"refusing to touch network namespace {netns!r}: not one of mesh {meshid}'s "
                         f"(netns mode only; loopback mode has no namespaces to fault)")
    return netns


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float = 20) -> subprocess.CompletedProcess:
    """local/netns.py's `run`, its failures as ChaosError."""
    try:
        return netns_run(argv, input=input, check=check, timeout=timeout)
    except NetnsError as e:
        raise ChaosError(str(e)) from None


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    return exec_argv(netns, argv)


def iptables(netns: str, table: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(in_netns(netns, ["iptables", "-w", "5", "-t", table, *args]), check=check)


def same(pid: int | None, argv: Sequence[str] | None) -> bool:
    if not alive(pid):
        return False
    return not argv or cmdline(int(pid or 0)) == list(argv)


def undo_one(action: dict[str, Any], meshid: str) -> str | None:
    """Undo one action; returns a line saying what was done (None: nothing was left to undo)."""
    op = action.get("op")
    if op in ("jump", "chain", "qdisc"):
        netns = check_netns(meshid, action.get("netns"))
        if netns not in list_namespaces():
            return None
        if op == "jump":
            n = 0
            while iptables(netns, action["table"], "-D", action["chain"], *action["rule"], check=False).returncode == 0:
                n += 1
            return f"{netns}: removed {action['table']} {action['chain']} -> {action['rule'][-1]}" if n else None
        if op == "chain":
            if iptables(netns, action["table"], "-F", action["name"], check=False).returncode != 0:
                return None
            iptables(netns, action["table"], "-X", action["name"], check=False)
            return f"{netns}: removed chain {action['table']} {action['name']}"
        p = run(["tc", "-n", netns, "qdisc", "del", "dev", action["dev"], "root"], check=False)
        return f"{netns}: removed qdisc on {action['dev']}" if p.returncode == 0 else None
    pid = action.get("pid")
    if not same(pid, action.get("cmdline")):
        return None
    if op == "kill":
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return None
        if not action.get("drain"):
            if wait_gone([pid], 3.0):
                os.kill(pid, signal.SIGKILL)
                wait_gone([pid], 2.0)
        return f"stopped pid {pid} ({os.path.basename((action.get('cmdline') or ['?'])[0])})"
    if op == "cont":
        os.kill(pid, signal.SIGCONT)
        return f"resumed pid {pid}"
    if op == "affinity":
        try:
            os.sched_setaffinity(pid, action["cpus"])
        except OSError:
            return None
        return f"restored the CPU affinity of pid {pid}"
    raise ChaosError(f"unknown undo action {op!r}")


def undo_all(actions: list[dict[str, Any]], meshid: str) -> tuple[list[str], list[str]]:
    """Undo in reverse order of application; (what was done, errors). Never stops at the first error."""
    done, errors = [], []
    for a in reversed(actions):
        try:
            line = undo_one(a, meshid)
            if line:
                done.append(line)
        except (ChaosError, OSError) as e:
            errors.append(str(e))
    return done, errors


def wait_drained(actions: list[dict[str, Any]], timeout: float) -> None:
    """Wait (bounded) for draining helpers (relays) to exit by themselves; SIGKILL what is left."""
    pids = [a["pid"] for a in actions if a.get("op") == "kill" and a.get("drain") and same(a["pid"], a.get("cmdline"))]
    deadline = time.monotonic() + timeout
    for pid in wait_gone(pids, max(0.0, deadline - time.monotonic())):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
