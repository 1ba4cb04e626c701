"""Clients of the two control sockets besides the REST API: the runner's channel (`runner.sock`) and a pod's
agent (`pods/<pod>/agent.sock`). Same transport and errors as the REST client."""
from __future__ import annotations

import json
from typing import Any, Iterator

from .errors import HttpError, Unavailable
from .http import CONNECT_ERRORS, UnixHTTPConnection, decode, error_body, unix_request


def _call(sock: str, method: str, path: str, body: Any, timeout: float) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    try:
        status, raw = unix_request(sock, method, path, data, headers, timeout)
    except CONNECT_ERRORS as e:
        raise Unavailable(f"{sock}: {e or type(e).__name__}", [sock]) from e
    out = decode(status, raw)
    if status >= 400:
        raise HttpError(status, error_body(out), f"{method} {path}")
    return out


class RunnerClient:
    """The runner's control channel: `GET /status`, and operations answered as a stream of JSON lines."""

    def __init__(self, sock_path: str, timeout: float = 3600.0):
        self.sock_path = sock_path
        self.timeout = timeout

    def status(self) -> dict[str, Any]:
        return dict(_call(self.sock_path, "GET", "/status", None, 30.0))

    def operation(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST an operation and yield its JSON lines as they come (the last: {"event": "done", ...}).
        A refusal (409 another operation runs, 404, 400) raises HttpError; no runner, Unavailable."""
        conn = UnixHTTPConnection(self.sock_path, timeout=self.timeout)
        try:
            data = json.dumps(body).encode()
            try:
                conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
            except CONNECT_ERRORS as e:
                raise Unavailable(f"cannot reach the runner at {self.sock_path}: {e or type(e).__name__}",
                                  [self.sock_path]) from e
            if resp.status != 200:
                raise HttpError(resp.status, error_body(decode(resp.status, resp.read())), f"POST {path}")
            while True:
                line = resp.readline()
                if not line:
                    break
                try:
                    yield json.loads(line)
                except ValueError:
                    continue
        finally:
            conn.close()


class AgentControl:
    """A pod's agent: `POST /withdraw`, `POST /hot-restart`, `GET /state`."""

    def __init__(self, sock_path: str):
        self.sock_path = sock_path

    def state(self) -> dict[str, Any]:
        return dict(_call(self.sock_path, "GET", "/state", None, 5.0))

    def withdraw(self, timeout: float = 5.0) -> dict[str, Any]:
        """Take the instance out of the registry; the agent keeps serving."""
        return dict(_call(self.sock_path, "POST", "/withdraw", None, timeout))

    def hot_restart(self, envoy: str | None = None, timeout: float = 120.0) -> dict[str, Any]:
        """Envoy epoch N+1 takes over; answers {"epoch", "envoyPid", "envoyBinary"} once it serves."""
        return dict(_call(self.sock_path, "POST", "/hot-restart", {"envoy": envoy} if envoy else {}, timeout))
