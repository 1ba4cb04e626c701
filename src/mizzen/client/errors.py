"""The one error hierarchy of every client of a Mizzen HTTP API (control plane, Envoy admin, agent, runner).

    ClientError
     ├─ Unavailable        nothing answered: every address absent, refusing, or silent until the timeout
     │   └─ MeshUnavailable   ... and the addresses were a state dir's control-plane replicas
     └─ HttpError          a server answered with an HTTP error: `status` and `body` (decoded JSON, or
                           {"message": text}); final — another replica would say the same
"""
from __future__ import annotations

from typing import Any, Sequence


class ClientError(Exception):
    """A call to one of the mesh's HTTP APIs failed."""


class Unavailable(ClientError):
    """No address answered (absent socket, connection refused or reset, timeout); `tried` names them."""

    def __init__(self, message: str, tried: Sequence[str] = ()):
        self.tried = tuple(tried)
        super().__init__(message)


class MeshUnavailable(Unavailable):
    """No control-plane replica of a state dir answers: no mesh runs there."""

    def __init__(self, state_dir: str, tried: Sequence[str] = ()):
        self.state_dir = state_dir
        super().__init__(f"no mesh running in {state_dir} (start one with `mizzen up`)", tried)


class HttpError(ClientError):
    """The server answered with an HTTP error. `str()` is the server's message; `request` says which call."""

    def __init__(self, status: int, body: dict[str, Any], request: str = ""):
        self.status = status
        self.body = body
        self.request = request
        super().__init__(str(body.get("message") or f"HTTP {status}"))
