"""A fault's keeper: `python -m mizzen.chaos.keeper STATE_DIR FAULT_ID` (started detached by `engine.py`).

It applies the fault recorded in `STATE/chaos/<id>.json`, marks it active, holds it — putting back relay rules
the runner's nat reloads removed, killing again on schedule for a repeated kill — and undoes it when it
expires or on SIGTERM/SIGINT (`mizzen chaos stop`, the runner's teardown, Ctrl-C of `mizzen chaos run`). Every
change is in the record before it is made, so a keeper that is SIGKILLed leaves nothing that
`mizzen chaos stop` or `mizzen down` cannot undo from the record.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any

from ..client import StateLayout
from ..local.meshstate import live_status
from ..local.netns import bridge_ns_name, mesh_id
from . import netfault, procfault
from .actions import ChaosError, check_netns, undo_all, wait_drained
from .records import FaultStore
from .spec import Fault, NetworkParams, Selection

log = logging.getLogger("mizzen.chaos")

WATCH_SECONDS = 0.5


class UndoLog(list):
    """Undo actions, saved into the fault's record as each one is added."""

    def __init__(self, store: FaultStore, fault_id: str):
        super().__init__()
        self.store, self.fault_id = store, fault_id

    def append(self, item: Any) -> None:  # type: ignore[override]
        super().append(item)
        self.store.update(self.fault_id, undo={"actions": list(self)})


class Keeper:
    def __init__(self, state_dir: str, fault_id: str):
        self.store = FaultStore(state_dir)
        self.layout = StateLayout(state_dir)
        self.meshid = mesh_id(self.layout.root)
        self.fault_id = fault_id
        self.stop_reason: str | None = None
        self.undo = UndoLog(self.store, fault_id)
        self.used: dict[str, Any] = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop_reason = self.stop_reason or ("stop" if signum == signal.SIGTERM else "interrupt")

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        f = self.store.load(self.fault_id)
        if f is None:
            log.error("no record %s", self.fault_id)
            return 1
        code = 0
        try:
            self.apply(f)
            now = time.time()
            f = self.store.update(f.id, state="active", started=now, expires=now + (f.duration or 0),
                                  keeper_pid=os.getpid()) or f
            log.info("%s active on %s for %.1fs: %s", f.id, f.where(), f.duration or 0, f.describe())
            self.hold(f)
            ended_by = self.stop_reason or "expiry"
        except (ChaosError, OSError) as e:
            log.error("%s failed: %s", f.id, e)
            self.store.update(f.id, error=str(e))
            ended_by, code = "failed", 1
        finally:
            done, errors = undo_all(list(self.undo), self.meshid)
            for line in done:
                log.info("undo: %s", line)
            for e in errors:
                log.error("undo: %s", e)
            wait_drained(list(self.undo), 25.0)
            rec = self.store.load(self.fault_id)
            state = "failed" if (rec and rec.error) or ended_by == "failed" else \
                ("expired" if ended_by == "expiry" else "stopped")
            self.store.update(self.fault_id, state=state, ended=time.time(), ended_by=ended_by,
                              error=(rec.error if rec else None) or ("; ".join(errors) or None))
            log.info("%s %s", self.fault_id, state)
        return code

    # ------------------------------------------------------------------ apply
    def apply(self, f: Fault) -> None:
        if f.kind == "network":
            p = NetworkParams(**{k: f.params[k] for k in ("latency", "jitter", "loss", "bandwidth") if k in f.params})
            for i, t in enumerate(f.targets):
                check_netns(self.meshid, t.get("netns"))
                used = netfault.apply_network(f.id, t, bridge_ns_name(self.meshid), p, f.seed + i,
                                              self.layout.chaos_log(f"{f.id}-{t['name']}-relay"),
                                              os.path.join(self.layout.chaos_dir, f"{f.id}-{t['name']}.ready"),
                                              self.undo)
                self.used[t["name"]] = used
            self.store.update(f.id, params=dict(f.params, mechanism="netem" if any(
                u.get("netem") for u in self.used.values()) else "relay+iptables+tbf"))
        elif f.kind == "partition":
            if f.params.get("controlplane"):
                procfault.freeze(f.targets, self.undo)
            else:
                for t in f.targets:
                    check_netns(self.meshid, t.get("netns"))
                    netfault.apply_partition(f.id, t, t["peers"], self.undo)
        elif f.kind == "stress":
            procfault.stress(f, self.meshid, live_status(self.layout.root) or {}, self.undo)
        elif f.kind == "kill":
            self._kill_round(f)
        else:
            raise ChaosError(f"unknown fault kind {f.kind}")

    def _kill_round(self, f: Fault) -> None:
        """One round of a (repeated) kill. The first round chooses the pods (or replica) with the fault's seed;
        later rounds kill the same ones again — a crash loop hits one pod, not a new one each time."""
        st = live_status(self.layout.root) or {}
        rec = self.store.load(f.id) or f
        chosen = rec.params.get("chosen")
        if chosen is None:
            sel = Selection.from_dict(f.selection)
        elif f.params["target"] == "controlplane":
            sel = Selection(replica=chosen[0])
        else:
            sel = Selection(pods=tuple(chosen))
        hits = procfault.kill(st, f.params["target"], sel, f.seed, f.params.get("signal", 9))
        with self.store.locked():
            rec = self.store.load(f.id)
            if rec is not None:
                rec.targets = rec.targets + hits
                if chosen is None:
                    rec.params = dict(rec.params, chosen=sorted({h["replica"] if f.params["target"] == "controlplane"
                                                                 else h["pod"] for h in hits}))
                self.store.save(rec)
        for h in hits:
            log.info("killed %s pid %s", h["name"], h["pid"])

    # ------------------------------------------------------------------ hold
    def hold(self, f: Fault) -> None:
        end = time.monotonic() + (f.duration or 0)
        next_watch = time.monotonic() + WATCH_SECONDS
        every = f.params.get("every") if f.kind == "kill" else None
        next_kill = time.monotonic() + every if every else None
        while self.stop_reason is None and time.monotonic() < end:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))
            now = time.monotonic()
            if next_kill is not None and now >= next_kill and now < end:
                next_kill += every
                try:
                    self._kill_round(f)
                except ChaosError as e:  # nothing to kill right now (e.g. the Envoy is restarting)
                    log.info("kill round skipped: %s", e)
            if now >= next_watch:
                next_watch = now + WATCH_SECONDS
                self.watch(f)

    def watch(self, f: Fault) -> None:
        """Put back relay rules the runner's nat reload removed; notice a relay that died."""
        if f.kind != "network":
            return
        for t in f.targets:
            used = self.used.get(t["name"]) or {}
            if not used.get("relayPid"):
                continue
            try:
                if not netfault.nat_present(f.id, t["netns"]):
                    netfault.install_relay_nat(f.id, t, [])
                    # connections opened while the rules were gone bypass the relay: send them through it
                    n = netfault.reset_idle_connections(t["netns"], t["ip"])
                    log.info("%s: relay rules put back (the runner reloaded the nat table); %d idle connection(s) "
                             "reset", t["name"], n)
            except ChaosError as e:
                log.warning("%s: cannot check the relay rules: %s", t["name"], e)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m mizzen.chaos.keeper STATE_DIR FAULT_ID", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    return Keeper(args[0], args[1]).run()


if __name__ == "__main__":
    sys.exit(main())
