"""What a fine-tuning run reports: :class:`FinetuneResult` (``finetune.json``) and the JSONL metrics log."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..._deprecated import deprecated_alias
from ..._files import atomic_write
from ..._json import strict_dumps
from ...conversion.artifact import SUMMARY_FILE
from .start import FinetuneStart

__all__ = ["SUMMARY_FILE", "METRICS_FILE", "FinetuneResult", "MetricsLog", "write_summary"]

METRICS_FILE = "metrics.jsonl"


@dataclass
class FinetuneResult:
    """Summary of a run. ``status`` is ``completed``, ``interrupted`` (Ctrl-C/SIGTERM) or ``stopped`` (max_steps).

    Accuracies are percentages on the validation split; ``start`` holds the student (after BatchNorm re-estimation)
    and teacher accuracies measured before the first step; ``best``/``final`` are per-epoch validation records.
    """

    status: str
    artifact: str
    epochs: int
    epochs_done: int
    global_step: int
    total_steps: int
    world_size: int
    device: str
    precision: str
    train_seconds: float
    images_per_s: float
    start: FinetuneStart = field(default_factory=FinetuneStart)
    best: dict[str, Any] | None = None
    final: dict[str, Any] | None = None
    finetuned_weights: str | None = None
    checkpoint: str | None = None
    metrics_log: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    data_config: dict[str, Any] = field(default_factory=dict)
    """How images became the input in this run (``DataConfig.to_dict``): later commands use it by default."""
    splits: dict[str, str] = field(default_factory=dict)
    """What the ``train`` and ``val`` splits were (``val`` chose the best epoch; figures belong to ``test``)."""
    classes: list[str] = field(default_factory=list)
    """The class names, label i = ``classes[i]``: ``eval`` requires the same classes of any data it is given."""
    lr: float | None = None
    """The peak learning rate the run trained with (``config.lr`` is None when it was chosen by the probe)."""
    lr_choice: dict[str, Any] = field(default_factory=dict)
    """How ``lr`` was chosen: ``method`` ``given`` (``--lr``), ``probe`` (with each candidate's validation loss and
    top-1, and the probe's images) or ``default``; empty for a resumed run (its first part chose)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``start`` in its stored layout: :meth:`FinetuneStart.to_dict`)."""
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "start": self.start.to_dict()}

    as_dict = deprecated_alias("as_dict", "to_dict")

    def to_json(self) -> str:
        """Indented JSON."""
        return strict_dumps(self.to_dict(), indent=2, default=str) + "\n"


def write_summary(result: FinetuneResult, directory: Path) -> Path:
    """Write ``finetune.json`` atomically into ``directory``."""
    path = directory / SUMMARY_FILE
    atomic_write(path, lambda temp: temp.write_text(result.to_json()))
    return path


class MetricsLog:
    """Append-only JSON-lines log; one record per line, written through at once (safe to ``tail -f``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def reset(self) -> None:
        """Start an empty log (a fresh run)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda temp: temp.write_text(""))

    def truncate_after(self, step: int) -> None:
        """Drop records logged after global step ``step`` (a resumed run redoes those steps)."""
        if not self.path.exists():
            return self.reset()
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a hard kill
        atomic_write(self.path, lambda temp: temp.write_text("".join(f"{line}\n" for line in kept)))
        return None

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(strict_dumps(record, default=float) + "\n")
