"""What a fine-tuning run tells its user, as plain text: the :class:`Reporter` interface and :class:`TextReporter`.

The runner talks to a :class:`Reporter`; the base class ignores everything (other ranks, tests). :class:`TextReporter`
writes plain lines on stderr (the library's default). Styling (colours, progress bars) belongs to the command line:
``pfconvert.cli.progress.RichReporter`` implements the same interface with rich.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from ..._progress import Advance, Phases
from .loop import EpochEvent, StepEvent

__all__ = ["Reporter", "TextReporter", "start_line", "epoch_line"]


def start_line(info: dict[str, Any]) -> str:
    """``fine-tuning: device cpu, precision fp32, ...`` (None values left out)."""
    return "fine-tuning: " + ", ".join(f"{key} {value}" for key, value in info.items() if value is not None)


def epoch_line(record: dict[str, Any]) -> str:
    """One line summarising an epoch record, or a validation point's inside an epoch (training losses of the epoch
    so far, validation, speed)."""
    val = (f"val top-1 {record['val_top1']:.2f}% top-5 {record['val_top5']:.2f}% loss {record['val_loss']:.4f}"
           if "val_top1" in record else "not validated")
    where = (f"step {record['step']} (epoch {record['epoch']}, {record['images']} images)"
             if record.get("event") == "val" else f"epoch {record['epoch']}")
    return (f"{where}: train loss {record['train_loss']:.4f} (ce {record['train_task_loss']:.4f}, "
            f"kd {record['train_kd_loss']:.4f}) | {val} | {record['images_per_s']:.0f} img/s, "
            f"{record['seconds']:.1f} s")


class Reporter(Phases):
    """Receives run events and phases (:class:`~pfconvert._progress.Phases`); the base class ignores them all. Every
    text is plain (no markup)."""

    def start(self, info: dict[str, Any]) -> None:
        """The run is set up (``info``: device, precision, data sizes, steps, resumed position...)."""

    def step(self, event: StepEvent) -> None:
        """One training step finished."""

    def epoch(self, event: EpochEvent) -> None:
        """One epoch finished (validated or not: see ``event.record``)."""

    def note(self, text: str) -> None:
        """An informational line (start-of-run accuracies, ...)."""

    def warn(self, text: str) -> None:
        """A warning: something the user should change or know (shown even in quiet mode)."""

    def notice(self, text: str) -> None:
        """A line the user must see even in quiet mode that is not a warning (where a stopped run was saved)."""

    def close(self) -> None:
        """The run ended (normally or not)."""


class TextReporter(Reporter):
    """Plain lines on a stream (stderr by default): the start, every epoch, notes, warnings; no per-step output."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def start(self, info: dict[str, Any]) -> None:
        if not self.quiet:
            self._print(start_line(info))

    def epoch(self, event: EpochEvent) -> None:
        if not self.quiet:
            self._print(epoch_line(event.record) + (" (best)" if event.is_best else ""))

    def note(self, text: str) -> None:
        if not self.quiet:
            self._print(text)

    def warn(self, text: str) -> None:
        self._print(f"warning: {text}")

    @contextmanager
    def phase(self, name: str, total: int | None = None, unit: str = "") -> Iterator[Advance]:
        """A line as the phase starts (``name``, and its size), another with its duration when it ends."""
        size = f" ({total} {unit})" if total is not None and unit else ""
        if not self.quiet:
            self._print(f"{name}{size}...")
        start = time.perf_counter()
        yield lambda _=1: None
        if not self.quiet:
            self._print(f"{name}: {time.perf_counter() - start:.1f} s")

    def notice(self, text: str) -> None:
        self._print(text)
