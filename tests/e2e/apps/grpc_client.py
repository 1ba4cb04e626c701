"""One grpcio channel, N unary calls to /mizzen.Who/Call; prints {"served_by": {pod: n}, "errors": {code: n}}.
Bounded: at most 2000 calls, each with a 5 s deadline."""
from __future__ import annotations

import json
import os
import sys
from collections import Counter

# the pod's /etc/hosts names the services; set here, not with `env X=Y python`: a pod's app user may exec
# the interpreter directly but not always re-exec it through a root-only directory (a pyenv under /root)
os.environ.setdefault("GRPC_DNS_RESOLVER", "native")
import grpc  # noqa: E402


def main() -> None:
    target, n = sys.argv[1], min(int(sys.argv[2]), 2000)
    served: Counter = Counter()
    errors: Counter = Counter()
    with grpc.insecure_channel(target) as ch:  # one channel = one HTTP/2 connection to the sidecar
        call = ch.unary_unary("/mizzen.Who/Call")
        for _ in range(n):
            try:
                served[call(b"", timeout=5).decode()] += 1
            except grpc.RpcError as e:
                errors[str(e.code())] += 1
    print(json.dumps({"served_by": dict(served), "errors": dict(errors)}))


if __name__ == "__main__":
    main()
