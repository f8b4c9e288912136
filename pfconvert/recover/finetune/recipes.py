"""Fine-tune defaults per family of conversion, applied by ``pfconvert finetune`` where the user set nothing.

A conversion whose replaced layers are all depthwise convs (MobileNet / EfficientNet inverted bottlenecks, ConvNeXt
blocks) recovered best in the Fashion-MNIST study (examples/fashion_mnist/run.py, whose comments hold the recipe
measurements; docs/results/fashion-mnist.md) with:

- BatchNorm statistics kept fixed while training (``freeze_bn``): mobilenetv2_050 + maxpool 75.95% vs 72.32%;
- no augmentation in the short distillation (``augment: none``): 75.95% vs 72.04% with light augmentation;
- the least-squares reconstruction of each replacement's reader before training (``reconstruct_images``), on as
  many of the run's training images as it will see (``train_images``), up to 16,384: on the ImageNet-pretrained
  efficientnet_lite1 at 64 px with a 12,000-image budget, reconstruction on 1,024 / 4,096 / 12,000 images ended at
  81.83 / 83.03 / 84.00% (test) for ``maxpool`` and 84.60 / 86.52 / 87.20% for ``dw-hybrid`` (docs/finetuning.md).
  The runner lowers it further where the images and the cached activations would not fit in memory.
- block-wise distillation of each block holding a replaced op after its refit (``block_steps``: 500 steps per
  block on those images): at the same budgets, lite1 ``maxpool`` 83.90 -> 86.23% and ``dw-hybrid`` 87.20 -> 88.42%
  (64 px, 12,000 images, teacher 90.98%); with the learning-rate probe, against the earlier default (1,024
  reconstruction images, no block steps), lite2 ``maxpool`` 81.22 -> 83.48% and ``dw-hybrid`` 80.53 -> 84.58%
  (128 px, 1,500 images, teacher 87.40%), the from-scratch mobilenetv2_050 ``maxpool`` 77.78 -> 81.32% and
  ``dw-hybrid`` 81.26 -> 82.78% (64 px, 36,000 images, teacher 80.63%); test split, docs/results/recovery.md.

Compared with it on the same compute budget and chosen on the validation split (mobilenetv2_050 at 64 px, maxpool
and dw-hybrid), none did better: feature distillation of every converted block (``feature_weight``), keeping the
replaced layer's BN and activation (``dw-hybrid-keepnorm``), and a longer distillation at half the input size. So
this recipe is what ``pfconvert finetune`` uses for such conversions unless a flag says otherwise; other conversions
keep the plain defaults of :class:`~pfconvert.recover.finetune.config.FinetuneConfig`, and the library's
``finetune(artifact, config)`` uses the config it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["BUDGET_CAPPED", "FAMILY_RECIPES", "conversion_family", "family_defaults"]

FAMILY_RECIPES: dict[str, dict[str, Any]] = {
    "depthwise": {"freeze_bn": True, "augment": "none", "reconstruct_images": 16384, "block_steps": 500},
}
"""Config defaults per conversion family (see the module docstring for the measurements behind them)."""

BUDGET_CAPPED = ("reconstruct_images",)
"""Defaults that count training images and are lowered to the run's budget (``train_images``) when it is smaller."""


def conversion_family(replaced: list[Any]) -> str | None:
    """``depthwise`` when every replaced layer (a recipe's :class:`~pfconvert.conversion.rewrite.Replacement`, or its
    dict) was a depthwise conv (its recorded description ends in ``dw``), else None."""
    olds = [str(r.get("old", "") if isinstance(r, dict) else r.old) for r in replaced]
    return "depthwise" if olds and all(o.endswith(" dw") for o in olds) else None


def family_defaults(artifact_dir: str | Path, train_images: int | None = None) -> tuple[str | None, dict[str, Any]]:
    """The conversion family of an artifact (from its ``recipe.json``) and that family's config defaults, those in
    :data:`BUDGET_CAPPED` at most ``train_images`` (the run's budget) when it is given."""
    from ...conversion.artifact import RECIPE_FILE, Recipe

    recipe = Recipe.from_file(Path(artifact_dir) / RECIPE_FILE)
    family = conversion_family(recipe.replaced)
    defaults = dict(FAMILY_RECIPES.get(family or "", {}))
    if train_images is not None:
        defaults.update({k: min(v, train_images) for k, v in defaults.items() if k in BUDGET_CAPPED})
    return family, defaults
