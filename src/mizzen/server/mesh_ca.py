"""The mesh's CA inside the control plane: files, the signing service, pod credentials and their REST API.

    ca = MeshCa(state_dir, trust_domain="cluster.local", workload_ttl=..., max_workload_ttl=...)
    ca.start()                          # before anything answers: create or load STATE/ca/, open credentials
    await ca.serve(["unix:STATE/ca.sock", "127.0.0.1:15012"])   # IstioCertificateService over TLS
    ca.reload_if_changed()              # from the refresh loop: a replaced ca/*.pem is validated and swapped in
    app.add_routes(ca.routes())         # /api/v1/credentials, /api/v1/ca
    await ca.stop()

Every control-plane replica of a state dir runs one: the first to start creates the CA (`ensure_mesh_ca`
serializes them with a lock file), the others load it; they share the credential store (SQLite WAL), so an
agent's token works with every replica.

REST (JSON; the runner calls these through `mizzen.client`, so a remote control plane works too):
    POST   /api/v1/credentials         {"pod": "<ns>.<pod>", "namespace", "serviceAccount", "workload"} -> {"token"}
                                       (with "app": true, the pod's app's read-only credential)
    DELETE /api/v1/credentials/{pod}   revoke (the pod was deleted): {"revoked": bool}
    GET    /api/v1/credentials         identities that hold a credential (never a token)
    GET    /api/v1/ca                  {"trustDomain", "rootCert" (PEM), the CA chain's subjects and expiry}
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import socket
import stat
from pathlib import Path
from typing import Any

from aiohttp import web

from ..ca.authority import CaError, CertificateAuthority, describe
from ..ca.credentials import CredentialStore
from ..ca.files import INTERMEDIATE_FILES, ensure_mesh_ca, load_ca_dir, mesh_ca_dir, utcnow
from ..ca.identity import InvalidIdentity, PodIdentity, check_trust_domain
from ..client.layout import StateLayout
from ..unixpath import SocketInUse, short_unix_path
from .ca_service import CaServer, CaService

log = logging.getLogger("mizzen.ca")

EXPIRY_WARNING = dt.timedelta(days=30)


def mesh_name(state_dir: str | os.PathLike[str]) -> str:
    """The intermediate's name for this mesh: stable per state dir."""
    return "mesh-" + hashlib.sha256(os.path.abspath(state_dir).encode()).hexdigest()[:6]


