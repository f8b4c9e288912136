"""The package's layers: which layer may import which, lazy exports, and a command line that starts without torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import pfconvert

ROOT = Path(pfconvert.__file__).parent

ALLOWED: dict[str, set[str]] = {
    # the core: rule schema and loading, tracing and matching, ops, convert and artifacts
    "rules": {"ops"},
    "graph": set(),
    "ops": {"graph"},
    "conversion": {"rules", "graph", "ops", "data"},  # data.config only: the data config a conversion records
    # around it
    "data": set(),
    "recover": {"conversion", "graph", "ops", "data"},
    "deploy": {"graph", "ops"},
    "report": {"conversion", "graph", "ops", "deploy"},
    "study": {"conversion", "graph", "rules", "recover", "data", "report", "deploy"},
    "cli": {"rules", "graph", "ops", "conversion", "recover", "data", "deploy", "report", "study"},
}
"""Layer -> the layers it may import (besides itself and the shared top-level modules: errors, _lazy, _format,
_files). The core (rules, graph, ops, conversion) never imports deploy, report, cli, recover or study; of data, only
conversion imports the data config (checked below)."""
CORE = ("rules", "graph", "ops", "conversion")


def _imports(path: Path) -> set[str]:
    """Absolute names of the pfconvert modules a file imports anywhere (functions included), except under
    ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    package = ".".join(("pfconvert", *path.relative_to(ROOT).with_suffix("").parts))
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and getattr(node.test, "id", "") ==
            "TYPE_CHECKING" for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("pfconvert")}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


@pytest.mark.parametrize("layer", list(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(layer: str) -> None:
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for target in _imports(path):
            other = _layer(target)
            if other is not None and other != layer and other not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not bad, "\n".join(bad)


def test_the_core_never_imports_deploy_report_or_cli() -> None:
    outside = set(ALLOWED) - set(CORE) - {"data"}
    assert all(ALLOWED[layer] <= {*CORE, "data"} for layer in CORE) and not any(ALLOWED[c] & outside for c in CORE)


def test_conversion_imports_only_the_data_config() -> None:
    """The conversion records a data config; datasets, transforms and loaders stay outside the core."""
    found = {target for path in (ROOT / "conversion").rglob("*.py") for target in _imports(path)
             if _layer(target) == "data"}
    assert found and found <= {"pfconvert.data.config", "pfconvert.data.config.DataConfig",
                               "pfconvert.data.config.resolve_data_config"}, found


def test_command_line_help_and_rules_import_no_torch() -> None:
    """What `pfconvert --help`, every command's --help and `pfconvert rules` load (a proxy for their start-up time,
    which benchmarks/convert_speed.py measures)."""
    code = """
import json, sys
import click, typer.main
from pfconvert.cli import app as cli
cli._register()
group = typer.main.get_command(cli.app)
ctx = click.Context(group)
group.get_help(ctx)
for name, command in group.commands.items():
    command.get_help(click.Context(command, parent=ctx, info_name=name))
from pfconvert.cli._render import rules_table
from pfconvert.rules import list_rules
rules_table(list_rules())
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "torchvision", "onnx", "onnxruntime",
                                                                "matplotlib", "fvcore", "numpy", "openvino", "nncf"))
print(json.dumps(heavy))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == []
