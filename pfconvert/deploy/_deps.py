"""Optional runtimes: whether one is installed (without importing it), and importing it with a one-line error that
names the extra which installs it."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from types import ModuleType

from ..errors import ExportError, one_line

__all__ = ["EXTRAS", "installed", "require"]

EXTRAS = {"openvino": "openvino", "nncf": "openvino", "onnxruntime": None}
"""Module -> the pfconvert extra that installs it (None: a core dependency)."""


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, why: str) -> ModuleType:
    """Import ``module`` or raise a one-line error naming the pip command that installs it.

    Raises:
        ExportError: the module is not installed (or fails to import).
    """
    extra = EXTRAS.get(module)
    hint = f"pip install 'pfconvert[{extra}]'" if extra else f"pip install {module}"
    if module == "nncf":  # nncf imports torch.utils.cpp_extension (now or when quantizing), which warns about
        #                   CUDA_HOME on machines without a GPU: noise for a CPU quantization
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise ExportError(f"{why} needs {module}, which is not installed; install it with: {hint}") from None
    except ImportError as exc:  # installed but broken (a missing shared library, a version clash...)
        raise ExportError(f"{why} needs {module}, which fails to import ({one_line(exc, 200)}); reinstall it with: "
                          f"{hint}") from None
