"""Unix socket paths longer than sun_path allows (108 bytes), for state dirs deep in the tree."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator


@contextlib.contextmanager
def short_unix_path(path: str) -> Iterator[str]:
    """A path naming the same socket that fits in sun_path: deep paths go through
    /proc/self/fd/<dirfd>/<name> while the context is open."""
    if len(os.fsencode(path)) < 100:
        yield path
        return
    d, name = os.path.split(os.path.abspath(path))
    fd = os.open(d, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)
