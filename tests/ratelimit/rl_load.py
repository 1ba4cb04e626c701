"""Bounded fixed-rate HTTP load for the rate-limit tests, stdlib only (run inside a pod with `mizzen exec`, or
on the host). Prints one JSON line: status counts, errors by type, admitted (2xx) requests per second of the
run, latency percentiles of admitted and rejected requests, the headers of the first admitted and the first
rejected answer, how many answers announced a rate-limit delay (`x-mizzen-ratelimit-delay-ms`) and the
longest, and `decision_window_s`: every request was decided by whatever limits it within that many seconds
(from the first send to the latest answer less its announced delay) — what a limiter can admit is bounded
by its quota plus its rate times this window, however slow the machine.

    python3 rl_load.py URL --rps 50 --seconds 4 [--count N] [--arrivals even|poisson --seed S]
                       [--concurrency 16] [-H 'Host: x'] [--stop-file F] [--go-file G]

Request i is due at start + offset_i: i/rps (`even`), or the i-th arrival of a Poisson process of rate rps
(`poisson`, seeded: independent callers that are not phase-locked to each other or to a limiter's refill).
Every worker connects before the start (a burst is not spread by connection set-up); a worker that is late
sends at once (so a slow answer delays at most the requests of that worker). The run sends `planned`
requests: ceil(rps·seconds), or --count; fewer only if --stop-file ends it. The bound is on the request
index, never on clock arithmetic (`start + i/rps - start` rounds below i/rps on a large monotonic clock,
which once sent a 13th request of a burst of 12). With --go-file, the client prints `ready` once connected
and starts when that file exists (clients in several pods start together). Always stops: --seconds is capped at 120 (and --count at 120 s worth of requests), --go-file waits at most 120 s,
--stop-file ends a run earlier.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import sys
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
    ap.add_argument("--count", type=int, default=0, help="send exactly this many (default: ceil(rps·seconds))")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("-H", "--header", action="append", default=[])
    ap.add_argument("--stop-file", default="")
    ap.add_argument("--go-file", default="", help="print `ready`, start when this file exists")
    ap.add_argument("--arrivals", choices=("even", "poisson"), default="even")
    ap.add_argument("--seed", type=int, default=0, help="of the Poisson arrivals")
    a = ap.parse_args()
    seconds = min(a.seconds, 120.0)
    # the 1e-9 keeps a product like 0.03·400 = 12.000000000000002 from planning a 13th request
    planned = max(1, min(a.count or math.ceil(a.rps * seconds - 1e-9), math.ceil(a.rps * 120.0 - 1e-9)))
    if a.arrivals == "even":
        offsets = [i / a.rps for i in range(planned)]
    else:
        rnd, due, offsets = random.Random(a.seed), 0.0, []
        for _ in range(planned):
            offsets.append(due)
            due += rnd.expovariate(a.rps)
    span = offsets[-1] + 1 / a.rps  # the schedule's length (--count may make it differ from --seconds)
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
    workers = max(1, a.concurrency)
    clock = {"start": 0.0}
    # when each request was decided (by a limiter on its way) lies in [first send, max(answer − announced delay)]
    window = {"first": math.inf, "last": -math.inf}
    delays_ms: list[float] = []

    def begin() -> None:  # once every worker is connected
        if a.go_file:
            print("ready", flush=True)
            deadline = time.monotonic() + 120
            while not os.path.exists(a.go_file):
                if time.monotonic() > deadline:
                    print(f"rl_load: {a.go_file} did not appear within 120 s", file=sys.stderr, flush=True)
                    os._exit(2)
                time.sleep(0.002)
        clock["start"] = time.monotonic()

    barrier = threading.Barrier(workers, action=begin)
    issued = [0]

    def next_slot() -> float | None:
        with lock:
            i = issued[0]
            if i >= planned or (a.stop_file and i % 20 == 0 and os.path.exists(a.stop_file)):
                return None
            issued[0] += 1
        return clock["start"] + offsets[i]

    def connect() -> http.client.HTTPConnection:
        c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
        c.connect()
        return c

    def worker() -> None:
        conn = None
        try:  # connected before the start, so that a burst is not spread by connection set-up
            conn = connect()
        except OSError:
            conn = None  # counted below, when a request fails to connect
        barrier.wait()
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
                    conn = connect()
                conn.request("GET", path, headers=headers)
                r = conn.getresponse()
                r.read()
                t1 = time.monotonic()
                dt = t1 - t0
                kept = {k: r.getheader(k) for k in KEEP if r.getheader(k) is not None}
                announced = float(r.getheader("x-mizzen-ratelimit-delay-ms") or 0)
                with lock:
                    window["first"] = min(window["first"], t0)
                    window["last"] = max(window["last"], t1 - announced / 1000)
                    if announced > 0:
                        delays_ms.append(announced)
                    status[str(r.status)] += 1
                    if 200 <= r.status < 300:
                        lat_ok.append(dt)
                        per_second[int(t0 - clock["start"])] += 1
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

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=span + 150)  # connect (10 s) + --go-file (120 s) + the schedule + slack
    start = clock["start"] or time.monotonic()
    n = int(min(span, time.monotonic() - start) + 0.999)  # a stop file may end the run early
    print(json.dumps({
        "planned": planned, "total": sum(status.values()) + sum(errors.values()), "status": dict(status),
        "errors": dict(errors),
        "ok_per_second": [per_second.get(i, 0) for i in range(n)],
        "latency_ok_ms": {"p50": pct(lat_ok, 50), "p90": pct(lat_ok, 90), "max": pct(lat_ok, 100)},
        "latency_rejected_ms": {"p50": pct(lat_rej, 50), "max": pct(lat_rej, 100)},
        "delayed": len(delays_ms), "max_delay_ms": max(delays_ms, default=0.0),
        "decision_window_s": round(max(0.0, window["last"] - window["first"]), 4) if delays_ms or status else None,
        "first": first, "seconds": round(time.monotonic() - start, 3)}))


if __name__ == "__main__":
    main()
