"""The credential a client sends (`Authorization: Bearer <token>`) and how it verifies a TLS control plane.

A client is given a token (`token=`: a string, or a callable returning one — e.g. an agent re-reading its pod
credential), else it uses the admin credential of its state dir (`STATE/admin.token`, readable by root — or
whoever runs the mesh — only). The CLI adds `--token` / `$MIZZEN_TOKEN` on top (cli/options.py); the
runner and the rate-limit service use the state dir's file. A token is never taken from the environment
here: the runner passes its environment to apps.

TLS (`https://host:port` addresses): the server's certificate must chain to the mesh root
(`STATE/ca/root-cert.pem`, or `ca_file`) and carry the DNS name `mizzen-controlplane`, whatever host was
dialled — the name only the control plane's certificate has (secure naming, as the agents check the CA).
"""
from __future__ import annotations

import os
import ssl
from typing import Callable, Union

from ..ca.identity import SERVER_NAME

TokenSource = Callable[[], Union[str, None]]
TokenArg = Union[str, TokenSource, None]


class FileToken:
    """A token read from a file when asked (re-read when the file changes); None if it cannot be read, and
    `problem` then says why."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problem = ""
        self._stamp: tuple[float, int] | None = None
        self._token: str | None = None

    def __call__(self) -> str | None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime, st.st_size)
            if stamp != self._stamp:
                with open(self.path) as f:
                    self._token = f.read().strip() or None
                self._stamp = stamp
            self.problem = "" if self._token else f"{self.path} is empty"
        except OSError as e:
            self._token, self._stamp = None, None
            self.problem = f"cannot read {self.path} ({e.strerror})"
        return self._token


def token_source(token: TokenArg, admin_token_path: str | None) -> TokenSource:
    if callable(token):
        return token
    if token:
        return lambda: token  # type: ignore[return-value]
    if admin_token_path:
        return FileToken(admin_token_path)
    return lambda: None


def auth_headers(source: TokenSource) -> dict[str, str]:
    tok = source()
    return {"Authorization": f"Bearer {tok}"} if tok else {}


def unauthenticated_hint(source: TokenSource) -> str:
    """What to add to a 401 when this client sent no token."""
    why = getattr(source, "problem", "") or "no token given"
    return (f" (this client sent no token: {why}; pass --token TOKEN or set $MIZZEN_TOKEN, or run as a user "
            f"who can read the state dir's admin.token)")


def tls_context(ca_file: str) -> ssl.SSLContext:
    """Verify the server against the mesh root in `ca_file` (check the name with `SERVER_NAME`)."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


__all__ = ["FileToken", "SERVER_NAME", "TokenArg", "TokenSource", "auth_headers", "tls_context", "token_source",
           "unauthenticated_hint"]
