"""Fine-tune defaults per family of conversion, applied by ``pfconvert finetune`` where the user set nothing.

A conversion whose replaced layers are all depthwise convs (MobileNet / EfficientNet inverted bottlenecks, ConvNeXt
blocks) recovered best in the Fashion-MNIST study (examples/fashion_mnist/run.py, whose comments hold the recipe
measurements; docs/results/fashion-mnist.md) with:

- BatchNorm statistics kept fixed while training (``freeze_bn``): mobilenetv2_050 + maxpool 75.95% vs 72.32%;
- no augmentation in the short distillation (``augment: none``): 75.95% vs 72.04% with light augmentation;
- the least-squares reconstruction of each replacement's reader before training (``reconstruct_images``).

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

__all__ = ["FAMILY_RECIPES", "conversion_family", "family_defaults"]

FAMILY_RECIPES: dict[str, dict[str, Any]] = {
    "depthwise": {"freeze_bn": True, "augment": "none", "reconstruct_images": 1024},
}
"""Config defaults per conversion family (see the module docstring for the measurements behind them)."""


def conversion_family(replaced: list[Any]) -> str | None:
    """``depthwise`` when every replaced layer (a recipe's :class:`~pfconvert.conversion.rewrite.Replacement`, or its
    dict) was a depthwise conv (its recorded description ends in ``dw``), else None."""
    olds = [str(r.get("old", "") if isinstance(r, dict) else r.old) for r in replaced]
    return "depthwise" if olds and all(o.endswith(" dw") for o in olds) else None


def family_defaults(artifact_dir: str | Path) -> tuple[str | None, dict[str, Any]]:
    """The conversion family of an artifact (from its ``recipe.json``) and that family's config defaults."""
    from ...conversion.artifact import RECIPE_FILE, Recipe

    recipe = Recipe.from_file(Path(artifact_dir) / RECIPE_FILE)
    family = conversion_family(recipe.replaced)
    return family, dict(FAMILY_RECIPES.get(family or "", {}))
