"""The immutable, indexed snapshot of config + registry, and Istio's semantics resolved over it."""

from ..lazy import lazy_exports

_EXPORTS = {
    'Change': '.dependencies',
    'Dependencies': '.dependencies',
    'affected': '.dependencies',
    'diff': '.dependencies',
    'diff_hosts': '.dependencies',
    'Destination': '.resolved',
    'Resolved': '.resolved',
    'ResolvedRoute': '.resolved',
    'ConfigIndex': '.snapshot',
    'Endpoint': '.snapshot',
    'EndpointIndex': '.snapshot',
    'SidecarScope': '.snapshot',
    'Snapshot': '.snapshot',
    'Instance': '.types',
    'Proxy': '.types',
    'Rendered': '.types',
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["Change", "ConfigIndex", "Dependencies", "Destination", "Endpoint", "EndpointIndex", "Instance",
           "Proxy", "Rendered", "Resolved", "ResolvedRoute", "SidecarScope", "Snapshot", "affected", "diff",
           "diff_hosts"]
