"""The REST API's real security parts for tests that serve it in-process: the token store and pod credential
store in the state dir, and the admin credential written to `STATE/admin.token` (what the CLI and ApiClient
use by default) — as a control plane's first start does."""
from __future__ import annotations

from pathlib import Path

from mizzen.server.auth_setup import ApiSecurity


def api_security(state_dir: str | Path) -> ApiSecurity:
    """Started (admin credential made); `close()` it when done."""
    sec = ApiSecurity(None, str(state_dir))
    sec.start(None)
    return sec


def admin_token(state_dir: str | Path) -> str:
    return (Path(state_dir) / "admin.token").read_text().strip()
