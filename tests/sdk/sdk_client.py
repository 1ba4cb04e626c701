"""An SDK client process: `--calls N` GETs of URL through `mizzen.sdk` (httpx transport), at most 2000, each
with a 5 s timeout; prints {"served_by": {...}, "status": {...}, "errors": {...}, "feed": {...}}."""
from __future__ import annotations

import argparse
import json
from collections import Counter

import httpx

from mizzen.sdk import Mesh


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--snapshot-file", required=True)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--wait", type=float, default=2.0)
    a = ap.parse_args()
    mesh = Mesh(state_dir=a.state_dir, workload="sdk-client", labels={"app": "sdk-client"},
                snapshot_file=a.snapshot_file).start(wait=a.wait)
    served: Counter = Counter()
    status: Counter = Counter()
    errors: Counter = Counter()
    with httpx.Client(transport=mesh.httpx_transport(), timeout=5) as c:
        for _ in range(min(a.calls, 2000)):
            try:
                r = c.get(a.url)
                status[str(r.status_code)] += 1
                served[r.headers.get("x-served-by", "-")] += 1
            except httpx.HTTPError as e:
                errors[type(e).__name__] += 1
    print(json.dumps({"served_by": dict(served), "status": dict(status), "errors": dict(errors),
                      "feed": mesh.feed.status()}))
    mesh.close()


if __name__ == "__main__":
    main()