def _refuse_if_served(path: str) -> None:
    if not os.path.lexists(path):
        return
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise SocketInUse(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with short_unix_path(path) as p:
            probe.connect(p)
    except OSError:
        os.unlink(path)  # stale
    else:
        raise SocketInUse(f"another control plane already serves certificates on {path}")
    finally:
        probe.close()


class MeshCa:
    def __init__(self, state_dir: str | os.PathLike[str], *, trust_domain: str = "cluster.local",
                 workload_ttl: dt.timedelta = dt.timedelta(hours=24),
                 max_workload_ttl: dt.timedelta = dt.timedelta(days=90)) -> None:
        self.state_dir = Path(state_dir)
        self.layout = StateLayout(str(state_dir))
        self.trust_domain = check_trust_domain(trust_domain)
        self.workload_ttl, self.max_workload_ttl = workload_ttl, max_workload_ttl
        self._authority: CertificateAuthority | None = None
        self._mtimes: tuple = ()
        self.credentials: CredentialStore | None = None
        self.service: CaService | None = None
        self.server: CaServer | None = None
        self.addresses: list[str] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Create the CA on first start (or load it) and open the credential store. Raises CaError naming the
        file when the CA dir is broken: a control plane must not start with a CA proxies would not trust."""
        material = ensure_mesh_ca(self.state_dir, utcnow(), mesh=mesh_name(self.state_dir))
        self._authority = CertificateAuthority(material, default_ttl=self.workload_ttl,
                                               max_ttl=self.max_workload_ttl)
        self._mtimes = self._stat()
        self._log_ca("using")
        self.credentials = CredentialStore(self.layout.credentials_db)
        self.service = CaService(lambda: self.authority, self.credentials, trust_domain=self.trust_domain)

    async def serve(self, addresses: list[str]) -> list[str]:
        """Serve on `unix:/path` and `host:port` addresses. A unix socket where another control plane answers is
        refused (SocketInUse), as for the API and xDS sockets: gRPC would silently take the path over. The
        socket is 0600: agents run as root; apps and Envoy must not reach it."""
        assert self.service is not None, "start() first"
        paths = [a[len("unix:"):] for a in addresses if a.startswith("unix:")]
        for path in paths:
            _refuse_if_served(path)
        self.server = CaServer(self.service)
        self.addresses = await self.server.start(addresses)
        for path in paths:
            os.chmod(path, 0o600)
        return self.addresses

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(1.0)
            self.server = None
        if self.credentials is not None:
            self.credentials.close()
            self.credentials = None

    @property
    def authority(self) -> CertificateAuthority:
        assert self._authority is not None, "start() first"
        return self._authority

    def _log_ca(self, verb: str) -> None:
        m = self.authority.material
        left = m.ca_cert.not_valid_after_utc - utcnow()
        log.info("%s the mesh CA in %s: intermediate %s (until %s), root %s; trust domain %s, workload "
                 "certificates %ss by default", verb, mesh_ca_dir(self.state_dir), describe(m.ca_cert),
                 m.ca_cert.not_valid_after_utc.date(), describe(m.root), self.trust_domain,
                 int(self.workload_ttl.total_seconds()))
        if left < EXPIRY_WARNING:
            log.warning("the mesh's intermediate CA expires in %d days (%s): plug in a new one with `mizzen ca "
                        "init --from DIR --force`; workload certificates never outlive it", left.days,
                        m.ca_cert.not_valid_after_utc.isoformat())

    # ------------------------------------------------------------------ reload
    def _stat(self) -> tuple:
        d = mesh_ca_dir(self.state_dir)
        out = []
        for n in INTERMEDIATE_FILES:
            try:
                st = os.stat(d / n)
                out.append((n, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((n, None, None))
        return tuple(out)

    def reload_if_changed(self) -> bool:
        """A CA replaced on disk (`mizzen ca init --from DIR --force`) is validated and used for new
        certificates; an invalid one is logged and the current one kept. True if it was swapped."""
        now = self._stat()
        if now == self._mtimes:
            return False
        self._mtimes = now
        try:
            material = load_ca_dir(mesh_ca_dir(self.state_dir), utcnow())
        except CaError as e:
            log.error("the CA files changed but cannot be used (%s); still signing with the previous CA", e)
            return False
        old_root = self.authority.material.root
        self._authority = CertificateAuthority(material, default_ttl=self.workload_ttl,
                                               max_ttl=self.max_workload_ttl)
        self._log_ca("switched to")
        if self.server is not None:
            self.server.renew_server_cert()
        if material.root != old_root:
            log.warning("the mesh's root changed: running pods trust only the old root (their workload certificates "
                        "and the certificate service's TLS certificate no longer verify for them); restart them "
                        "(`mizzen rollout restart WORKLOAD`) so that the runner provisions the new root")
        return True

    # ------------------------------------------------------------------ REST
    def info(self) -> dict[str, Any]:
        m = self.authority.material
        return {"trustDomain": self.trust_domain, "rootCert": self.authority.root_pem.decode(),
                "intermediate": describe(m.ca_cert), "intermediateNotAfter": m.ca_cert.not_valid_after_utc.isoformat(),
                "root": describe(m.root), "rootNotAfter": m.root.not_valid_after_utc.isoformat(),
                "workloadTtlSeconds": int(self.workload_ttl.total_seconds()),
                "addresses": list(self.addresses)}

    def routes(self) -> list[web.RouteDef]:
        async def issue(request: web.Request) -> web.Response:
            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"message": "request body is not valid JSON"}, status=400)
            if not isinstance(body, dict):
                return web.json_response({"message": "request body must be a JSON object"}, status=400)
            try:
                ident = PodIdentity(pod=str(body.get("pod") or ""), namespace=str(body.get("namespace") or ""),
                                    service_account=str(body.get("serviceAccount") or "default"),
                                    workload=str(body.get("workload") or ""))
            except InvalidIdentity as e:
                return web.json_response({"message": f"invalid pod identity: {e}"}, status=400)
            app = body.get("app", False)
            if not isinstance(app, bool):
                return web.json_response({"message": "app must be true (the pod's app's read-only credential) or "
                                                     "false (its agent's)"}, status=400)
            assert self.credentials is not None
            token = self.credentials.issue_app(ident) if app else self.credentials.issue(ident)
            log.info("issued %s credential for pod %s (%s)", "an app" if app else "a", ident.pod,
                     ident.spiffe_id(self.trust_domain))
            return web.json_response({"token": token, "spiffeId": ident.spiffe_id(self.trust_domain).uri})

        async def revoke(request: web.Request) -> web.Response:
            assert self.credentials is not None
            pod = request.match_info["pod"]
            done = self.credentials.revoke(pod)
            if done:
                log.info("revoked the credential of pod %s", pod)
            return web.json_response({"revoked": done})

        async def listing(request: web.Request) -> web.Response:
            assert self.credentials is not None
            return web.json_response({"items": [
                {"pod": p.pod, "namespace": p.namespace, "serviceAccount": p.service_account, "workload": p.workload,
                 "spiffeId": p.spiffe_id(self.trust_domain).uri} for p in self.credentials.pods()]})

        async def ca_info(request: web.Request) -> web.Response:
            return web.json_response(self.info())

        return [web.post("/api/v1/credentials", issue), web.delete("/api/v1/credentials/{pod}", revoke),
                web.get("/api/v1/credentials", listing), web.get("/api/v1/ca", ca_info)]
