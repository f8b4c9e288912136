"""Convert and save: build a timm model (:mod:`.models`), replace the layers a rule matches (:mod:`.rewrite`), and
write or read an artifact directory (:mod:`.artifact`)."""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "convert": ".rewrite",
    "convert_pair": ".rewrite",
    "match_rules": ".rewrite",
    "preview": ".rewrite",
    "apply_matches": ".rewrite",
    "build_op": ".rewrite",
    "ConversionRecord": ".rewrite",
    "Replacement": ".rewrite",
    "save": ".artifact",
    "load": ".artifact",
    "load_artifact": ".artifact",
    "build_original": ".artifact",
    "load_original": ".original",
    "Original": ".original",
    "save_weights": ".artifact",
    "Artifact": ".artifact",
    "Recipe": ".artifact",
    "create_model": ".models",
    "input_size": ".models",
    "load_checkpoint": ".models",
    "load_weights": ".models",
})
