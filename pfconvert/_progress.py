"""Progress of long phases (evaluations, reconstruction, BatchNorm re-estimation, ...), as plain events.

A library function that takes a while accepts a ``progress`` object and runs each phase inside
``with progress.phase("evaluating the teacher", total=len(loader)) as advance:``, calling ``advance(n)`` as it goes.
:class:`Phases` (the default) shows nothing; the command line's rich reporter draws a bar per phase, and
:class:`pfconvert.recover.finetune.progress.TextReporter` prints a line per phase.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Advance", "Phases"]

Advance = Callable[[int], None]
"""Called with the number of units (images, batches, layers) just done."""


class Phases:
    """Receives the phases of long work; this base class shows nothing."""

    @contextmanager
    def phase(self, name: str, total: int | None = None, unit: str = "") -> Iterator[Advance]:
        """A phase of ``total`` units (None: unknown): yields the function that advances it."""
        yield _ignore


def _ignore(_: int = 1) -> None:
    return None
