"""The control plane's REST API (docs/internals.md), synchronous: what the CLI and the runner use.

`ApiClient(DIR)` reaches the mesh in DIR through its replicas' `api*.sock` (see `layout`), with
the failover policy of `failover.py`; errors are those of `errors.py`.
"""
from __future__ import annotations

import json
import time
from typing import Any, Sequence
from urllib.parse import quote, urlencode

from ..model.types import Instance
from .address import Address
from .errors import HttpError, MeshUnavailable, Unavailable
from .failover import Failover
from .http import CONNECT_ERRORS, decode, error_body, present, request
from .layout import MAX_CONTROL_PLANES, StateLayout


def _q(s: str) -> str:
    return quote(s, safe="")


class ApiClient:
    """The REST API of the control plane: of the mesh in `state_dir` (its replicas' api.sock, api-1.sock, ...:
    `replicas` of them), or at explicit `addresses` (one per replica)."""

    def __init__(self, state_dir: str | None = None, *, replicas: int = MAX_CONTROL_PLANES, timeout: float = 60.0,
                 addresses: Sequence[str | Address] | None = None):
        if (state_dir is None) == (addresses is None):
            raise ValueError("ApiClient: give a state dir or addresses")
        if addresses is None:
            assert state_dir is not None
            addresses = [Address.of_socket(p) for p in StateLayout(state_dir).api_sockets(replicas)]
        self.addresses = [a if isinstance(a, Address) else Address.parse(a) for a in addresses]
        self.failover: Failover[Address] = Failover(self.addresses)
        self.timeout = timeout
        self.state_dir = state_dir
        self._proxy_replica: dict[str, int] = {}  # proxy id -> the replica it is connected to

    # ------------------------------------------------------------------ transport
    def _unavailable(self, tried: list[str]) -> Unavailable:
        if self.state_dir is not None:
            return MeshUnavailable(self.state_dir, tried)
        return Unavailable(f"control plane unreachable at {', '.join(map(str, self.addresses))}", tried)

    def request(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None, *,
                replicas: Sequence[int] | None = None, timeout: float | None = None) -> Any:
        """One call, with failover across `replicas` (default: every one, the last that answered first)."""
        url = path + ("?" + urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        order = Failover.attempts(self.failover.order() if replicas is None else replicas,
                                  lambda i: present(self.addresses[i]))
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        tried: list[str] = []
        waiting: HttpError | None = None  # a replica that has not loaded its store said so
        for k, i in enumerate(order):
            left = deadline - time.monotonic()
            if left <= 0 and k > 0:
                break
            try:
                status, raw = request(self.addresses[i], method, url, data, headers,
                                      Failover.share(left, len(order) - k))
            except CONNECT_ERRORS:
                tried.append(str(self.addresses[i]))
                continue
            out = decode(status, raw)
            if Failover.not_loaded(status, out):
                tried.append(str(self.addresses[i]))
                waiting = HttpError(status, error_body(out), f"{method} {path}")
                continue
            if replicas is None:
                self.failover.answered(i)
            if status >= 400:
                raise HttpError(status, error_body(out), f"{method} {path}")
            return out
        if waiting is not None:
            raise waiting
        raise self._unavailable(tried)

    # ------------------------------------------------------------------ config
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

    # ------------------------------------------------------------------ registry and runtime
    def services(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/v1/services")["items"])

    def instances(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/v1/instances")["items"])

    def put_instance(self, instance: Instance) -> dict[str, Any]:
        return dict(self.request("PUT", f"/api/v1/instances/{_q(instance.id)}", instance.to_dict()))

    def delete_instance(self, id: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"/api/v1/instances/{_q(id)}"))

    def proxies(self) -> list[dict[str, Any]]:
        """Every replica's proxies, merged (each item names its replica: `controlPlane`): a proxy connected
        to one replica shows as that replica's; one that no replica has connected shows once, disconnected."""
        merged: dict[str, dict[str, Any]] = {}
        answered = False
        tried: list[str] = []
        for i in range(len(self.addresses)):
            try:
                items = self.request("GET", "/api/v1/proxies", replicas=[i])["items"]
            except Unavailable as e:
                tried += e.tried
                continue
            except HttpError as e:
                if not Failover.not_loaded(e.status, e.body):
                    raise
                tried.append(str(self.addresses[i]))  # serves nothing yet: no proxy is connected to it
                continue
            answered = True
            for it in items:
                pid = str(it.get("id"))
                if pid not in merged or (it.get("connected") and not merged[pid].get("connected")):
                    merged[pid] = it
                    if it.get("connected"):
                        self._proxy_replica[pid] = i
        if not answered:
            raise self._unavailable(tried)
        return list(merged.values())

    def proxy_resources(self, proxy_id: str, type_: str) -> Any:
        """What the replica the proxy is connected to (as of the last `proxies()`) sends it, else what the
        first replica that answers knows."""
        first = self._proxy_replica.get(proxy_id)
        order = self.failover.order()
        if first is not None:
            order = [first] + [i for i in order if i != first]
        return self.request("GET", f"/api/v1/proxies/{_q(proxy_id)}/resources", query={"type": type_},
                            replicas=order)

    def healthz(self, replicas: Sequence[int] | None = None) -> dict[str, Any]:
        """{"ready": bool}; a replica still loading its store answers 503 with ready false."""
        try:
            return dict(self.request("GET", "/healthz", replicas=replicas))
        except HttpError as e:
            if e.status == 503:
                return dict(e.body)
            raise
