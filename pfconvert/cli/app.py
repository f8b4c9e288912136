"""The ``pfconvert`` command: composes one module per command and maps errors to one-line messages."""

from __future__ import annotations

import os
import sys

import typer

from ..errors import PfconvertError
from ._console import err_console

__all__ = ["app", "main"]

app = typer.Typer(
    name="pfconvert",
    help="Redesign vision models with parameter-free layers, fine-tune them, and measure what was gained.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    """Import the command modules and attach their commands (import here keeps `--help` cheap to build)."""
    from . import commands  # noqa: F401  (each module registers on `app`)


def main() -> None:
    """Console-script entry point: run the app, turning user errors into ``Error: ...`` on stderr and exit 1."""
    _register()
    try:
        app(standalone_mode=False)
    except PfconvertError as exc:
        if os.environ.get("PFCONVERT_DEBUG"):
            raise
        from rich.markup import escape

        err_console.print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("Interrupted.")
        sys.exit(130)
    except Exception as exc:  # click usage errors etc. come through here in non-standalone mode
        _handle_framework_error(exc)


def _handle_framework_error(exc: Exception) -> None:
    """Print typer/click usage errors the way typer would, and re-raise anything unexpected."""
    show = getattr(exc, "show", None)
    exit_code = getattr(exc, "exit_code", None)
    if callable(show) and exit_code is not None:
        show()
        sys.exit(exit_code)
    if type(exc).__name__ == "Abort":
        err_console.print("Aborted.")
        sys.exit(1)
    raise exc
