"""The one client of the mesh's HTTP APIs, below `cli/`, `local/` and `agent/`.

- `layout`: where every file and socket of a state dir is (`StateLayout`, `PodDir`, replica names).
- `api.ApiClient` (sync: CLI, runner) and `aio.AsyncApiClient` (asyncio: agent): the control plane's REST
  API across its replicas with one failover policy (`failover.py`).
- `envoy.EnvoyAdmin` / `aio.AsyncEnvoyAdmin`: Envoy's admin API on a pod's `admin.sock`.
- `control.RunnerClient`, `control.AgentControl`: the runner's and an agent's control sockets.
- `errors`: `ClientError` → `Unavailable` (→ `MeshUnavailable`) | `HttpError` (status, body).

`aio` needs aiohttp and is not imported here (the CLI starts faster without it).
"""
from __future__ import annotations


from ..lazy import lazy_exports

_EXPORTS = {
    'Address': '.address',
    'ApiClient': '.api',
    'AgentControl': '.control',
    'RunnerClient': '.control',
    'EnvoyAdmin': '.envoy',
    'ClientError': '.errors',
    'HttpError': '.errors',
    'MeshUnavailable': '.errors',
    'Unavailable': '.errors',
    'unix_request': '.http',
    'ENVOY_UID': '.layout',
    'MAX_CONTROL_PLANES': '.layout',
    'PodDir': '.layout',
    'StateLayout': '.layout',
    'replica_name': '.layout',
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["Address", "AgentControl", "ApiClient", "ClientError", "ENVOY_UID", "EnvoyAdmin", "HttpError",
           "MAX_CONTROL_PLANES", "MeshUnavailable", "PodDir", "RunnerClient", "StateLayout", "Unavailable",
           "replica_name", "unix_request"]
