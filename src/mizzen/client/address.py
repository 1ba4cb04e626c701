"""An address of a Mizzen HTTP or gRPC server: `unix:/abs/path` (also `unix:///abs/path`), `host:port`,
`http://host:port` or `https://host:port` (TLS). Pure: parsing checks the syntax and sun_path's limit, not
that anything listens."""
from __future__ import annotations

from dataclasses import dataclass

from ..unixpath import UNIX_PATH_MAX


@dataclass(frozen=True)
class Address:
    unix: str | None = None  # an absolute socket path, or None for TCP
    host: str = ""
    port: int = 0
    tls: bool = False  # https://

    @classmethod
    def parse(cls, text: str) -> "Address":
        """Raises ValueError with a message that quotes the address."""
        if text.startswith("unix:"):
            path = text[5:]
            if path.startswith("//"):  # unix:///abs/path
                path = path[2:]
            if not path.startswith("/"):
                raise ValueError(f"unix socket path must be absolute: {text!r}")
            if len(path.encode()) > UNIX_PATH_MAX:
                raise ValueError(f"unix socket path longer than {UNIX_PATH_MAX} bytes")
            return cls(unix=path)
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "http", text
        if scheme not in ("http", "https"):
            raise ValueError(f"expected 'unix:/path', 'host:port' or 'https://host:port', got {text!r}")
        host, sep, port = rest.rstrip("/").rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected 'unix:/path' or 'host:port', got {text!r}")
        return cls(host=host.strip("[]"), port=int(port), tls=scheme == "https")

    @classmethod
    def of_socket(cls, path: str) -> "Address":
        return cls(unix=path)

    def __str__(self) -> str:
        if self.unix is not None:
            return f"unix:{self.unix}"
        return f"https://{self.host}:{self.port}" if self.tls else f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The URL prefix an HTTP client uses (a unix socket's host name is a placeholder)."""
        if self.unix is not None:
            return "http://localhost"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"
