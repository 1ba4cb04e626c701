"""`mizzen.dev/v1 Host`: a machine of a multi-host mesh, and what runs on it besides the workloads placed there
(`Workload.spec.host`). Cluster-scoped, like a Namespace.

    apiVersion: mizzen.dev/v1
    kind: Host
    metadata: {name: cp}
    spec:
      controlPlane: true   # the control plane(s) run here (one host); default false
      etcd: true           # a member of the mesh's etcd cluster runs here; default false

`mizzen up` on one machine makes each Host a network namespace of its own with its own runner, all joined by
a private bridge (local/hosts.py); docs/distributed.md says how the same roles run on separate machines.
"""
from __future__ import annotations

from .base import Spec


class HostSpec(Spec):
    control_plane: bool = False
    etcd: bool = False
