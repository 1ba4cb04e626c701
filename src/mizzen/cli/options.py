"""Options and error handling shared by every CLI command."""
from __future__ import annotations

from typing import Any, Callable, NoReturn, TypeVar

import click

from .client import ApiError, MeshUnavailable
from .render import issue_line, kind_ref

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_STATE_DIR = "./.mizzen"


def state_dir_option(f: F) -> F:
    return click.option("--state-dir", "state_dir", metavar="DIR", default=DEFAULT_STATE_DIR,
                        envvar="MIZZEN_STATE_DIR", show_default=True, show_envvar=True,
                        help="the mesh's state directory")(f)


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


class ServerError(click.ClickException):
    """An error answer from the control plane: the message, then one line per Issue."""

    def __init__(self, err: ApiError):
        super().__init__(err.body.get("message") or str(err))
        self.err = err

    def show(self, file: Any = None) -> None:
        errors = self.err.body.get("errors") or []
        missing = self.err.body.get("missing") or []
        if missing:
            for k in missing:
                click.echo(f'Error from server (NotFound): {kind_ref(str(k.get("kind")))} "{k.get("name")}" '
                           f'not found in namespace {k.get("namespace")}', err=True)
        elif errors:
            for e in errors:
                click.echo(issue_line(e), err=True)
        else:
            click.echo(f"Error from server: {self.message}", err=True)


class MizzenGroup(click.Group):
    """Turns transport and server errors from any subcommand into clean messages and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MeshUnavailable as e:
            raise click.ClickException(str(e)) from None
        except ApiError as e:
            raise ServerError(e) from None
