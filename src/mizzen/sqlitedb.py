"""Opening the SQLite files that the config store and the embedded registry share between control-plane
replicas (processes on one state dir)."""
from __future__ import annotations

import os
import sqlite3
import time

BUSY_TIMEOUT_MS = 5000
OPEN_SECONDS = 10.0


def open_shared(path: str | os.PathLike[str], schema: str) -> sqlite3.Connection:
    """A connection in WAL mode (several processes read while one writes) with a busy timeout, and the
    schema created. Two replicas starting at once on a fresh file race for the lock that switching to WAL
    and creating the schema take; the loser gets "database is locked" even with a busy timeout set (the
    journal-mode switch does not wait), so it retries for up to OPEN_SECONDS."""
    db = sqlite3.connect(os.fspath(path), check_same_thread=False, isolation_level=None)
    try:
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # first: every later statement waits for locks
        deadline = time.monotonic() + OPEN_SECONDS
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.executescript(schema)
                return db
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    except BaseException:
        db.close()
        raise
