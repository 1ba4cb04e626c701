"""Running a pod's processes as its app user: `setpriv` argv, and the $PATH that user can use. Light on
imports on purpose: `mizzen exec` needs these and nothing else of the runner."""
from __future__ import annotations

import os
import stat
from typing import Sequence

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def searchable_by(path: str, uid: int, gid: int) -> bool:
    """May uid/gid (no supplementary groups) search the directory `path` itself?"""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if uid == 0:
        return True
    bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == gid else stat.S_IXOTH
    return bool(st.st_mode & bit)


def reachable_by(path: str, uid: int, gid: int) -> bool:
    """Can uid/gid reach `path`: search every directory from / down to it?"""
    p = os.path.abspath(path)
    parts = [p]
    while os.path.dirname(p) != p:
        p = os.path.dirname(p)
        parts.append(p)
    return all(searchable_by(d, uid, gid) for d in reversed(parts))


def path_for(user: tuple[int, int] | None, path: str | None) -> str | None:
    """The runner's $PATH as the app's user can use it: entries it cannot reach (root's ~/.pyenv/shims, say)
    would make `python3` resolve to something it may not run; none left: the system's PATH."""
    if user is None or user == (0, 0):
        return path
    entries = [d for d in dict.fromkeys((path or "").split(os.pathsep)) if d and reachable_by(d, *user)]
    return os.pathsep.join(entries) or SYSTEM_PATH


def as_user(user: tuple[int, int] | None, argv: Sequence[str]) -> list[str]:
    """`setpriv` (util-linux) to run argv as uid/gid with no supplementary groups and no way to gain privileges
    back (no_new_privs: setuid binaries do not elevate); unchanged for None or root."""
    if user is None or user == (0, 0):
        return list(argv)
    uid, gid = user
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs", "--", *argv]


