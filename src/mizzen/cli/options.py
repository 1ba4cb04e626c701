"""Options and error handling shared by every CLI command."""
from __future__ import annotations

from typing import Any, Callable, NoReturn, TypeVar

import click

from ..api import InvalidConfig
from ..client import HttpError, Unavailable
from .render import input_issue_line, issue_line, kind_ref

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

    def __init__(self, err: HttpError):
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
