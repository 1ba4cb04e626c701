"""The SDK's view of the mesh, fed by the control plane's REST API and kept through its outages.

    feed = Feed(ApiClient(state_dir, timeout=2), snapshot_file="/var/lib/app/mesh.json", interval=0.5)
    feed.start()          # the snapshot file first (if any), then the control plane; a thread keeps polling
    snap = feed.snapshot  # the last good view: from the control plane, else the file, else empty

Every `interval` the feed reads the config (`GET /api/v1/resources`) and the instances (`GET
/api/v1/instances`); when either changed it builds a new `model.Snapshot` (the control plane's own model:
the SDK applies exactly the rules sidecars get) and writes both, atomically, to the snapshot file. When the
control plane cannot be reached the feed keeps the last view and says so once in the log (and once when it is
back); a process started during an outage starts from the snapshot file. Nothing here is ever half-applied:
a view that does not parse is logged and the previous one is kept.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from typing import Any

from ..api.load import from_dict
from ..client import ApiClient, ClientError
from ..model.snapshot import Snapshot
from ..model.types import Instance

log = logging.getLogger("mizzen.sdk")


def _digest(obj: Any) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=16).hexdigest()


def build_snapshot(resources: list[dict], instances: list[dict], generation: int = 0) -> Snapshot:
    # the store revision orders resources as the control plane orders them (e.g. the oldest VirtualService of
    # a host wins)
    res = [from_dict(d, int((d.get("metadata") or {}).get("resourceVersion") or 0)) for d in resources]
    return Snapshot.build(res, [Instance.from_dict(i) for i in instances], generation=generation)


class Feed:
    def __init__(self, api: ApiClient, *, snapshot_file: str | None = None, interval: float = 0.5):
        self.api = api
        self.snapshot_file = snapshot_file
        self.interval = interval
        self.snapshot: Snapshot = Snapshot.build((), ())
        self.source = "empty"  # empty | file | control-plane
        self.generation = 0
        self.connected = False
        self.last_ok: float | None = None  # monotonic
        self.fetches = 0
        self.failures = 0
        self._digest = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list = []
        self.changed = threading.Condition()

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, wait: float = 5.0) -> "Feed":
        """Load the snapshot file, then try the control plane for up to `wait` seconds; poll in a thread."""
        if self.snapshot_file and os.path.exists(self.snapshot_file):
            self._load_file()
        deadline = time.monotonic() + wait
        while not self.poll() and time.monotonic() < deadline and self.source == "empty":
            time.sleep(0.2)
        self._thread = threading.Thread(target=self._run, name="mizzen-sdk-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def on_change(self, fn) -> None:
        self._listeners.append(fn)

    # -- polling ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> bool:
        """One read of the control plane; True if it answered."""
        self.fetches += 1
        try:
            resources = self.api.list_resources()
            instances = self.api.instances()
        except ClientError as e:
            self.failures += 1
            if self.connected or self.last_ok is None and self.failures == 1:
                log.warning("control plane unreachable (%s): serving the last mesh view (%s, generation %d); "
                            "calls go on with it", e, self.source, self.generation)
            self.connected = False
            return False
        if not self.connected and self.last_ok is not None:
            log.info("control plane reachable again")
        self.connected = True
        self.last_ok = time.monotonic()
        self._apply(resources, instances, "control-plane")
        return True

    def _apply(self, resources: list[dict], instances: list[dict], source: str) -> None:
        digest = _digest([resources, instances])
        if digest == self._digest:
            self.source = source if source == "control-plane" else self.source
            return
        try:
            snap = build_snapshot(resources, instances, self.generation + 1)
        except Exception as e:  # keep the previous view rather than a broken one
            log.error("mesh view from %s does not build (%s): keeping the previous one", source, e)
            return
        self.snapshot, self.source, self._digest = snap, source, digest
        self.generation += 1
        if source == "control-plane":
            self._write_file(resources, instances)
        with self.changed:
            self.changed.notify_all()
        for fn in self._listeners:
            try:
                fn(snap)
            except Exception:  # a listener's bug must not stop the feed
                log.exception("mesh view listener failed")

    # -- the snapshot file -----------------------------------------------------------------------------
    def _write_file(self, resources: list[dict], instances: list[dict]) -> None:
        if not self.snapshot_file:
            return
        tmp = f"{self.snapshot_file}.tmp.{os.getpid()}"
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.snapshot_file)), exist_ok=True)
            with open(tmp, "w") as f:
                json.dump({"version": 1, "resources": resources, "instances": instances}, f)
            os.replace(tmp, self.snapshot_file)
        except OSError as e:
            log.warning("cannot write the mesh snapshot file %s (%s): a restart during a control-plane outage "
                        "would start without routes", self.snapshot_file, e)

    def _load_file(self) -> None:
        try:
            with open(self.snapshot_file or "") as f:
                data = json.load(f)
            self._apply(list(data["resources"]), list(data["instances"]), "file")
            log.info("mesh view loaded from %s (generation %d)", self.snapshot_file, self.generation)
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("mesh snapshot file %s unreadable (%s): ignored", self.snapshot_file, e)

    def status(self) -> dict[str, Any]:
        return {"source": self.source, "generation": self.generation, "connected": self.connected,
                "fetches": self.fetches, "failures": self.failures}
