"""Bounded HTTP load client run *inside* a pod (via `mizzen exec`), stdlib only.

Sends requests to one URL, either a fixed count as fast as it can (--count) or at a fixed rate for a
fixed time (--rps/--seconds), over keep-alive connections like a real app, and prints one JSON line:
{"total", "status": {code: n}, "served_by": {value: n}, "errors": {type: n}, "seconds"}.
Always stops by itself: --count is capped at 100000 and --seconds at 600; --stop-file ends it earlier.
"""
from __future__ import annotations

import argparse
import os
import http.client
import json
import threading
import time
import urllib.parse
from collections import Counter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--rps", type=float, default=0)
    ap.add_argument("--seconds", type=float, default=0)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("-H", "--header", action="append", default=[])
    ap.add_argument("--field", default="x-served-by", help="response header to tally")
    ap.add_argument("--stop-file", default="", help="stop early once this file exists (--seconds still caps)")
    ap.add_argument("--requests-per-connection", type=int, default=0,
                    help="close a keep-alive connection after this many requests (0: never), as pooled clients "
                         "recycle theirs")
    a = ap.parse_args()
    count = min(a.count, 100000)
    seconds = min(a.seconds, 600.0)
    u = urllib.parse.urlsplit(a.url)
    path = u.path + (f"?{u.query}" if u.query else "")
    headers = dict(h.split(":", 1) for h in a.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    status: Counter = Counter()
    served: Counter = Counter()
    errors: Counter = Counter()
    lock = threading.Lock()
    start = time.monotonic()
    issued = [0]
    stopped = [False]

    def next_slot() -> float | None:
        with lock:
            i = issued[0]
            if count and i >= count:
                return None
            if seconds and time.monotonic() - start >= seconds:
                return None
            if stopped[0] or (a.stop_file and i % 50 == 0 and os.path.exists(a.stop_file)):
                stopped[0] = True
                return None
            if not count and not seconds:
                return None
            issued[0] += 1
        return start + i / a.rps if a.rps else 0.0

    def worker() -> None:
        conn = None
        used = 0
        while True:
            at = next_slot()
            if at is None:
                break
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                if conn is not None and a.requests_per_connection and used >= a.requests_per_connection:
                    conn.close()
                    conn = None
                if conn is None:
                    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
                    used = 0
                used += 1
                conn.request("GET", path, headers=headers)
                r = conn.getresponse()
                r.read()
                with lock:
                    status[str(r.status)] += 1
                    served[r.getheader(a.field, "-")] += 1
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure is counted, by type
                with lock:
                    errors[type(e).__name__] += 1
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, a.concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=(seconds or 600) + 30)
    print(json.dumps({"total": sum(status.values()) + sum(errors.values()), "status": dict(status),
                      "served_by": dict(served), "errors": dict(errors),
                      "seconds": round(time.monotonic() - start, 3)}))


if __name__ == "__main__":
    main()
