"""Recovery of a converted model's accuracy: least-squares reconstruction (:mod:`.refit`), BatchNorm
re-estimation (:mod:`.bn`), evaluation (:mod:`.metrics`) and fine-tuning by distillation (:mod:`.finetune`)."""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "reconstruct": ".refit",
    "find_consumers": ".refit",
    "Refit": ".refit",
    "recalibrate_batchnorm": ".bn",
    "evaluate": ".metrics",
    "EvalMetrics": ".metrics",
})
