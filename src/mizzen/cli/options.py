"""Options and error handling shared by every CLI command."""
from __future__ import annotations

from typing import Any, Callable, NoReturn, TypeVar

import click

from ..api import InvalidConfig
from ..client import ApiClient, HttpError, Unavailable
from .render import input_issue_line, issue_line, kind_ref

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_STATE_DIR = "./.mizzen"


def state_dir_option(f: F) -> F:
    return click.option("--state-dir", "state_dir", metavar="DIR", default=DEFAULT_STATE_DIR,
                        envvar="MIZZEN_STATE_DIR", show_default=True, show_envvar=True,
                        help="the mesh's state directory")(f)


_META = "mizzen.api"  # click ctx.meta key: what the API options said


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value:
        ctx.meta.setdefault(_META, {})[param.name] = value
    return value


def api_options(f: F) -> F:
    """`--state-dir`, and how to reach and authenticate to its control plane: `--token` ($MIZZEN_TOKEN; else
    the state dir's admin credential), `--server` ($MIZZEN_SERVER: an `https://host:port` API listener
    instead of the state dir's sockets) and `--ca-cert` ($MIZZEN_CA_CERT: the mesh root that server's
    certificate must chain to; default STATE/ca/root-cert.pem). Build the client with `api_client()`."""
    for opt in (
        click.option("--ca-cert", "ca_cert", metavar="FILE", envvar="MIZZEN_CA_CERT", expose_value=False,
                     callback=_remember, help="the mesh's root certificate, to check an https --server"),
        click.option("--server", "server", metavar="URL", envvar="MIZZEN_SERVER", expose_value=False,
                     callback=_remember, help="the control plane's API (https://HOST:PORT) instead of the state "
                                              "dir's sockets"),
        click.option("--token", "token", metavar="TOKEN", envvar="MIZZEN_TOKEN", expose_value=False,
                     callback=_remember, show_envvar=True,
                     help="API token (default: the state dir's admin credential, STATE/admin.token)"),
    ):
        f = opt(f)
    return state_dir_option(f)


def remember_group_state_dir(ctx: click.Context, state_dir: str) -> None:
    """For a group with `api_options`: its --state-dir, when given, is its subcommands' default."""
    if ctx.get_parameter_source("state_dir") not in (click.core.ParameterSource.DEFAULT,
                                                     click.core.ParameterSource.DEFAULT_MAP):
        ctx.meta["mizzen.state_dir"] = state_dir


def group_state_dir(state_dir: str) -> str:
    """A subcommand's --state-dir, else the one given to its group (`mizzen token --state-dir D list`)."""
    ctx = click.get_current_context()
    if ctx.get_parameter_source("state_dir") in (click.core.ParameterSource.DEFAULT,
                                                 click.core.ParameterSource.DEFAULT_MAP):
        return str(ctx.meta.get("mizzen.state_dir", state_dir))
    return state_dir


def api_client(state_dir: str, **kw: Any) -> ApiClient:
    """The REST client for a command with `api_options`."""
    ctx = click.get_current_context(silent=True)
    given = dict(ctx.meta.get(_META, {})) if ctx is not None else {}
    server = given.get("server")
    try:
        return ApiClient(state_dir, token=given.get("token"), ca_file=given.get("ca_cert"),
                         addresses=[server] if server else None, **kw)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--server") from None


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


class ServerError(click.ClickException):
    """An error answer from the control plane: the message, then one line per Issue."""

    def __init__(self, err: HttpError):
        super().__init__(err.body.get("message") or str(err))
        self.err = err

    def show(self, file: Any = None) -> None:
        errors = self.err.body.get("errors") or []
        missing = self.err.body.get("missing") or []
        denied = self.err.body.get("denied") or []
        if self.err.status in (401, 403):
            what = "Unauthorized" if self.err.status == 401 else "Forbidden"
            click.echo(f"Error from server ({what}): {self.message}", err=True)
            for d in denied:
                click.echo(f"  {d.get('kind')} {d.get('namespace')}/{d.get('name')}: {d.get('reason')}", err=True)
        elif missing:
            for k in missing:
                click.echo(f'Error from server (NotFound): {kind_ref(str(k.get("kind")))} "{k.get("name")}" '
                           f'not found in namespace {k.get("namespace")}', err=True)
        elif errors:
            for e in errors:
                click.echo(issue_line(e), err=True)
        else:
            click.echo(f"Error from server: {self.message}", err=True)


class InputError(click.ClickException):
    """Input files that cannot be used: one line per Issue (file, document, kind/namespace/name, field)."""

    def __init__(self, err: InvalidConfig):
        super().__init__(str(err))
        self.issues = err.issues

    def show(self, file: Any = None) -> None:
        for i in self.issues:
            click.echo(input_issue_line(i), err=True)


class MizzenGroup(click.Group):
    """Turns transport and server errors, and unreadable input files, from any subcommand into clean messages
    and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Unavailable as e:
            raise click.ClickException(str(e)) from None
        except HttpError as e:
            raise ServerError(e) from None
        except InvalidConfig as e:
            raise InputError(e) from None
