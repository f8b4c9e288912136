"""The two consoles: data goes to stdout, diagnostics and progress to stderr."""

from __future__ import annotations

import sys

from rich.console import Console

__all__ = ["out_console", "err_console", "say"]

# Piped output is not wrapped at 80 columns: tables stay one row per line for grep and files.
out_console = Console(width=None if sys.stdout.isatty() else 200)
# Diagnostics are never hard-wrapped: a note or a one-line error stays one line in a log (the terminal folds it).
err_console = Console(stderr=True, soft_wrap=True)


def say(text: str, console: Console | None = None) -> None:
    """A plain diagnostic line on stderr: what it holds (paths, model and rule names the user typed) is printed as is,
    never read as rich markup."""
    (console or err_console).print(text, markup=False, highlight=False)
