"""Sequential HTTP requests from inside a pod (stdlib only); prints one JSON line.

req.py URL [--method M] [--count N] [-H 'k: v'] → {"status": {code: n}, "errors": {type: n},
"elapsed": [seconds per request], "last": {"status", "headers", "body"}}. Redirects are not followed.
Bounded: at most 1000 requests, 15 s per request.
"""
from __future__ import annotations

import argparse
import http.client
import json
import time
import urllib.parse
from collections import Counter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--method", default="GET")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("-H", "--header", action="append", default=[])
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.url)
    path = u.path + (f"?{u.query}" if u.query else "")
    headers = {k.strip(): v.strip() for k, v in (h.split(":", 1) for h in a.header)}
    status: Counter = Counter()
    errors: Counter = Counter()
    elapsed: list[float] = []
    last: dict = {}
    for _ in range(min(a.count, 1000)):
        t0 = time.monotonic()
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=15)
        try:
            conn.request(a.method, path, body=b"x" if a.method in ("POST", "PUT") else None, headers=headers)
            r = conn.getresponse()
            body = r.read()
            status[str(r.status)] += 1
            last = {"status": r.status, "headers": {k.lower(): v for k, v in r.getheaders()},
                    "body": body.decode(errors="replace")[:2000]}
        except Exception as e:  # noqa: BLE001 - counted by type
            errors[type(e).__name__] += 1
        finally:
            conn.close()
        elapsed.append(round(time.monotonic() - t0, 3))
    print(json.dumps({"status": dict(status), "errors": dict(errors), "elapsed": elapsed, "last": last}))


if __name__ == "__main__":
    main()
