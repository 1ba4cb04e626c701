"""Console access: a token (`STATE/console.token`, 0600) that `mizzen dashboard` puts in the URL it prints.

The first visit with `?token=T` sets an HttpOnly, SameSite=Strict cookie and redirects to the same page without
the token (it does not stay in the address bar or the history); later requests carry the cookie. Without it:
401 and a page saying how to get the URL. POSTs (the editor, the switches) also need the cookie — a
SameSite=Strict cookie is not sent by another site's form, which is the console's CSRF protection — and, when
the browser sends an Origin, it must be the console's own.
"""
from __future__ import annotations

import hmac
from typing import Awaitable, Callable

from aiohttp import web

COOKIE = "mizzen_console"
_DENIED = ("<!doctype html><title>Mizzen console</title><h1>Not signed in</h1><p>Open the console with the URL "
           "<code>mizzen dashboard</code> prints (it carries an access token).</p>")


def token_middleware(token: str) -> Callable:
    @web.middleware
    async def mw(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
        given = request.query.get("token")
        if given is not None:
            if not hmac.compare_digest(given, token):
                return web.Response(status=401, text=_DENIED, content_type="text/html")
            clean = request.rel_url.with_query([(k, v) for k, v in request.query.items() if k != "token"])
            resp = web.Response(status=302, headers={"Location": str(clean) or "/"})
            resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
            return resp
        if not hmac.compare_digest(request.cookies.get(COOKIE, ""), token):
            return web.Response(status=401, text=_DENIED, content_type="text/html")
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("Origin")
            if origin and origin not in (f"http://{request.host}", f"https://{request.host}"):
                return web.Response(status=403, text="cross-origin request refused\n")
        return await handler(request)
    return mw
