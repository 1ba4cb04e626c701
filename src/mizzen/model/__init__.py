"""The immutable, indexed snapshot of config + registry."""
from .snapshot import ConfigIndex, Endpoint, EndpointIndex, SidecarScope, Snapshot, diff_hosts
from .types import Instance, Proxy, Rendered

__all__ = ["ConfigIndex", "Endpoint", "EndpointIndex", "SidecarScope", "Snapshot", "diff_hosts",
           "Instance", "Proxy", "Rendered"]
