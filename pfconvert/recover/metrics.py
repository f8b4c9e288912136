"""Top-1 / top-5 accuracy and cross-entropy of a classifier over a loader, summed exactly across processes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .._deprecated import deprecated_alias
from .dist import DistContext, all_reduce_sum
from .precision import Precision

__all__ = ["EvalMetrics", "evaluate", "infer_num_classes"]


@dataclass(frozen=True)
class EvalMetrics:
    """Accuracy in percent over ``count`` images; ``top5`` is top-min(5, classes)."""

    top1: float
    top5: float
    loss: float
    count: int

    def to_dict(self, prefix: str = "") -> dict[str, float | int]:
        """The fields as a flat dict, keys prefixed (``val_top1``...)."""
        return {f"{prefix}{key}": value for key, value in asdict(self).items()}

    as_dict = deprecated_alias("as_dict", "to_dict")


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, precision: Precision, ctx: DistContext | None = None,
             advance: Callable[[int], None] | None = None) -> EvalMetrics:
    """Evaluate ``model`` (put in eval mode, restored afterwards) on every batch of ``loader``; ``advance`` is called
    with each batch's size.

    Under DDP each process evaluates its shard and the sums are all-reduced, so every process returns the metrics
    of the whole split.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=precision.device)  # correct@1, correct@5, loss sum, count
    try:
        for images, targets in loader:
            images, targets = precision.to_device(images), targets.to(precision.device, non_blocking=True)
            with precision.autocast():
                logits = model(images)
            logits = logits.float()
            k = min(5, logits.shape[-1])
            hits = logits.topk(k, dim=-1).indices.eq(targets[:, None])
            sums += torch.stack([
                hits[:, 0].sum(), hits.any(dim=-1).sum(), F.cross_entropy(logits, targets, reduction="sum"),
                torch.tensor(len(targets), device=sums.device),
            ]).to(torch.float64)
            if advance is not None:
                advance(len(targets))
    finally:
        model.train(was_training)
    correct1, correct5, loss, count = all_reduce_sum(sums, ctx or DistContext()).tolist()
    denominator = max(count, 1.0)
    return EvalMetrics(100.0 * correct1 / denominator, 100.0 * correct5 / denominator, loss / denominator, int(count))


@torch.no_grad()
def infer_num_classes(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Number of logits ``model`` produces, found by one forward pass in eval mode on a zero image."""
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        return int(model(torch.zeros(1, *input_size, device=device)).shape[-1])
    finally:
        model.train(was_training)
