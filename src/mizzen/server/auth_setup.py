"""The REST API's security, as one control plane sets it up (`ApiSecurity`):

- the token store that goes with the config store (`auth_tokens.token_store_for`) and the pod credential store
  (`STATE/credentials.db`), behind one `Authenticator`;
- the state dir's admin credential, made at the first start (`STATE/admin.token`, 0600);
- the unix socket's group: `--api-group NAME`, else the group `mizzen` when it exists, else the control
  plane's own (root's: then only root connects);
- TLS for a TCP listener, from the mesh CA (`auth_tls.ServerTls`), renewed by `periodic()`.
"""
from __future__ import annotations

import datetime as dt
import grp
import logging
import os
import time
from typing import Any, Callable, Sequence

from ..ca.credentials import CredentialStore
from ..client.layout import StateLayout
from .auth import Authenticator
from .auth_tokens import AdminCredential, TokenStore, ensure_admin_token, token_store_for

log = logging.getLogger("mizzen.auth")

DEFAULT_API_GROUP = "mizzen"


def resolve_group(name: str | None) -> int | None:
    """The gid for the API socket: `name` (must exist), else group `mizzen` if it exists, else None."""
    if name:
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            if name.isdigit():
                return int(name)
            raise ValueError(f"--api-group {name}: no such group (create it with `groupadd {name}`)") from None
    try:
        return grp.getgrnam(DEFAULT_API_GROUP).gr_gid
    except KeyError:
        return None


class ApiSecurity:
    def __init__(self, config_store: Any, state_dir: str, *, group: str | None = None,
                 tls_names: Sequence[str] = (), trust_domain: str = "cluster.local",
                 clock: Callable[[], float] = time.time, pods: CredentialStore | None = None) -> None:
        """`pods`: the control plane's pod credential store when it has one already (the mesh CA's)."""
        self.layout = StateLayout(state_dir)
        self.tokens: TokenStore = token_store_for(config_store, state_dir)
        self._own_pods = pods is None
        self.pods = CredentialStore(self.layout.credentials_db) if pods is None else pods
        self.auth = Authenticator(self.tokens, self.pods, clock=clock)
        self.gid = resolve_group(group)
        self.tls_names = tuple(tls_names)
        self.trust_domain = trust_domain
        self.tls: Any = None
        self.admin: AdminCredential | None = None

    def start(self, tcp: tuple[str, int] | None) -> None:
        """Before the API answers: the admin credential, and TLS when there is a TCP listener."""
        self.admin = ensure_admin_token(self.tokens, self.layout.admin_token, self.layout.root, self.auth.clock())
        if tcp is not None:
            from ..ca.authority import CertificateAuthority
            from ..ca.files import ensure_mesh_ca
            from .auth_tls import ServerTls

            state = self.layout.root
            authority = CertificateAuthority(ensure_mesh_ca(state, dt.datetime.now(dt.timezone.utc),
                                                            mesh=os.path.basename(state.rstrip("/")) or "mesh"))
            self.tls = ServerTls(lambda: authority, trust_domain=self.trust_domain, extra_names=self.tls_names)
            log.info("REST API on TCP %s:%d: TLS, certificate from the mesh CA (root %s)", tcp[0], tcp[1],
                     self.layout.root + "/ca/root-cert.pem")

    def serve_options(self) -> dict[str, Any]:
        return {"group": self.gid, "ssl_context": self.tls.context if self.tls is not None else None}

    def periodic(self) -> None:
        if self.tls is not None:
            self.tls.renew_if_due()

    def close(self) -> None:
        self.tokens.close()
        if self._own_pods:
            self.pods.close()


__all__ = ["ApiSecurity", "resolve_group"]
