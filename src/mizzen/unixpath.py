"""Unix sockets, the way every Mizzen process uses them: paths longer than sun_path allows (state dirs deep in
the tree), binding a listening socket safely, and serving an aiohttp app on it.

The three small HTTP servers of a mesh — the control plane's REST API (`server/rest.py`), the agent's control
socket (`agent/main.py`) and the runner's control channel (`local/control.py`) — are all built with
`serve_app`: one aiohttp `AppRunner` on a socket from `bind_unix_socket` (and/or TCP).
"""
from __future__ import annotations

import contextlib
import os
import socket
import stat
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from aiohttp import web

UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the NUL
_SHORT_ENOUGH = 100  # below this a path is used as it is


class SocketInUse(RuntimeError):
    """Another server is already listening on the path (or the path is not a socket)."""


@contextlib.contextmanager
def short_unix_path(path: str) -> Iterator[str]:
    """A path naming the same socket that fits in sun_path: deep paths go through
    /proc/self/fd/<dirfd>/<name> while the context is open."""
    if len(os.fsencode(path)) < _SHORT_ENOUGH:
        yield path
        return
    d, name = os.path.split(os.path.abspath(path))
    fd = os.open(d, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


def bind_unix_socket(path: str, *, mode: int = 0o600, backlog: int = 512, group: int | None = None) -> socket.socket:
    """A listening, non-blocking unix socket at `path`: refuse (SocketInUse) if a live server answers there or
    the path is something else, unlink a stale socket file, work around the sun_path limit, chmod `mode` (and
    chown to `group`, before it listens)."""
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise SocketInUse(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with short_unix_path(path) as p:
                probe.connect(p)
        except OSError:
            os.unlink(path)  # stale: nobody listening
        else:
            raise SocketInUse(f"another server is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with short_unix_path(path) as p:
            sock.bind(p)
        if group is not None and group != os.getegid():
            os.chown(path, -1, group)
        os.chmod(path, mode)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_app(app: "web.Application", unix_path: str | None = None, tcp: tuple[str, int] | None = None,
                    *, mode: int = 0o600, group: int | None = None, ssl_context: Any = None) -> "web.AppRunner":
    """Start `app` on a unix socket (bound with `bind_unix_socket`, `mode` and `group`) and/or TCP (TLS with
    `ssl_context`); returns its runner. `await runner.cleanup()` stops it and removes the socket file if it is
    still the one bound here."""
    from aiohttp import web

    if unix_path is None and tcp is None:
        raise ValueError("serve_app() needs a unix path or a TCP address")
    sock = bind_unix_socket(unix_path, mode=mode, group=group) if unix_path is not None else None
    if sock is not None and unix_path is not None:
        path, ino = unix_path, os.stat(unix_path).st_ino

        async def unlink_socket(_app: web.Application) -> None:
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == ino:
                    os.unlink(path)

        app.on_cleanup.append(unlink_socket)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    try:
        await runner.setup()
        if sock is not None:
            await web.SockSite(runner, sock).start()
        if tcp is not None:
            await web.TCPSite(runner, tcp[0], tcp[1], reuse_address=True, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        if sock is not None:
            sock.close()
        raise
    return runner
