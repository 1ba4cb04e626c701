"""The immutable, indexed snapshot of config + registry, and Istio's semantics resolved over it."""
from .dependencies import Change, Dependencies, affected, diff, diff_hosts  # and dependencies(config, proxy)
from .resolved import Destination, Resolved, ResolvedRoute
from .snapshot import ConfigIndex, Endpoint, EndpointIndex, SidecarScope, Snapshot
from .types import Instance, Proxy, Rendered

__all__ = ["Change", "ConfigIndex", "Dependencies", "Destination", "Endpoint", "EndpointIndex", "Instance",
           "Proxy", "Rendered", "Resolved", "ResolvedRoute", "SidecarScope", "Snapshot", "affected", "diff",
           "diff_hosts"]
