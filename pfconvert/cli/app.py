"""The ``pfconvert`` command: composes one module per command and maps errors to one-line messages."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import typer
from rich.markup import escape

from ..errors import PfconvertError
from ._console import err_console

__all__ = ["app", "main", "debug_enabled", "on_interrupt", "INTERRUPTED"]

INTERRUPTED = 130
"""Exit code of a run stopped by Ctrl-C (128 + SIGINT), as shells report it."""

app = typer.Typer(
    name="pfconvert",
    help="Redesign vision models with parameter-free layers, fine-tune them, and measure what was gained.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_interrupt_note: Callable[[], str] | None = None


def on_interrupt(note: Callable[[], str] | None) -> None:
    """Say what an interrupted run of the running command leaves behind: ``note()`` is called after Ctrl-C and its
    text follows ``Interrupted:`` on stderr (default: the command stopped and wrote nothing)."""
    global _interrupt_note
    _interrupt_note = note


def debug_enabled() -> bool:
    """``PFCONVERT_DEBUG`` is 1, true or yes (any case): show tracebacks instead of one-line errors."""
    return os.environ.get("PFCONVERT_DEBUG", "").strip().lower() in {"1", "true", "yes"}


def _register() -> None:
    """Import the command modules and attach their commands (import here keeps `--help` cheap to build)."""
    from . import commands  # noqa: F401  (each module registers on `app`)


def main() -> None:
    """Console-script entry point: run the app, turning user errors into ``Error: ...`` on stderr and exit 1, and
    Ctrl-C into ``Interrupted: ...`` and exit 130."""
    on_interrupt(None)
    try:
        _register()
        code = app(standalone_mode=False)  # typer turns Ctrl-C inside a command into a returned 130
    except PfconvertError as exc:
        if debug_enabled():
            raise
        err_console.print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        code = INTERRUPTED
    except Exception as exc:  # click usage errors etc. come through here in non-standalone mode
        _handle_framework_error(exc)
    if code == INTERRUPTED:
        _interrupted()
    if isinstance(code, int) and code != 0:
        sys.exit(code)


def _interrupted() -> None:
    """One line on stderr saying the run was stopped and what it left; exit 130. (A further Ctrl-C while the
    interpreter shuts down ends the process by the signal itself, which a shell also reports as 130.)"""
    note = "stopped by Ctrl-C before it finished; nothing was written"
    if _interrupt_note is not None:
        try:
            note = _interrupt_note()
        except KeyboardInterrupt:  # a second Ctrl-C while the note is gathered: the default says enough
            pass
    err_console.print(f"Interrupted: {note}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(INTERRUPTED)


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
