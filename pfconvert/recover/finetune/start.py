"""The start of a fine-tuning run as a typed record: the student's accuracy as converted, after reconstruction and
after BatchNorm re-estimation, what those steps did, and the teacher's accuracy.

Checkpoints and ``finetune.json`` store it as a plain dict (:meth:`FinetuneStart.to_dict`), in the layout earlier
versions wrote, so older checkpoints resume and older summaries read the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..metrics import EvalMetrics

__all__ = ["Accuracy", "ReconstructionStats", "BatchNormStats", "FinetuneStart"]


@dataclass(frozen=True)
class Accuracy:
    """Top-1 / top-5 (percent) on ``count`` validation images."""

    top1: float
    top5: float
    count: int | None = None

    @classmethod
    def of(cls, metrics: EvalMetrics) -> Accuracy:
        """From an evaluation's metrics."""
        return cls(metrics.top1, metrics.top5, metrics.count)

    def to_dict(self) -> dict[str, Any]:
        """``{"top1", "top5", "count"}``."""
        return {"top1": self.top1, "top5": self.top5, "count": self.count}


@dataclass(frozen=True)
class ReconstructionStats:
    """The least-squares refit: images used, layers refit, mean relative output error before and after, the seconds
    it took (None in records written before it was kept) and, with block-wise distillation, the blocks trained."""

    images: int
    layers: int
    rel_error_before: float
    rel_error_after: float
    seconds: float | None = None
    blocks: int = 0  # blocks trained by block-wise distillation (--block-steps), and their mean relative output error
    block_error_before: float | None = None
    block_error_after: float | None = None


@dataclass(frozen=True)
class BatchNormStats:
    """BatchNorm re-estimation: images used and the loss on them before and after (kept only if it did not rise)."""

    images: int
    loss_before: float
    loss_after: float

    @property
    def kept(self) -> bool:
        """Whether the re-estimated statistics were kept."""
        return self.loss_after <= self.loss_before


def _accuracy(data: dict[str, Any], key: str) -> Accuracy | None:
    value = data.get(key)
    return Accuracy(value["top1"], value["top5"], value.get("count")) if isinstance(value, dict) else None


@dataclass
class FinetuneStart:
    """What was measured and done before the first step (None: not measured / not done)."""

    converted: Accuracy | None = None
    reconstructed: Accuracy | None = None
    reconstruction: ReconstructionStats | None = None
    recalibrated: Accuracy | None = None
    batchnorm: BatchNormStats | None = None
    teacher: Accuracy | None = None

    def student(self) -> tuple[str, Accuracy] | None:
        """The student as training began: ``("recalibrated" | "reconstructed" | "converted", accuracy)``."""
        for state in ("recalibrated", "reconstructed", "converted"):
            value = getattr(self, state)
            if value is not None:
                return state, value
        return None

    def record(self) -> dict[str, Any] | None:
        """The start as an epoch-0 validation record (``val_top1``, ``val_top5``), or None if not measured."""
        found = self.student()
        if found is None:
            return None
        state, acc = found
        return {"event": "start", "epoch": 0, "val_top1": acc.top1, "val_top5": acc.top5, "val_count": acc.count,
                "state": state}

    def to_dict(self) -> dict[str, Any]:
        """The stored layout (as in ``finetune.json``)."""
        out: dict[str, Any] = {}
        for key in ("converted", "reconstructed", "recalibrated", "teacher"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_dict()
        if self.reconstruction is not None:
            r = self.reconstruction
            out["reconstruction"] = {"images": r.images, "layers": r.layers, "rel_error_before": r.rel_error_before,
                                     "rel_error_after": r.rel_error_after, "seconds": r.seconds}
            if r.blocks:
                out["reconstruction"].update(blocks=r.blocks, block_error_before=r.block_error_before,
                                             block_error_after=r.block_error_after)
        if self.batchnorm is not None:
            b = self.batchnorm
            out["bn_recalib_images"] = b.images
            out["bn_recalib" if b.kept else "bn_recalib_reverted"] = {"calibration_loss_before": b.loss_before,
                                                                      "calibration_loss_after": b.loss_after}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FinetuneStart:
        """Inverse of :meth:`to_dict`."""
        data = data or {}
        fit = data.get("reconstruction")
        losses = data.get("bn_recalib") or data.get("bn_recalib_reverted")
        return cls(
            converted=_accuracy(data, "converted"), reconstructed=_accuracy(data, "reconstructed"),
            reconstruction=ReconstructionStats(**fit) if isinstance(fit, dict) else None,
            recalibrated=_accuracy(data, "recalibrated"),
            batchnorm=BatchNormStats(int(data["bn_recalib_images"]), losses["calibration_loss_before"],
                                     losses["calibration_loss_after"])
            if isinstance(losses, dict) and "bn_recalib_images" in data else None,
            teacher=_accuracy(data, "teacher"),
        )
