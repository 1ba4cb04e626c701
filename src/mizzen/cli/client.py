"""Synchronous HTTP/1.1 over unix sockets: the control plane's REST API and Envoy's admin API."""
from __future__ import annotations

import http.client
import json
import os
import socket
from typing import Any
from urllib.parse import quote, urlencode
from ..unixpath import short_unix_path


class MeshUnavailable(Exception):
    """The control plane's socket is absent or refuses connections."""

    def __init__(self, state_dir: str):
        self.state_dir = state_dir
        super().__init__(f"no mesh running in {state_dir} (start one with `mizzen up`)")


class ApiError(Exception):
    """The server answered with an HTTP error; `body` is its decoded JSON (or {"message": text})."""

    def __init__(self, status: int, body: dict[str, Any]):
        self.status = status
        self.body = body
        super().__init__(str(body.get("message") or f"HTTP {status}"))


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            with short_unix_path(self.unix_path) as p:
                sock.connect(p)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def unix_request(sock_path: str, method: str, url: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, bytes]:
    """One HTTP request over a unix socket. Connection errors (OSError) propagate."""
    conn = UnixHTTPConnection(sock_path, timeout)
    try:
        conn.request(method, url, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _decode(status: int, raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        if status >= 400:
            return {"message": raw.decode("utf-8", "replace").strip() or f"HTTP {status}"}
        raise


def _q(s: str) -> str:
    return quote(s, safe="")


MAX_CONTROL_PLANES = 3


def api_socket_name(replica: int) -> str:
    """The REST socket of a control-plane replica in the state dir: api.sock, api-1.sock, api-2.sock."""
    return "api.sock" if replica == 0 else f"api-{replica}.sock"


def replica_name(replica: int) -> str:
    return "controlplane" if replica == 0 else f"controlplane-{replica}"


class ApiClient:
    """The REST API of the control plane at `<state_dir>/api.sock`; when that socket is absent or refuses
    connections (replica 0 is down), the other replicas' `api-<i>.sock` are tried in order."""

    def __init__(self, state_dir: str, timeout: float = 60.0):
        self.state_dir = state_dir
        self.socket_path = os.path.join(state_dir, "api.sock")
        self.timeout = timeout
        self._proxy_sockets: dict[str, str] = {}  # proxy id -> the socket of the replica it is connected to

    def socket_paths(self) -> list[str]:
        """api.sock, then every other replica's socket that exists."""
        out = [self.socket_path]
        for i in range(1, MAX_CONTROL_PLANES):
            p = os.path.join(self.state_dir, api_socket_name(i))
            if os.path.exists(p):
                out.append(p)
        return out

    def request(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
                sockets: list[str] | None = None) -> Any:
        url = path + ("?" + urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for sock in sockets or self.socket_paths():
            try:
                status, raw = unix_request(sock, method, url, data, headers, self.timeout)
                break
            except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
                continue
        else:
            raise MeshUnavailable(self.state_dir)
        out = _decode(status, raw)
        if status >= 400:
            raise ApiError(status, out if isinstance(out, dict) else {"message": str(out)})
        return out

    # config
    def apply(self, files: list[tuple[str, str]], namespace: str | None = None) -> dict[str, Any]:
        body = {"files": [{"name": n, "text": t} for n, t in files], "namespace": namespace}
        return dict(self.request("POST", "/api/v1/apply", body))

    def delete_files(self, files: list[tuple[str, str]], namespace: str | None = None) -> dict[str, Any]:
        body = {"files": [{"name": n, "text": t} for n, t in files], "namespace": namespace}
        return dict(self.request("POST", "/api/v1/delete", body))

    def list_resources(self, kind: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
        q = {k: v for k, v in (("kind", kind), ("namespace", namespace)) if v}
        return list(self.request("GET", "/api/v1/resources", query=q)["items"])

    def get_resource(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/resources/{_q(kind)}/{_q(namespace)}/{_q(name)}"))

    def delete_resource(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"/api/v1/resources/{_q(kind)}/{_q(namespace)}/{_q(name)}"))

    # registry and runtime
    def services(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/v1/services")["items"])

    def instances(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/v1/instances")["items"])

    def put_instance(self, instance: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("PUT", f"/api/v1/instances/{_q(str(instance['id']))}", instance))

    def delete_instance(self, id: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"/api/v1/instances/{_q(id)}"))

    def proxies(self) -> list[dict[str, Any]]:
        """Every replica's proxies, merged (each item names its replica: `controlPlane`): a proxy connected
        to one replica shows as that replica's; one that no replica has connected shows once, disconnected."""
        merged: dict[str, dict[str, Any]] = {}
        answered = False
        for sock in self.socket_paths():
            try:
                items = self.request("GET", "/api/v1/proxies", sockets=[sock])["items"]
            except MeshUnavailable:
                continue
            answered = True
            for it in items:
                pid = str(it.get("id"))
                if pid not in merged or (it.get("connected") and not merged[pid].get("connected")):
                    merged[pid] = it
                    if it.get("connected"):
                        self._proxy_sockets[pid] = sock
        if not answered:
            raise MeshUnavailable(self.state_dir)
        return list(merged.values())

    def proxy_resources(self, proxy_id: str, type_: str) -> Any:
        """What the replica the proxy is connected to sends it (as of the last `proxies()`), else api.sock's
        (or the first replica that answers)."""
        url = f"/api/v1/proxies/{_q(proxy_id)}/resources"
        first = self._proxy_sockets.get(proxy_id)
        socks = self.socket_paths()
        if first:
            socks = [first] + [s for s in socks if s != first]
        return self.request("GET", url, query={"type": type_}, sockets=socks)

    def healthz(self) -> dict[str, Any]:
        try:
            return dict(self.request("GET", "/healthz"))
        except ApiError as e:
            if e.status == 503:
                return dict(e.body)
            raise


class EnvoyAdmin:
    """Envoy's admin API on a unix pipe (`<state_dir>/pods/<pod>/admin.sock`)."""

    def __init__(self, sock_path: str, timeout: float = 30.0):
        self.sock_path = sock_path
        self.timeout = timeout

    def get_json(self, url: str) -> Any:
        status, raw = unix_request(self.sock_path, "GET", url, timeout=self.timeout)
        if status != 200:
            raise ApiError(status, {"message": f"envoy admin {url}: HTTP {status}: "
                                               f"{raw.decode('utf-8', 'replace').strip()}"})
        return json.loads(raw)
