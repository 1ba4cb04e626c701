"""Synchronous HTTP/1.1 over a unix socket or TCP (http.client): the transport of the sync clients."""
from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
from typing import Any

from ..unixpath import short_unix_path
from .address import Address

# what "no answer" looks like: absent socket, refused/reset connection, timeout, a peer that closed
# without a status line
CONNECT_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)


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


def present(address: Address) -> bool:
    """False for a unix socket whose file does not exist (a connection would fail at once)."""
    return address.unix is None or os.path.lexists(address.unix)


class NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS that checks the certificate for `server_name` rather than the host dialled (client/auth.py)."""

    def __init__(self, host: str, port: int, *, timeout: float, context: ssl.SSLContext, server_name: str):
        super().__init__(host, port, timeout=timeout, context=context)
        self.server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.server_name)  # type: ignore[attr-defined]


def connection(address: Address, timeout: float, tls: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    if address.unix is not None:
        return UnixHTTPConnection(address.unix, timeout)
    if address.tls:
        from .auth import SERVER_NAME

        if tls is None:
            raise ValueError(f"{address}: a TLS address needs the mesh's root certificate (ca_file)")
        return NamedHTTPSConnection(address.host, address.port, timeout=timeout, context=tls,
                                    server_name=SERVER_NAME)
    return http.client.HTTPConnection(address.host, address.port, timeout=timeout)


def request(address: Address, method: str, url: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 60.0,
            tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """One HTTP request; returns (status, body). Connection errors (CONNECT_ERRORS) propagate; a TLS failure
    (wrong CA, wrong name) is an ssl.SSLError, an OSError, so it is one of them too."""
    conn = connection(address, timeout, tls)
    try:
        conn.request(method, url, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def unix_request(sock_path: str, method: str, url: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, bytes]:
    """One HTTP request over the unix socket at `sock_path` (no failover, no decoding)."""
    return request(Address.of_socket(sock_path), method, url, body, headers, timeout)


def decode(status: int, raw: bytes) -> Any:
    """A JSON answer; an error answer that is not JSON becomes {"message": text}."""
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        if status >= 400:
            return {"message": raw.decode("utf-8", "replace").strip() or f"HTTP {status}"}
        raise


def error_body(out: Any) -> dict[str, Any]:
    return out if isinstance(out, dict) else {"message": str(out)}
