"""Undoing faults: what `mizzen chaos stop`, the runner's teardown and `mizzen down` run.

Kept free of the runner's modules (it imports only the records, the undo actions and process helpers), so
that `local/` can call `stop_all()` first thing in its teardown without an import cycle.
"""
from __future__ import annotations

import os
import signal
import time

from ..local.netns import mesh_id
from ..local.procs import alive, cmdline, wait_gone
from .actions import undo_all, wait_drained
from .records import FaultStore
from .spec import Fault


def is_keeper(pid: int, fault_id: str) -> bool:
    argv = cmdline(pid)
    return alive(pid) and "mizzen.chaos.keeper" in argv and fault_id in argv


def stop_faults(store: FaultStore, faults: list[Fault], reason: str = "stop", timeout: float = 30.0) -> list[Fault]:
    """Undo these faults: their keepers are asked to (SIGTERM) and waited for; what a dead (or too slow, then
    SIGKILLed) keeper left is undone here from the record. Returns the records as they ended."""
    meshid = mesh_id(store.layout.root)
    signalled = []
    for f in faults:
        if not f.final and f.keeper_pid and is_keeper(f.keeper_pid, f.id):
            os.kill(f.keeper_pid, signal.SIGTERM)
            signalled.append(f.keeper_pid)
    for pid in wait_gone(signalled, timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out = []
    for f in faults:
        rec = store.load(f.id) or f
        if not rec.final:  # no keeper, or it was killed: undo from the record
            actions = list((rec.undo or {}).get("actions") or [])
            _, errors = undo_all(actions, meshid)
            wait_drained(actions, 10.0)
            lost = bool(rec.keeper_pid) and rec.keeper_pid not in signalled
            rec = store.update(rec.id, state="stopped", ended=time.time(),
                               ended_by=f"{reason} (keeper lost)" if lost else reason,
                               error="; ".join(errors) or None) or rec
        elif rec.ended_by == "stop" and reason != "stop":
            rec = store.update(rec.id, ended_by=reason) or rec
        out.append(rec)
    return out


def stop_all(state_dir: str, reason: str = "teardown") -> list[str]:
    """Undo every active fault of a mesh (the runner's teardown, `mizzen down`): lines saying what was undone.
    Cheap when there is none (one directory listing)."""
    store = FaultStore(state_dir)
    active = store.active()
    if not active:
        return []
    return [f"chaos fault {f.id} ({f.describe()} on {f.where()}) undone: {f.state}"
            for f in stop_faults(store, active, reason, timeout=15.0)]
