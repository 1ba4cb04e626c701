"""Bounded fixed-rate HTTP load for the rate-limit tests, stdlib only (run inside a pod with `mizzen exec`, or
on the host). Prints one JSON line: status counts, errors by type, admitted (2xx) requests per second of the
run, latency percentiles of admitted and rejected requests, and the headers of the first admitted and the
first rejected answer.

    python3 rl_load.py URL --rps 50 --seconds 4 [--concurrency 16] [-H 'Host: x'] [--stop-file F]

Request i is due at start + i/rps; a worker that is late sends at once (so a slow answer delays at most the
requests of that worker). Always stops: --seconds is capped at 120, --stop-file ends it earlier.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import threading
import time
import urllib.parse
from collections import Counter

KEEP = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after",
        "x-mizzen-ratelimit-delay-ms", "x-envoy-ratelimited", "x-served-by")


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--rps", type=float, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("-H", "--header", action="append", default=[])
    ap.add_argument("--stop-file", default="")
    a = ap.parse_args()
    seconds = min(a.seconds, 120.0)
    u = urllib.parse.urlsplit(a.url)
    path = u.path + (f"?{u.query}" if u.query else "")
    headers = {k.strip(): v.strip() for k, v in (h.split(":", 1) for h in a.header)}
    status: Counter = Counter()
    errors: Counter = Counter()
    per_second: Counter = Counter()
    lat_ok: list[float] = []
    lat_rej: list[float] = []
    first: dict[str, dict] = {}
    lock = threading.Lock()
    start = time.monotonic()
    issued = [0]

    def next_slot() -> float | None:
        with lock:
            i = issued[0]
            at = start + i / a.rps
            if at - start >= seconds or (a.stop_file and i % 20 == 0 and os.path.exists(a.stop_file)):
                return None
            issued[0] += 1
        return at

    def worker() -> None:
        conn = None
        while True:
            at = next_slot()
            if at is None:
                break
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
                conn.request("GET", path, headers=headers)
                r = conn.getresponse()
                r.read()
                dt = time.monotonic() - t0
                kept = {k: r.getheader(k) for k in KEEP if r.getheader(k) is not None}
                with lock:
                    status[str(r.status)] += 1
                    if 200 <= r.status < 300:
                        lat_ok.append(dt)
                        per_second[int(t0 - start)] += 1
                        first.setdefault("ok", kept)
                    else:
                        lat_rej.append(dt)
                        first.setdefault(str(r.status), kept)
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
        t.join(timeout=seconds + 30)
    n = int(min(seconds, time.monotonic() - start) + 0.999)  # a stop file may end the run early
    print(json.dumps({
        "total": sum(status.values()) + sum(errors.values()), "status": dict(status), "errors": dict(errors),
        "ok_per_second": [per_second.get(i, 0) for i in range(n)],
        "latency_ok_ms": {"p50": pct(lat_ok, 50), "p90": pct(lat_ok, 90), "max": pct(lat_ok, 100)},
        "latency_rejected_ms": {"p50": pct(lat_rej, 50), "max": pct(lat_rej, 100)},
        "first": first, "seconds": round(time.monotonic() - start, 3)}))


if __name__ == "__main__":
    main()
