"""Docs that cannot rot: every dotted ``pfconvert.x.y`` name in the package's docstrings, the README and docs/
resolves to a module or an attribute of one, every relative ``:mod:`.x``` reference in a docstring resolves from
its module, and every test file (``tests/....py::name``) the text names exists."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOTTED = re.compile(r"(?<![\w./-])pfconvert(?:\.[A-Za-z_]\w*)+")
MODULE_ONLY = re.compile(r"(?:\bfrom\s+|\bimport\s+|-m\s+)(pfconvert(?:\.[A-Za-z_]\w*)*)")
RELATIVE = re.compile(r":(?:mod|func|class|meth|attr|data|exc):`~?(\.[A-Za-z_][\w.]*)`")
TEST_PATH = re.compile(r"\b(tests/[\w/]+\.py)(?:::(\w+))?")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _texts() -> list[tuple[str, str, str | None]]:
    """(where, text, module) for each docstring of the package and each Markdown file of README.md and docs/."""
    out: list[tuple[str, str, str | None]] = []
    for py in sorted((REPO / "pfconvert").rglob("*.py")):
        tree = ast.parse(py.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False)
                if doc:
                    where = f"{py.relative_to(REPO)}:{getattr(node, 'lineno', 1)}"
                    out.append((where, doc, _module_name(py)))
    for md in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        out.append((str(md.relative_to(REPO)), md.read_text(), None))
    return out


def resolves(name: str, module_only: bool = False) -> bool:
    """Whether ``name`` is an importable module or (unless ``module_only``) an attribute chain of one."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        if module_only and cut != len(parts):
            return False
        try:
            for part in parts[cut:]:
                obj = getattr(obj, part)
        except AttributeError:
            return False
        return True
    return False


def _unresolved() -> list[str]:
    bad = []
    for where, text, module in _texts():
        bad += [f"{where}: {m.group()}" for m in DOTTED.finditer(text) if not resolves(m.group())]
        bad += [f"{where}: {m.group(1)} (imported or run as a module)" for m in MODULE_ONLY.finditer(text)
                if not resolves(m.group(1), module_only=True)]
        if module is not None:
            package = module if (REPO / module.replace(".", "/")).is_dir() else module.rpartition(".")[0]
            for m in RELATIVE.finditer(text):
                ref = m.group(1)
                if not any(resolves(base + ref) for base in {module, package}):
                    bad.append(f"{where}: {ref} (relative to {package})")
        for m in TEST_PATH.finditer(text):
            path = REPO / m.group(1)
            if not path.is_file() or m.group(2) and f"def {m.group(2)}(" not in path.read_text():
                bad.append(f"{where}: {m.group()} (no such test)")
    return bad


def test_every_dotted_name_in_docstrings_and_docs_resolves() -> None:
    assert _unresolved() == []


@pytest.mark.parametrize("name, ok", [("pfconvert.rules.schema.MatchSpec", True), ("pfconvert.convert", True),
                                      ("pfconvert.finetune.config", False), ("pfconvert.rules.nope", False)])
def test_the_resolver_tells_names_apart(name: str, ok: bool) -> None:
    assert resolves(name) is ok


def test_a_moved_module_is_reported() -> None:
    """`from pfconvert.finetune import ...` (a function, not a module) is caught; so is a test file that is gone."""
    assert not resolves("pfconvert.finetune", module_only=True)
    text = "from pfconvert.finetune import finetune; tests/unit/test_rule_language.py"
    assert [m.group(1) for m in MODULE_ONLY.finditer(text)] == ["pfconvert.finetune"]
    assert [m.group(1) for m in TEST_PATH.finditer(text)] == ["tests/unit/test_rule_language.py"]
