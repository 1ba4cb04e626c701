"""The control plane's REST API (docs/internals.md), synchronous: what the CLI and the runner use.

`ApiClient(DIR)` reaches the mesh in DIR through its replicas' `api*.sock` (see `layout`), with
the failover policy of `failover.py`; errors are those of `errors.py`. Every call carries the client's token
(`token=`, else DIR's admin credential: `auth.py`); `https://` addresses are checked against the mesh root.
"""
from __future__ import annotations

import json
import ssl
import time
from typing import Any, Iterator, Sequence
from urllib.parse import quote, urlencode

from ..model.types import Instance
from .address import Address
from .auth import TokenArg, auth_headers, tls_context, token_source, unauthenticated_hint
from .errors import HttpError, MeshUnavailable, Unavailable
from .failover import Failover
from .http import CONNECT_ERRORS, connection, decode, error_body, present, request
from .layout import MAX_CONTROL_PLANES, StateLayout


def _q(s: str) -> str:
    return quote(s, safe="")


class ApiClient:
    """The REST API of the control plane: of the mesh in `state_dir` (its replicas' api.sock, api-1.sock, ...:
    `replicas` of them), or at explicit `addresses` (one per replica; with a `state_dir` too, that dir's
    admin credential and mesh root are the defaults). `token`: what to authenticate with (a string or a
    callable; default: the state dir's admin.token). `ca_file`: the mesh root for `https://` addresses
    (default: the state dir's `ca/root-cert.pem`)."""

    def __init__(self, state_dir: str | None = None, *, replicas: int = MAX_CONTROL_PLANES, timeout: float = 60.0,
                 addresses: Sequence[str | Address] | None = None, token: TokenArg = None,
                 ca_file: str | None = None):
        if state_dir is None and addresses is None:
            raise ValueError("ApiClient: give a state dir or addresses")
        layout = StateLayout(state_dir) if state_dir is not None else None
        if addresses is None:
            assert layout is not None
            addresses = [Address.of_socket(p) for p in layout.api_sockets(replicas)]
        self.addresses = [a if isinstance(a, Address) else Address.parse(a) for a in addresses]
        self.token = token_source(token, layout.admin_token if layout is not None else None)
        if ca_file is None and layout is not None:
            ca_file = f"{layout.root}/ca/root-cert.pem"
        self._tls: ssl.SSLContext | None = None
        self._ca_file = ca_file
        self.failover: Failover[Address] = Failover(self.addresses)
        self.timeout = timeout
        self.state_dir = state_dir
        self._proxy_replica: dict[str, int] = {}  # proxy id -> the replica it is connected to

    # ------------------------------------------------------------------ transport
    def _unavailable(self, tried: list[str], why: str = "", timed_out: bool = False) -> Unavailable:
        if self.state_dir is not None and not timed_out and not why and not any(a.unix is None
                                                                                for a in self.addresses):
            return MeshUnavailable(self.state_dir, tried)  # no socket, or a stale one: nothing runs there
        return Unavailable(f"control plane unreachable at {', '.join(map(str, self.addresses))}"
                           f"{f' ({why})' if why else ''}", tried)

    def _tls_context(self, address: Address) -> ssl.SSLContext | None:
        if not address.tls:
            return None
        if self._tls is None:
            if not self._ca_file:
                raise ValueError(f"{address}: give the mesh's root certificate (--ca-cert) to check the server")
            try:
                self._tls = tls_context(self._ca_file)
            except OSError as e:
                raise Unavailable(f"cannot read the mesh root certificate {self._ca_file}: {e.strerror}") from None
        return self._tls

    def request(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None, *,
                replicas: Sequence[int] | None = None, timeout: float | None = None, attempt_floor: float = 0.0) -> Any:
        """One call, with failover across `replicas` (default: every one, the last that answered first).
        `attempt_floor`: the least time one attempt gets (within the call's timeout) — for a long-poll, whose
        server answers late by design, an equal share of the budget per replica would be too short."""
        url = path + ("?" + urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        credential = auth_headers(self.token)
        headers.update(credential)
        order = Failover.attempts(self.failover.order() if replicas is None else replicas,
                                  lambda i: present(self.addresses[i]))
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        tried: list[str] = []
        why = ""
        timed_out = False
        waiting: HttpError | None = None  # a replica that has not loaded its store said so
        busy = True
        while busy:  # another round only while a live server's accept queue was full (EAGAIN)
            busy = False
            for k, i in enumerate(order):
                left = deadline - time.monotonic()
                if left <= 0 and k > 0:
                    break
                try:
                    attempt = max(Failover.share(left, len(order) - k), min(attempt_floor, left))
                    status, raw = request(self.addresses[i], method, url, data, headers, attempt,
                                          self._tls_context(self.addresses[i]))
                except ssl.SSLError as e:  # not the mesh's control plane (or no TLS there): say so
                    tried.append(str(self.addresses[i]))
                    why = f"TLS: {e.reason or e}"
                    continue
                except TimeoutError:  # it is there but busy or stuck: not "no mesh running"
                    tried.append(str(self.addresses[i]))
                    why, timed_out = "no answer in time (busy or stuck: see its log)", True
                    continue
                except BlockingIOError:  # a unix socket's accept queue is full: the server lives, it is swamped
                    tried.append(str(self.addresses[i]))
                    why, busy = "its connection queue is full (busy: see its log)", True
                    continue
                except CONNECT_ERRORS as e:
                    tried.append(str(self.addresses[i]))
                    if not isinstance(e, (ConnectionRefusedError, FileNotFoundError)):  # not "nobody there"
                        why = f"{type(e).__name__}: {e}"
                    continue
                out = decode(status, raw)
                if Failover.not_loaded(status, out):
                    tried.append(str(self.addresses[i]))
                    waiting = HttpError(status, error_body(out), f"{method} {path}")
                    continue
                if replicas is None:
                    self.failover.answered(i)
                if status >= 400:
                    body = error_body(out)
                    if status == 401 and not credential:
                        body = {**body, "message": str(body.get("message") or "unauthorized")
                                + unauthenticated_hint(self.token)}
                    raise HttpError(status, body, f"{method} {path}")
                return out
            if busy and deadline - time.monotonic() > 0.2:
                time.sleep(0.2)
            else:
                busy = False
        if waiting is not None:
            raise waiting
        raise self._unavailable(list(dict.fromkeys(tried)), why, timed_out)

    # ------------------------------------------------------------------ config
    def apply(self, files: list[tuple[str, str]], namespace: str | None = None, *, dry_run: bool = False,
              skip_unknown: bool = False, timeout: float | None = None) -> dict[str, Any]:
        body = {"files": [{"name": n, "text": t} for n, t in files], "namespace": namespace}
        q = {k: "true" for k, on in (("dryRun", dry_run), ("skipUnknown", skip_unknown)) if on}
        return dict(self.request("POST", "/api/v1/apply", body, query=q or None, timeout=timeout))

    def delete_files(self, files: list[tuple[str, str]], namespace: str | None = None) -> dict[str, Any]:
        body = {"files": [{"name": n, "text": t} for n, t in files], "namespace": namespace}
        return dict(self.request("POST", "/api/v1/delete", body))

    def list_resources(self, kind: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
        q = {k: v for k, v in (("kind", kind), ("namespace", namespace)) if v}
        return list(self.request("GET", "/api/v1/resources", query=q)["items"])

    def watch(self, version: str | None = None, wait: float = 30.0) -> dict[str, Any]:
        """The caller's view of the mesh (the config it may read and the instances) as a long-poll
        (`GET /api/v1/watch`, server/watch.py): at once without `version`, else when the view differs from
        `version` or after `wait` seconds (then `changed` is false and there are no items). A control plane
        without the route answers HttpError 404; one with too many watches waiting, 429."""
        if version is None:  # answered at once: the client's usual timeout
            return dict(self.request("GET", "/api/v1/watch"))
        q = {"version": version, "wait": f"{wait:g}"}
        margin = min(10.0, max(2.0, self.timeout))  # the server answers after `wait` at the latest
        return dict(self.request("GET", "/api/v1/watch", query=q, timeout=wait + 2 * margin,
                                 attempt_floor=wait + margin))

    def get_resource(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/resources/{_q(kind)}/{_q(namespace)}/{_q(name)}"))

    def delete_resource(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"/api/v1/resources/{_q(kind)}/{_q(namespace)}/{_q(name)}"))

    # ------------------------------------------------------------------ registry and runtime
    def services(self, namespace: str | None = None) -> list[dict[str, Any]]:
        q = {"namespace": namespace} if namespace else None
        return list(self.request("GET", "/api/v1/services", query=q)["items"])

    def instances(self, namespace: str | None = None) -> list[dict[str, Any]]:
        q = {"namespace": namespace} if namespace else None
        return list(self.request("GET", "/api/v1/instances", query=q)["items"])

    def egress(self, workloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """For each `{"namespace", "labels"}`: `{"mode", "hosts"?}` — its outbound traffic policy and, under
        REGISTRY_ONLY, the service hostnames its proxies may reach (`POST /api/v1/egress`)."""
        return list(self.request("POST", "/api/v1/egress", {"workloads": workloads})["items"])

    def put_instance(self, instance: Instance) -> dict[str, Any]:
        return dict(self.request("PUT", f"/api/v1/instances/{_q(instance.id)}", instance.to_dict()))

    def delete_instance(self, id: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"/api/v1/instances/{_q(id)}"))

    def create_credential(self, pod: str, namespace: str, service_account: str, workload: str, *,
                          app: bool = False) -> str:
        """A new credential for the pod with instance id `pod` (`<namespace>.<name>`); an earlier one stops
        working. Admin only: the runner calls this when it makes a pod."""
        body = {"pod": pod, "namespace": namespace, "serviceAccount": service_account, "workload": workload,
                **({"app": True} if app else {})}
        return str(self.request("POST", "/api/v1/credentials", body)["token"])

    def revoke_credential(self, pod: str) -> bool:
        return bool(self.request("DELETE", f"/api/v1/credentials/{_q(pod)}").get("revoked"))

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

    # ------------------------------------------------------------------ the mesh CA (server/mesh_ca.py)
    def ca_info(self) -> dict[str, Any]:
        """{"trustDomain", "rootCert" (PEM), ...}: what a pod must trust and which identities it gets."""
        return dict(self.request("GET", "/api/v1/ca"))

    def credentials(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/v1/credentials")["items"])

    def healthz(self, replicas: Sequence[int] | None = None) -> dict[str, Any]:
        """{"ready": bool}; a replica still loading its store answers 503 with ready false."""
        try:
            return dict(self.request("GET", "/healthz", replicas=replicas))
        except HttpError as e:
            if e.status == 503:
                return dict(e.body)
            raise

    # ------------------------------------------------------------------ telemetry (docs/observability.md)
    def telemetry_windows(self) -> dict[str, Any]:
        """Every sidecar's golden-metrics window (`items`) and the sidecars that did not answer (`errors`)."""
        return dict(self.request("GET", "/api/v1/telemetry/windows"))

    def telemetry_top(self, workload: str, namespace: str, n: int = 20) -> dict[str, Any]:
        return dict(self.request("GET", "/api/v1/telemetry/top",
                                 query={"workload": workload, "namespace": namespace, "n": str(n)}))

    def traces(self, limit: int = 50, service: str = "") -> list[dict[str, Any]]:
        q = {"limit": str(limit), **({"service": service} if service else {})}
        return list(self.request("GET", "/api/v1/traces", query=q)["items"])

    def trace(self, trace_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/traces/{_q(trace_id)}"))

    def stream(self, method: str, path: str, body: Any, timeout: float) -> Iterator[dict[str, Any]]:
        """A call answered with JSON lines (e.g. tap), yielded as they come; failover on connection only. Sends
        what `request` sends (the token; TLS on a TCP address)."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **auth_headers(self.token)}
        order = Failover.attempts(self.failover.order(), lambda i: present(self.addresses[i]))
        tried: list[str] = []
        for i in order:
            conn = connection(self.addresses[i], timeout, self._tls_context(self.addresses[i]))
            try:
                try:
                    conn.request(method, path, body=data, headers=headers)
                    resp = conn.getresponse()
                except CONNECT_ERRORS:
                    tried.append(str(self.addresses[i]))
                    continue
                if resp.status >= 400:
                    raw = resp.read()
                    raise HttpError(resp.status, error_body(decode(resp.status, raw)), f"{method} {path}")
                while True:
                    line = resp.readline()
                    if not line:
                        return
                    if line.strip():
                        yield json.loads(line)
            finally:
                conn.close()
        raise self._unavailable(tried)

    def telemetry_tap(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Tapped requests of a workload's sidecars (body: workload, namespace, path, method, max, seconds);
        the last line is {"event": "end", ...}. An unknown workload: HttpError 404."""
        return self.stream("POST", "/api/v1/telemetry/tap", body, float(body.get("seconds", 60)) + 30)
