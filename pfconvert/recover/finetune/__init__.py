"""Fine-tuning of converted models by knowledge distillation from their original model.

``finetune(artifact_dir, FinetuneConfig(data=...))`` trains, checkpoints into the artifact and exports
``finetuned.safetensors``; ``evaluate_artifact`` measures top-1/top-5. ``run_finetune`` does the same for any
student/teacher pair of modules.
"""

from __future__ import annotations

from ..._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "finetune": ".api",
    "resume_config": ".api",
    "evaluate_artifact": ".api",
    "run_finetune": ".runner",
    "FinetuneConfig": ".config",
    "make_config": ".config",
    "FinetuneResult": ".results",
    "FinetuneStart": ".start",
    "EvalReport": ".api",
    "EvalMetrics": "..metrics",
    "DistillationTask": ".distill",
    "family_defaults": ".recipes",
    "FAMILY_RECIPES": ".recipes",
    "Reporter": ".progress",
    "TextReporter": ".progress",
})
