"""The scenario's HTTP load: `python -m mizzen.chaos.load URL --rps R --seconds S`, run inside a pod (through its
sidecar, like the pod's app). Standard library only.

Open loop at a fixed rate (request i is due at start + i/R, whatever happened to the ones before), over
keep-alive connections from `--concurrency` workers, bounded by `--seconds` (at most 3600) and ended early by
`--stop-file`. Each request carries `x-request-id: <run>-<i>`, so a failure can be found in the caller sidecar's
access log (which upstream host, which response flags). Prints one JSON document at the end:

    {"start", "end", "rps", "total", "ok", "failed", "status": {code: n}, "errors": {type: n},
     "servedBy": {value: n}, "latencyMs": {"p50", "p90", "p99", "max"},
     "buckets": [[second, ok, failed, p50 ms, p99 ms, late], ...],
     "failures": [{"id", "t", "ms", "status", "error"}, ...]  (the first 5000)}

`late` counts requests that started more than a second after they were due (the load itself fell behind:
not the mesh's fault, but it makes the rate lower than asked).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import sys
import threading
import time
import urllib.parse
from collections import Counter
from typing import Any

MAX_SECONDS = 3600.0
MAX_FAILURES = 5000


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[i]


class Load:
    def __init__(self, url: str, rps: float, seconds: float, concurrency: int, expect: set[int],
                 headers: dict[str, str], stop_file: str = "", timeout: float = 10.0):
        self.url = urllib.parse.urlsplit(url)
        self.path = self.url.path + (f"?{self.url.query}" if self.url.query else "")
        self.rps, self.seconds = rps, min(seconds, MAX_SECONDS)
        self.concurrency = max(1, concurrency)
        self.expect, self.headers, self.stop_file, self.timeout = expect, headers, stop_file, timeout
        self.run_id = secrets.token_hex(3)
        self.lock = threading.Lock()
        self.issued = 0
        self.stopped = False
        self.status: Counter = Counter()
        self.errors: Counter = Counter()
        self.served: Counter = Counter()
        self.buckets: dict[int, list[Any]] = {}
        self.failures: list[dict[str, Any]] = []
        self.start_mono = 0.0
        self.start_wall = 0.0

    def _slot(self) -> tuple[int, float] | None:
        with self.lock:
            i = self.issued
            now = time.monotonic()
            if self.stopped or now - self.start_mono >= self.seconds:
                return None
            if self.stop_file and i % 50 == 0 and os.path.exists(self.stop_file):
                self.stopped = True
                return None
            self.issued += 1
        return i, self.start_mono + i / self.rps

    def _record(self, i: int, due: float, t0: float, t1: float, status: int | None, error: str | None,
                served: str) -> None:
        ok = error is None and status in self.expect
        sec = int(t0 - self.start_mono)
        with self.lock:
            b = self.buckets.setdefault(sec, [0, 0, [], 0])
            b[0 if ok else 1] += 1
            b[2].append((t1 - t0) * 1000.0)
            if t0 - due > 1.0:
                b[3] += 1
            if status is not None:
                self.status[str(status)] += 1
            if error is not None:
                self.errors[error] += 1
            self.served[served or "-"] += 1
            if not ok and len(self.failures) < MAX_FAILURES:
                self.failures.append({"id": f"{self.run_id}-{i}", "t": round(self.start_wall + (t0 - self.start_mono), 4),
                                      "ms": round((t1 - t0) * 1000.0, 2), "status": status, "error": error})

    def _worker(self) -> None:
        conn: http.client.HTTPConnection | None = None
        host, port = self.url.hostname or "localhost", self.url.port or 80
        while True:
            slot = self._slot()
            if slot is None:
                break
            i, due = slot
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t0 = time.monotonic()
            status, error, served = None, None, ""
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
                conn.request("GET", self.path, headers=dict(self.headers, **{"x-request-id": f"{self.run_id}-{i}"}))
                r = conn.getresponse()
                r.read()
                status, served = r.status, r.getheader("x-served-by", "")
                if (r.getheader("connection") or "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure is counted, by type
                error = type(e).__name__
                if conn is not None:
                    conn.close()
                conn = None
            self._record(i, due, t0, time.monotonic(), status, error, served)
        if conn is not None:
            conn.close()

    def run(self) -> dict[str, Any]:
        self.start_mono, self.start_wall = time.monotonic(), time.time()
        threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.seconds + self.timeout + 30)
        return self.result()

    def result(self) -> dict[str, Any]:
        with self.lock:
            lat = sorted(x for b in self.buckets.values() for x in b[2])
            buckets = []
            for sec in sorted(self.buckets):
                ok, failed, ls, late = self.buckets[sec]
                ls = sorted(ls)
                buckets.append([sec, ok, failed, round(percentile(ls, 0.5), 2), round(percentile(ls, 0.99), 2), late])
            ok = sum(b[1] for b in buckets)
            failed = sum(b[2] for b in buckets)
            return {"start": round(self.start_wall, 4), "end": round(time.time(), 4), "rps": self.rps,
                    "url": self.url.geturl(), "runId": self.run_id, "total": ok + failed, "ok": ok, "failed": failed,
                    "status": dict(self.status), "errors": dict(self.errors), "servedBy": dict(self.served),
                    "latencyMs": {"p50": round(percentile(lat, 0.5), 2), "p90": round(percentile(lat, 0.9), 2),
                                  "p99": round(percentile(lat, 0.99), 2), "max": round(lat[-1], 2) if lat else 0.0},
                    "buckets": buckets, "failures": self.failures}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fixed-rate HTTP load of `mizzen chaos run`")
    ap.add_argument("url")
    ap.add_argument("--rps", type=float, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--expect", default="200", help="comma-separated statuses that count as success")
    ap.add_argument("-H", "--header", action="append", default=[])
    ap.add_argument("--stop-file", default="")
    ap.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    a = ap.parse_args(argv)
    if a.rps <= 0 or a.seconds <= 0:
        ap.error("--rps and --seconds must be positive")
    headers = {k.strip(): v.strip() for k, v in (h.split(":", 1) for h in a.header)}
    load = Load(a.url, a.rps, a.seconds, a.concurrency, {int(x) for x in a.expect.split(",") if x.strip()},
                headers, a.stop_file, a.timeout)
    out = load.run()
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
