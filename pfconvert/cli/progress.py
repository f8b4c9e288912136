"""Rich display of long work on stderr: a transient bar per phase of any command (:class:`RichPhases`: evaluations,
BatchNorm re-estimation, reconstruction...), and for a fine-tuning run a progress bar per epoch (loss, lr, images/s,
ETA), one summary line per epoch, and the library's plain-text notes and warnings styled (:class:`RichReporter`).

The bar is redrawn from the training thread at most twice a second (no render thread competing with the compute
threads), and loss values are read from the device only then, so the display does not synchronise a GPU on every step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .._progress import Advance, Phases
from ..recover.finetune.progress import Reporter, epoch_line

if TYPE_CHECKING:
    from ..recover.finetune.loop import EpochEvent, StepEvent

__all__ = ["RichPhases", "RichReporter", "rich_phase"]


@contextmanager
def rich_phase(console: Console, name: str, total: int | None = None, unit: str = "",
               quiet: bool = False) -> Iterator[Advance]:
    """A transient bar for one phase (a spinner when ``total`` is unknown); a line with its duration when it ends.
    ``quiet`` shows nothing."""
    if quiet:
        yield lambda _=1: None
        return
    start = time.perf_counter()
    if not console.is_terminal:  # a log: a line as the phase starts, one as it ends, no bar
        console.print(f"{escape(name)}" + (f" ({total} {escape(unit)})" if total is not None else "") + "...",
                      highlight=False)
        yield lambda _=1: None
    else:
        columns = [SpinnerColumn(), TextColumn(escape(name)), BarColumn(), MofNCompleteColumn(),
                   TextColumn(escape(unit)), TimeElapsedColumn(), TimeRemainingColumn()]
        progress = Progress(*columns, console=console, transient=True, refresh_per_second=4, redirect_stdout=False,
                            redirect_stderr=False)
        task = progress.add_task(name, total=total)
        with progress:
            yield lambda n=1: progress.advance(task, n)
    console.print(f"[dim]{escape(name)}: {time.perf_counter() - start:.1f} s[/]", highlight=False)


class RichPhases(Phases):
    """Phases of a command drawn as rich bars on ``console`` (stderr); ``quiet`` draws nothing."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet

    def phase(self, name: str, total: int | None = None, unit: str = "") -> AbstractContextManager[Advance]:
        return rich_phase(self.console, name, total, unit, self.quiet)


class RichReporter(Reporter):
    """Progress bars and styled notes on a rich console (stderr); ``quiet`` shows warnings and notices only."""

    def __init__(self, console: Console | None = None, refresh_s: float = 0.5, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.refresh_s = refresh_s
        self.quiet = quiet
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._last_refresh = 0.0
        self._window: list[tuple[int, float]] = []

    def start(self, info: dict[str, Any]) -> None:
        if self.quiet:
            return
        parts = [f"{escape(str(key))} [bold]{escape(str(value))}[/]" for key, value in info.items() if value is not None]
        self.console.print("fine-tuning: " + ", ".join(parts), highlight=False)

    def _open(self, event: StepEvent) -> None:
        self._progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[ips]} img/s"), TimeRemainingColumn(), console=self.console,
            redirect_stdout=False, redirect_stderr=False,  # never hijack the process's streams
            auto_refresh=False,  # redrawn from step(), a few times a second: no render thread beside the compute
        )
        self._progress.start()
        epochs = -(-event.total_steps // max(event.steps_per_epoch, 1))  # the last epoch may be partial
        self._task = self._progress.add_task(
            "train", total=event.steps_per_epoch, completed=event.step - 1, epoch=f"{event.epoch + 1}/{epochs}",
            loss="-", lr="-", ips="-",
        )
        self._window = []

    def step(self, event: StepEvent) -> None:
        if self.quiet:
            return
        if self._progress is None:
            self._open(event)
        assert self._progress is not None and self._task is not None
        self._window = (self._window + [(event.images, event.seconds)])[-50:]
        now = time.monotonic()
        fields: dict[str, str] = {}
        if now - self._last_refresh >= self.refresh_s or event.step == event.steps_per_epoch:
            self._last_refresh = now
            seconds = sum(s for _, s in self._window)
            fields = {"loss": f"{event.loss_values()['loss']:.4f}", "lr": f"{event.lr:.2e}",
                      "ips": f"{sum(n for n, _ in self._window) / seconds:.0f}" if seconds > 0 else "-"}
        self._progress.update(self._task, completed=event.step, **fields)
        if fields:
            self._progress.refresh()

    def _close_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress, self._task = None, None

    def epoch(self, event: EpochEvent) -> None:
        self._close_bar()
        if self.quiet:
            return
        best = " [green](best)[/]" if event.is_best else ""
        self.console.print(escape(epoch_line(event.record)) + best, highlight=False)

    def note(self, text: str) -> None:
        if not self.quiet:
            self._close_bar()
            self.console.print(escape(text), highlight=False)

    def warn(self, text: str) -> None:
        self._close_bar()
        self.console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False)

    def notice(self, text: str) -> None:
        self._close_bar()
        self.console.print(escape(text), highlight=False)

    def phase(self, name: str, total: int | None = None, unit: str = "") -> AbstractContextManager[Advance]:
        self._close_bar()
        return rich_phase(self.console, name, total, unit, self.quiet)

    def close(self) -> None:
        self._close_bar()
