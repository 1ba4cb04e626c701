"""Envoy's admin API on its unix pipe (`pods/<pod>/admin.sock`), synchronous: what the CLI reads."""
from __future__ import annotations

import json
from typing import Any

from .errors import HttpError, Unavailable
from .http import CONNECT_ERRORS, unix_request


class EnvoyAdmin:
    def __init__(self, sock_path: str, timeout: float = 30.0):
        self.sock_path = sock_path
        self.timeout = timeout

    def get(self, url: str) -> bytes:
        try:
            status, raw = unix_request(self.sock_path, "GET", url, timeout=self.timeout)
        except CONNECT_ERRORS as e:
            raise Unavailable(f"envoy admin {self.sock_path}: {e or type(e).__name__}", [self.sock_path]) from e
        if status != 200:
            raise HttpError(status, {"message": f"envoy admin {url}: HTTP {status}: "
                                                f"{raw.decode('utf-8', 'replace').strip()}"}, f"GET {url}")
        return raw

    def get_json(self, url: str) -> Any:
        return json.loads(self.get(url))
