"""pfconvert: redesign vision models with parameter-free layers (Han et al., ICLR 2022).

Library API::

    import pfconvert
    model, record = pfconvert.convert("mobilenetv2_100", "maxpool")
    pfconvert.save(model, record, "out/mnv2-maxpool")
    model = pfconvert.load("out/mnv2-maxpool")

Names are imported on first use (``import pfconvert`` itself loads neither torch nor timm), so the command line
starts fast. The layers of the package, in the order data flows through them: :mod:`pfconvert.rules` (rule schema
and loading), :mod:`pfconvert.graph` (tracing and matching), :mod:`pfconvert.ops` (replacement ops and kernels),
:mod:`pfconvert.conversion` (convert, artifacts), :mod:`pfconvert.recover` (reconstruction, fine-tuning),
:mod:`pfconvert.data`, :mod:`pfconvert.deploy`, :mod:`pfconvert.report`, :mod:`pfconvert.study` and
:mod:`pfconvert.cli`; ``docs/architecture.md`` draws them.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ._lazy import lazy_exports

__version__ = "0.1.0"

_lazy_getattr, __dir__, _exported = lazy_exports(__name__, {
    "convert": ".conversion.rewrite",
    "convert_pair": ".conversion.rewrite",
    "preview": ".conversion.rewrite",
    "ConversionRecord": ".conversion.rewrite",
    "Replacement": ".conversion.rewrite",
    "save": ".conversion.artifact",
    "load": ".conversion.artifact",
    "load_artifact": ".conversion.artifact",
    "build_original": ".conversion.artifact",
    "load_original": ".conversion.original",
    "create_model": ".conversion.models",
    "list_rules": ".rules.loading",
    "load_rules": ".rules.loading",
    "PfconvertError": ".errors",
    "UsageError": ".errors",
    "finetune": ".recover.finetune.api",
    "evaluate_artifact": ".recover.finetune.api",
    "FinetuneConfig": ".recover.finetune.config",
    "run_report": ".report.run",
    "count_macs": ".report.counting",
    "optimize_for_cpu": ".deploy.cpu",
    "export_onnx": ".deploy.onnx",
})
__all__ = [*_exported, "__version__"]


def __getattr__(name: str) -> Any:
    """The exported name, imported on first use; functions check their arguments' types first
    (:func:`pfconvert._api.checked`: a wrong type is a one-line :class:`~pfconvert.errors.UsageError`)."""
    value = _lazy_getattr(name)
    if callable(value) and not isinstance(value, type):
        from ._api import checked

        value = checked(value)
        setattr(sys.modules[__name__], name, value)
    return value


if TYPE_CHECKING:  # the names __getattr__ serves, for type checkers and IDEs
    from .conversion.artifact import build_original, load, load_artifact, save  # noqa: F401
    from .conversion.models import create_model  # noqa: F401
    from .conversion.original import load_original  # noqa: F401
    from .conversion.rewrite import ConversionRecord, Replacement, convert, convert_pair, preview  # noqa: F401
    from .deploy.cpu import optimize_for_cpu  # noqa: F401
    from .deploy.onnx import export_onnx  # noqa: F401
    from .errors import PfconvertError, UsageError  # noqa: F401
    from .recover.finetune.api import evaluate_artifact, finetune  # noqa: F401
    from .recover.finetune.config import FinetuneConfig  # noqa: F401
    from .report.counting import count_macs  # noqa: F401
    from .report.run import run_report  # noqa: F401
    from .rules.loading import list_rules, load_rules  # noqa: F401

