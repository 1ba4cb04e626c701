"""An xDS-enabled grpcio server (`grpc.server(..., xds=True)`, GRPC_XDS_BOOTSTRAP from the environment): it
serves /mizzen.Who/Call (→ its name) on 127.0.0.1:PORT only once the control plane gave it its Listener
(gRFC A36). Bounded: exits after --seconds (≤ 300)."""
from __future__ import annotations

import argparse
from concurrent import futures

import grpc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--name", default="xds-server")
    ap.add_argument("--seconds", type=float, default=60)
    a = ap.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), xds=True)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("mizzen.Who", {
        "Call": grpc.unary_unary_rpc_method_handler(lambda req, ctx: a.name.encode())}),))
    server.add_insecure_port(f"127.0.0.1:{a.port}")
    server.start()
    server.wait_for_termination(timeout=min(a.seconds, 300.0))


if __name__ == "__main__":
    main()
