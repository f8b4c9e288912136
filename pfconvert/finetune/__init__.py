"""Fine-tuning of converted models by knowledge distillation from their original model.

``finetune(artifact_dir, FinetuneConfig(data=...))`` trains, checkpoints into the artifact and exports
``finetuned.safetensors``; ``evaluate_artifact`` measures top-1/top-5. ``run_finetune`` does the same for any
student/teacher pair of modules.
"""

from __future__ import annotations

from .api import EvalReport as EvalReport
from .api import evaluate_artifact as evaluate_artifact
from .api import finetune as finetune
from .api import resume_config as resume_config
from .config import FinetuneConfig as FinetuneConfig
from .config import make_config as make_config
from .distill import DistillationTask as DistillationTask
from .evaluate import EvalMetrics as EvalMetrics
from .progress import Reporter as Reporter
from .progress import RichReporter as RichReporter
from .results import FinetuneResult as FinetuneResult
from .runner import run_finetune as run_finetune

__all__ = [
    "finetune", "resume_config", "evaluate_artifact", "run_finetune", "FinetuneConfig", "make_config",
    "FinetuneResult", "EvalReport", "EvalMetrics", "DistillationTask", "Reporter", "RichReporter",
]
