"""Packaging: every package and data file ships, and every lazily exported name resolves."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import pfconvert

ROOT = Path(pfconvert.__file__).parent
REPO = ROOT.parent


def _lazy_packages() -> list[str]:
    names = ["pfconvert"]
    for info in pkgutil.walk_packages([str(ROOT)], "pfconvert."):
        if info.ispkg and "lazy_exports" in (ROOT.parent / info.name.replace(".", "/") / "__init__.py").read_text():
            names.append(info.name)
    return names


@pytest.mark.parametrize("package", _lazy_packages())
def test_lazy_exports_resolve_and_never_shadow_a_submodule(package: str) -> None:
    module = importlib.import_module(package)
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    exported = [name for name in module.__all__ if name != "__version__"]
    assert not set(exported) & submodules, "an export named like a submodule is replaced by it once that is imported"
    for name in exported:
        assert getattr(module, name) is not None



@pytest.mark.slow
def test_the_wheel_ships_every_package_the_rules_and_the_kernel_source(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True)
    names = set(zipfile.ZipFile(next(tmp_path.glob("pfconvert-*.whl"))).namelist())
    packages = {info.name for info in pkgutil.walk_packages([str(ROOT)], "pfconvert.") if info.ispkg}
    assert {f"{p.replace('.', '/')}/__init__.py" for p in packages} <= names
    rules = {f"pfconvert/builtin_rules/{p.name}" for p in (REPO / "rules").glob("*.yaml")}
    assert rules and rules <= names and "pfconvert/ops/kernels/csrc/maxpool.c" in names
