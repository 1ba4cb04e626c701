"""The native xDS load worker (native/xdsload → build/mizzen-xdsload): `mizzen bench xds --client native`.

A drop-in for the Python worker (`python -m mizzen.bench.xds_load worker`): the same streams, node ids and
metadata (written here, from the same `xds_common.node_metadata`, as one hex-encoded envoy.config.core.v3.Node per
line), subscriptions, ACKs, reconnect back-off and JSON-lines protocol with the driver. Written in C++ so that
the load client's own CPU (protobuf parsing, an asyncio task per stream, on the same 2 cores as the server)
weighs less on what it measures.
"""
from __future__ import annotations

from ..nativebin import find_native

BINARY_ENV = "MIZZEN_XDSLOAD"


def binary() -> tuple[str | None, str]:
    """The native load worker, or None and why it is not there."""
    return find_native("mizzen-xdsload", BINARY_ENV, "the native xDS load client")


def node_bytes(index: int, scoped: bool, workloads: int) -> bytes:
    """The Node the Python worker's first request carries (xds_load.LoadStream._req), serialized."""
    from envoy.config.core.v3 import base_pb2

    from .xds_common import node_id, node_metadata

    n = base_pb2.Node(id=node_id(index), cluster="bench")
    n.metadata.update(node_metadata(index, scoped, workloads))
    return n.SerializeToString()


def write_nodes(path: str, start: int, count: int, scoped: bool, workloads: int) -> None:
    with open(path, "w") as f:
        for i in range(start, start + count):
            f.write(node_bytes(i, scoped, workloads).hex() + "\n")


def resolve(client: str) -> tuple[str, str]:
    """`--client auto|native|python` → ("native"|"python", why native is not used: "" if it is)."""
    if client == "python":
        return "python", ""
    path, why = binary()
    if path:
        return "native", ""
    if client == "native":
        raise RuntimeError(why)
    return "python", why
