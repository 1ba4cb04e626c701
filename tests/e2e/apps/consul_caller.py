"""A caller outside the mesh that finds a service through the Consul API (a blocking query on
/v1/health/service/<name>?passing, as consul-template and Consul SDKs do) and calls its instances directly at
the addresses it lists, at a fixed rate for a bounded time. Prints one JSON line:
{"total", "status": {code: n}, "served_by": {id: n}, "errors": {type: n}, "updates": n}. Stdlib only."""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import threading
import time
from collections import Counter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--consul", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--rps", type=float, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--stop-file", default="")
    a = ap.parse_args()
    seconds = min(a.seconds, 600.0)
    chost, cport = a.consul.rsplit(":", 1)
    endpoints: list[tuple[str, int]] = []
    updates = [0]
    stop = threading.Event()

    def watch() -> None:
        index = ""
        while not stop.is_set():
            try:
                conn = http.client.HTTPConnection(chost, int(cport), timeout=10)
                conn.request("GET", f"/v1/health/service/{a.service}?passing=1&wait=2s" +
                             (f"&index={index}" if index else ""))
                r = conn.getresponse()
                body = json.loads(r.read() or b"[]")
                index = r.getheader("X-Consul-Index", "")
                conn.close()
                new = sorted({(e["Service"]["Address"], int(e["Service"]["Port"])) for e in body})
                if new != endpoints:
                    endpoints[:] = new
                    updates[0] += 1
            except Exception:  # noqa: BLE001 - keep the last list, try again
                time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    deadline = time.monotonic() + 20
    while not endpoints and time.monotonic() < deadline:
        time.sleep(0.05)
    status: Counter = Counter()
    served: Counter = Counter()
    errors: Counter = Counter()
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds and not (a.stop_file and os.path.exists(a.stop_file)):
        at = start + i / a.rps
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        i += 1
        if not endpoints:
            errors["NoEndpoints"] += 1
            continue
        host, port = random.choice(list(endpoints))
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/")
            r = conn.getresponse()
            r.read()
            status[str(r.status)] += 1
            served[r.getheader("x-served-by", "-")] += 1
            conn.close()
        except Exception as e:  # noqa: BLE001
            errors[type(e).__name__] += 1
    stop.set()
    print(json.dumps({"total": sum(status.values()) + sum(errors.values()), "status": dict(status),
                      "served_by": dict(served), "errors": dict(errors), "updates": updates[0]}))


if __name__ == "__main__":
    main()
