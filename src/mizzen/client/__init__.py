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

from .address import Address
from .api import ApiClient
from .control import AgentControl, RunnerClient
from .envoy import EnvoyAdmin
from .errors import ClientError, HttpError, MeshUnavailable, Unavailable
from .http import unix_request
from .layout import ENVOY_UID, MAX_CONTROL_PLANES, PodDir, StateLayout, replica_name

__all__ = ["Address", "AgentControl", "ApiClient", "ClientError", "ENVOY_UID", "EnvoyAdmin", "HttpError",
           "MAX_CONTROL_PLANES", "MeshUnavailable", "PodDir", "RunnerClient", "StateLayout", "Unavailable",
           "replica_name", "unix_request"]
