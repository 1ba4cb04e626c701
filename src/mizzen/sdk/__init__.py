"""`mizzen.sdk`: the mesh's rules in process, for Python services that cannot run a sidecar ("dual mode").

    from mizzen.sdk import Mesh
    mesh = Mesh(state_dir=".mizzen", namespace="default", workload="web", labels={"app": "web"},
                snapshot_file="mesh-snapshot.json").start()
    http = httpx.Client(transport=mesh.httpx_transport())
    channel = mesh.grpc_channel("echo:50051")

The rules (`rules.py`) are pure functions over the control plane's own `model.Snapshot`; `feed.py` keeps that
snapshot current from the REST API (and in a local file across restarts); `mesh.py` runs calls by them;
`httpx_transport.py` and `grpc_channel.py` adapt the two client libraries. See docs/sdk.md.
"""
from .mesh import Mesh
from .outcome import Outcome, Synthetic
from .rules import Call, Plan

__all__ = ["Call", "Mesh", "Outcome", "Plan", "Synthetic"]
