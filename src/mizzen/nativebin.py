"""Where Mizzen's optional native binaries are (`make native` builds them into build/): the rate-limit service
(mizzen-rls) and the bench's xDS load client (mizzen-xdsload)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

_BUILD = Path(__file__).resolve().parents[2] / "build"


def find_native(name: str, env_var: str, what: str) -> tuple[str | None, str]:
    """`$env_var` if set, else build/<name>, else <name> on $PATH; or None and why it is not there (`what`
    names the part in that sentence)."""
    env = os.environ.get(env_var)
    if env:
        return (env, "") if os.access(env, os.X_OK) else (None, f"${env_var}={env} is not an executable file")
    built = _BUILD / name
    if os.access(built, os.X_OK):
        return str(built), ""
    found = shutil.which(name)
    if found:
        return found, ""
    return None, (f"{what} is not built ({built} is missing: `make native` builds it; it needs Debian's "
                  "libgrpc++-dev, protobuf-compiler-grpc, protobuf-compiler and libprotobuf-dev, which "
                  "`make sysdeps` installs)")
