"""Each refusal has its own error class: a backend is not a rule, an existing output is not a rule (or a plain
error); the classes callers caught before still catch them."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from pfconvert._files import ensure_writable
from pfconvert.errors import (ArtifactError, BackendError, ExportError, ExportExistsError, OutputExistsError,
                              PfconvertError, RuleError)


def test_an_unknown_or_unavailable_backend_is_a_backend_error() -> None:
    from pfconvert.report.backends import get_backend

    with pytest.raises(BackendError, match="unknown backend 'tpu'") as info:
        get_backend("tpu")
    assert not isinstance(info.value, RuleError) and isinstance(info.value, PfconvertError)


@pytest.mark.parametrize("marker", [None, "recipe.json"])
def test_an_existing_output_folder_is_an_output_exists_error(tmp_path: Path, marker: str | None) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="already exists and is not empty") as info:
        ensure_writable(tmp_path, overwrite=False, marker=marker)
    assert isinstance(info.value, ArtifactError)  # what save() callers caught before
    with pytest.raises(OutputExistsError, match="not a pfconvert artifact"):
        ensure_writable(tmp_path, overwrite=True, marker="recipe.json")
    assert (tmp_path / "mine.txt").read_text() == "keep"


def test_an_unreadable_output_is_not_called_existing(tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ArtifactError, match="link to nothing") as info:
        ensure_writable(tmp_path / "dangling", overwrite=True)
    assert not isinstance(info.value, OutputExistsError)


def test_an_existing_plot_file_is_an_output_exists_error(tmp_path: Path) -> None:
    from pfconvert.report.plot import check_plot_target

    (tmp_path / "r.png").write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match="already exists"):
        check_plot_target(tmp_path / "r.png")
    assert check_plot_target(tmp_path / "r.png", overwrite=True) == tmp_path / "r.png"


def test_an_existing_export_is_both_an_output_exists_and_an_export_error(tmp_path: Path) -> None:
    from pfconvert.deploy.onnx import export_onnx

    out = tmp_path / "m.onnx"
    out.write_bytes(b"mine")
    with pytest.raises(ExportExistsError, match="already exists") as info:
        export_onnx(nn.Conv2d(3, 4, 3), out, (3, 8, 8))
    assert isinstance(info.value, OutputExistsError) and isinstance(info.value, ExportError)
    assert out.read_bytes() == b"mine"


def test_every_output_file_goes_through_the_one_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cli/_outputs (plan / sensitivity --write-rule, --plot), report's plot and both exports call
    pfconvert._files.check_output_file: a guard that refuses everything refuses each of them."""
    import pfconvert._files as files
    from pfconvert.cli import _outputs
    from pfconvert.deploy import onnx, openvino
    from pfconvert.report import plot

    calls: list[str] = []

    def refuse(path: object, overwrite: bool = False, **kwargs: object) -> None:
        calls.append(str(kwargs.get("option", "--out")))
        raise PfconvertError("refused by the guard")

    for module in (files, _outputs, plot, onnx, openvino):
        monkeypatch.setattr(module, "check_output_file", refuse, raising=module is files)
    for call in (lambda: _outputs.check_output("--write-rule", tmp_path / "r.yaml", False, "rule.yaml"),
                 lambda: plot.check_plot_target(tmp_path / "r.png"),
                 lambda: onnx.export_onnx(nn.Conv2d(3, 4, 3), tmp_path / "m.onnx", (3, 8, 8))):
        with pytest.raises(PfconvertError, match="refused by the guard"):
            call()
    assert calls == ["--write-rule", "--plot", "--out"]


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("folder", {}, r"^--out .*folder is a directory; give a file name such as .*folder/out$"),
    ("x.txt", {"suffix": ".png"}, r"^--out .*x\.txt is not a \.png file name; use e\.g\. .*x\.png$"),
    ("taken.png", {}, r"^--out .*taken\.png already exists; choose another path or pass --overwrite$"),
    ("file/x.png", {}, r"^--out .*file/x\.png lies under .*file, which is a file, not a directory"),
])
def test_the_output_file_guard_refuses_in_one_line(tmp_path: Path, name: str, kwargs: dict, message: str) -> None:
    from pfconvert._files import check_output_file

    (tmp_path / "folder").mkdir()
    (tmp_path / "taken.png").write_bytes(b"mine")
    (tmp_path / "file").write_text("mine")
    with pytest.raises(PfconvertError, match=message):
        check_output_file(tmp_path / name, **kwargs)
    assert (tmp_path / "taken.png").read_bytes() == b"mine"
    assert check_output_file(tmp_path / "taken.png", overwrite=True) == tmp_path / "taken.png"
    assert check_output_file(tmp_path / "new" / "deeper" / "x.png", suffix=".png").name == "x.png"
