"""The SDK's view of the mesh, fed by the control plane's REST API watch and kept through its outages.

    feed = Feed(ApiClient(state_dir, timeout=2), snapshot_file="/var/lib/app/mesh.json")
    feed.start()          # the snapshot file first (if any), then the control plane; a thread keeps watching
    snap = feed.snapshot  # the last good view: from the control plane, else the file, else empty

The feed reads the caller's view — the config it may read and the registry's instances — with `GET
/api/v1/watch` (server/watch.py), a long-poll: it sends the version it has and the control plane answers as
soon as that view changes (or after `wait` seconds, with nothing new). Each new view builds a new
`model.Snapshot` (the control plane's own model: the SDK applies exactly the rules sidecars get) and is written,
atomically, to the snapshot file. A control plane without the watch (an older one: 404) or with too many
watches waiting (429) is polled instead — `GET /api/v1/resources` + `GET /api/v1/instances` every `interval` —
and the watch is tried again every REPROBE seconds and after each outage. When the control plane cannot be
reached the feed keeps the last view, says so once in the log (and once when it is back), and retries every
`interval`; a process started during an outage starts from the snapshot file. Nothing here is ever
half-applied: a view that does not parse is logged and the previous one is kept.
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
from ..client import ApiClient, ClientError, HttpError
from ..model.snapshot import Snapshot
from ..model.types import Instance

log = logging.getLogger("mizzen.sdk")

REPROBE = 60.0  # seconds between tries of the watch on a control plane that had none
BUSY_RETRY = 5.0  # ... and on one that had too many watches waiting


def _digest(obj: Any) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=16).hexdigest()


def build_snapshot(resources: list[dict], instances: list[dict], generation: int = 0) -> Snapshot:
    # the store revision orders resources as the control plane orders them (e.g. the oldest VirtualService of
    # a host wins)
    res = [from_dict(d, int((d.get("metadata") or {}).get("resourceVersion") or 0)) for d in resources]
    return Snapshot.build(res, [Instance.from_dict(i) for i in instances], generation=generation)


class Feed:
    def __init__(self, api: ApiClient, *, snapshot_file: str | None = None, interval: float = 0.5,
                 watch: bool = True, wait: float = 30.0):
        """`interval`: the retry period while the control plane is unreachable, and the polling period without
        a watch; `watch`: use the REST API's watch (False: always poll); `wait`: how long one watch may wait."""
        self.api = api
        self.snapshot_file = snapshot_file
        self.interval = interval
        self.watch = watch
        self.wait = wait
        self.snapshot: Snapshot = Snapshot.build((), ())
        self.source = "empty"  # empty | file | control-plane
        self.generation = 0
        self.connected = False
        self.last_ok: float | None = None  # monotonic
        self.fetches = 0
        self.failures = 0
        self.version: str | None = None  # the control plane's version of the view we have (watch)
        self._watch_ok = watch  # False: polling, until `_probe_at` (monotonic)
        self._probe_at = 0.0
        self._watching = False  # a watch that may wait is in flight
        self._fallbacks: set[int] = set()  # the HTTP statuses that made the feed poll (logged once each)
        self._digest = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list = []
        self.changed = threading.Condition()

    @property
    def mode(self) -> str:
        return "watch" if self._watch_ok else "poll"

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, wait: float = 5.0) -> "Feed":
        """Load the snapshot file, then try the control plane for up to `wait` seconds; a thread keeps the view
        up to date."""
        if self.snapshot_file and os.path.exists(self.snapshot_file):
            self._load_file()
        deadline = time.monotonic() + wait
        while not self.refresh() and time.monotonic() < deadline and self.source == "empty":
            time.sleep(0.2)
        self._thread = threading.Thread(target=self._run, name="mizzen-sdk-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following the control plane. A watch in flight is not waited for: the thread ends when it
        answers (at most `wait` seconds later) and applies nothing more."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(0.0 if self._watching else 5.0)

    def on_change(self, fn) -> None:
        self._listeners.append(fn)

    # -- reading the control plane ---------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            if self._use_watch():
                answered = self._watch(self.version if self.connected else None)
                if answered is True:
                    continue  # at once: the next watch waits on the server
                if answered is None and self.poll():  # no watch there: this round polls
                    continue
            if self._stop.wait(self.interval):
                return
            if not self._use_watch():
                self.poll()

    def refresh(self) -> bool:
        """One read of the control plane, answered at once; True if it answered."""
        if self._use_watch():
            answered = self._watch(None)
            if answered is not None:
                return answered
        return self.poll()

    def _use_watch(self) -> bool:
        if not self._watch_ok and self.watch and time.monotonic() >= self._probe_at:
            self._watch_ok = True  # try it again: the control plane may have been upgraded, or calmed down
        return self._watch_ok

    def _watch(self, version: str | None) -> bool | None:
        """One watch: True if the control plane answered, False if it could not be reached, None if it has no
        watch for us (then poll)."""
        self.fetches += 1
        self._watching = version is not None
        try:
            out = self.api.watch(version, self.wait)
        except HttpError as e:
            if e.status not in (404, 405, 429):
                self._failed(e)
                return False
            if e.status not in self._fallbacks:  # said once per reason
                self._fallbacks.add(e.status)
                if e.status == 429:
                    log.info("the control plane has too many watches waiting (%s): polling every %.1fs, trying "
                             "the watch again every %ds", e, self.interval, BUSY_RETRY)
                else:
                    log.info("the control plane has no watch (an older version: %s): polling every %.1fs",
                             e, self.interval)
            self._watch_ok = False
            self._probe_at = time.monotonic() + (BUSY_RETRY if e.status == 429 else REPROBE)
            return None
        except ClientError as e:
            self._failed(e)
            return False
        finally:
            self._watching = False
        self._reached()
        if out.get("changed") and not self._stop.is_set():
            self.version = str(out.get("version") or "") or None
            self._apply(list(out.get("resources") or ()), list(out.get("instances") or ()), "control-plane")
        return True

    def poll(self) -> bool:
        """One read of the control plane without the watch (`resources` + `instances`); True if it answered."""
        self.fetches += 1
        try:
            resources = self.api.list_resources()
            instances = self.api.instances()
        except ClientError as e:
            self._failed(e)
            return False
        self._reached()
        if not self._stop.is_set():
            self._apply(resources, instances, "control-plane")
        return True

    def _failed(self, e: ClientError) -> None:
        self.failures += 1
        if self.connected or self.last_ok is None and self.failures == 1:
            log.warning("control plane unreachable (%s): serving the last mesh view (%s, generation %d); "
                        "calls go on with it", e, self.source, self.generation)
        self.connected = False
        if self.watch:
            self._probe_at = 0.0  # what comes back may be a newer control plane: try the watch first

    def _reached(self) -> None:
        if not self.connected and self.last_ok is not None:
            log.info("control plane reachable again")
        self.connected = True
        self.last_ok = time.monotonic()

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
                "mode": self.mode, "version": self.version, "fetches": self.fetches, "failures": self.failures}
