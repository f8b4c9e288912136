"""Rich display of a fine-tuning run: a progress bar per epoch (loss, lr, images/s, ETA), one summary line per epoch,
and the library's plain-text notes and warnings styled.

The bar is redrawn from the training thread at most twice a second (no render thread competing with the compute
threads), and loss values are read from the device only then, so the display does not synchronise a GPU on every step.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from ..recover.finetune.progress import Reporter, epoch_line

if TYPE_CHECKING:
    from ..recover.finetune.loop import EpochEvent, StepEvent

__all__ = ["RichReporter"]


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
        epochs = event.total_steps // max(event.steps_per_epoch, 1)
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

    def close(self) -> None:
        self._close_bar()
