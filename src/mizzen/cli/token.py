"""`mizzen token create|list|revoke|whoami`: API tokens for tenants (and extra admins).

    mizzen token create --namespaces shop,shop-dev [--read-only] [--ttl 30d] [--name team-shop]
    mizzen token create --admin --ttl 12h
    mizzen token list
    mizzen token revoke tok-1a2b3c4d5e
    mizzen token whoami --token "$MIZZEN_TOKEN"

`create` prints the token alone on stdout (it is shown this once: the control plane keeps only its hash), so
`export MIZZEN_TOKEN=$(mizzen token create --namespaces shop)` works; what it stands for goes to stderr.
"""
from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import quote

import click

from .options import api_client, api_options, fail, group_state_dir, remember_group_state_dir
from .render import print_table

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_ttl(text: str) -> float:
    """`90s`, `30m`, `12h`, `30d`, `2w` or plain seconds."""
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise click.BadParameter(f"{text!r}: a duration such as 3600, 30m, 12h, 30d or 2w", param_hint="--ttl")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t)) if t else "never"


@click.group("token")
@api_options
@click.pass_context
def token(ctx: click.Context, state_dir: str) -> None:
    """API tokens: tenants (their namespaces only) and admins."""
    remember_group_state_dir(ctx, state_dir)


@token.command("create")
@click.option("--namespaces", default="", metavar="NS[,NS...]",
              help="the tenant's namespaces: it may read and change resources there only")
@click.option("--read-only", is_flag=True, help="may read, never change")
@click.option("--ttl", default=None, metavar="DURATION", help="expires after this long (e.g. 12h, 30d; default never)")
@click.option("--name", default="", help="a label for `token list` (e.g. the team)")
@click.option("--admin", "admin", is_flag=True, help="an admin token (everything, every namespace)")
@click.option("-o", "--output", type=click.Choice(["token", "json"]), default="token", show_default=True)
@api_options
def create(namespaces: str, read_only: bool, ttl: str | None, name: str, admin: bool, output: str,
           state_dir: str) -> None:
    """Issue a token (needs the admin credential)."""
    nss = [n.strip() for n in namespaces.split(",") if n.strip()]
    if admin == bool(nss):
        fail("give --namespaces NS[,NS...] for a tenant token, or --admin")
    body: dict[str, Any] = {"namespaces": nss, "readOnly": read_only, "name": name, "admin": admin}
    if ttl:
        body["ttlSeconds"] = parse_ttl(ttl)
    out = api_client(group_state_dir(state_dir)).request("POST", "/api/v1/tokens", body)
    if output == "json":
        click.echo(json.dumps(out, indent=2))
        return
    what = "admin" if out.get("role") == "admin" else f"namespaces {', '.join(out.get('namespaces') or [])}"
    click.echo(f"token {out['id']} ({what}{', read-only' if out.get('readOnly') else ''}; expires "
               f"{_when(out.get('expires'))}); it is shown only now:", err=True)
    click.echo(out["token"])


@token.command("list")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@api_options
def list_(output: str, state_dir: str) -> None:
    """The tokens the control plane knows (never the tokens themselves)."""
    items = api_client(group_state_dir(state_dir)).request("GET", "/api/v1/tokens")["items"]
    if output == "json":
        click.echo(json.dumps(items, indent=2))
        return
    rows = [[t["id"], t["role"] + (" (state dir)" if t.get("bootstrap") else ""),
             ",".join(t.get("namespaces") or []) or "*", "yes" if t.get("readOnly") else "",
             _when(t.get("created")), ("EXPIRED " if t.get("expired") else "") + _when(t.get("expires")),
             t.get("name") or ""] for t in items]
    print_table(["ID", "ROLE", "NAMESPACES", "READ-ONLY", "CREATED", "EXPIRES", "NAME"], rows, empty="No tokens.")


@token.command("revoke")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@api_options
def revoke(ids: tuple[str, ...], state_dir: str) -> None:
    """Revoke tokens: every control plane refuses them from the next call on."""
    api = api_client(group_state_dir(state_dir))
    for tid in ids:
        api.request("DELETE", f"/api/v1/tokens/{quote(tid, safe='')}")
        click.echo(f"token {tid} revoked")


@token.command("whoami")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@api_options
def whoami(output: str, state_dir: str) -> None:
    """Who the control plane takes this CLI for (which token, which namespaces)."""
    me = api_client(group_state_dir(state_dir)).request("GET", "/api/v1/whoami")
    if output == "json":
        click.echo(json.dumps(me, indent=2))
        return
    if me.get("role") == "tenant":
        click.echo(f"tenant {me['id']}: namespaces {', '.join(me.get('namespaces') or [])}"
                   f"{' (read-only)' if me.get('readOnly') else ''}")
    else:
        click.echo(f"{me.get('role')} {me.get('id')}{' — ' + me['name'] if me.get('name') else ''}")


__all__ = ["token", "parse_ttl"]
