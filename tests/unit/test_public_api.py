"""The examples use the public API only: names a package exports (``pfconvert`` and its layer packages'
``__all__``), never a module inside a layer."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").rglob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_examples_import_only_public_names(script: Path) -> None:
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pfconvert"):
            package = importlib.import_module(node.module)  # type: ignore[arg-type]
            assert hasattr(package, "__path__"), f"{script.name} imports from module {node.module}, not a package"
            missing = [a.name for a in node.names if a.name not in package.__all__]
            assert not missing, f"{script.name}: {node.module} does not export {missing}"
        elif isinstance(node, ast.Import):
            assert all(a.name == "pfconvert" or not a.name.startswith("pfconvert") for a in node.names)


def test_top_level_api() -> None:
    import pfconvert

    assert {"convert", "save", "load", "finetune", "FinetuneConfig", "evaluate_artifact", "run_report",
            "export_onnx", "optimize_for_cpu", "list_rules"} <= set(pfconvert.__all__)
