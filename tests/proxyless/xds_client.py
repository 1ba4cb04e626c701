"""A proxyless grpcio client (GRPC_XDS_BOOTSTRAP from the environment): calls /mizzen.Who/Call on an
`xds:///` target at a fixed rate and prints one JSON line per window: {"t", "served": {name: n},
"errors": {code: n}}. Bounded: at most --seconds (≤ 120) at --rps (≤ 500); each call has a 2 s deadline.
Ends early when --stop-file exists. Metadata `-H k=v` is sent with every call."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

import grpc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rps", type=float, default=100)
    ap.add_argument("--window", type=float, default=0.25)
    ap.add_argument("--stop-file", default="")
    ap.add_argument("-H", dest="headers", action="append", default=[])
    ap.add_argument("--bootstrap", default="", help="GRPC_XDS_BOOTSTRAP (else from the environment)")
    a = ap.parse_args()
    if a.bootstrap:
        os.environ["GRPC_XDS_BOOTSTRAP"] = a.bootstrap  # read when the first xds: channel is made
    seconds, rps = min(a.seconds, 120.0), min(a.rps, 500.0)
    md = tuple(tuple(h.split("=", 1)) for h in a.headers)
    with grpc.insecure_channel(a.target) as ch:
        call = ch.unary_unary("/mizzen.Who/Call")
        start = time.monotonic()
        next_at = start
        served: Counter = Counter()
        errors: Counter = Counter()
        win_end = start + a.window
        while True:
            now = time.monotonic()
            if now >= win_end:
                print(json.dumps({"t": round(win_end - start, 3), "served": dict(served), "errors": dict(errors)}),
                      flush=True)
                served, errors = Counter(), Counter()
                win_end += a.window
                if now - start >= seconds or (a.stop_file and os.path.exists(a.stop_file)):
                    return
            if now < next_at:
                time.sleep(min(next_at - now, max(0.0, win_end - now)))
                continue
            next_at += 1.0 / rps
            try:
                served[call(b"", timeout=2, metadata=md or None).decode()] += 1
            except grpc.RpcError as e:
                errors[f"{e.code().name}: {e.details()}"[:120]] += 1


if __name__ == "__main__":
    sys.exit(main())
