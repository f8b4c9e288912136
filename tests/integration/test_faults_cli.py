"""Issue 25, the command line's share: Ctrl-C, output paths, markup in user text, NaN, sizes a model refuses, sizes
that would not fit in memory, PFCONVERT_DEBUG, and what `report NAME ARTIFACT` compares. Each case: the command, its
exit code, one line on stderr, nothing lost."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import typer
from helpers import run_cli

from pfconvert._files import LOCK_FILE
from pfconvert.errors import ModelError, PfconvertError

FT = ["--input-size", "32", "--workers", "0", "--batch-size", "16", "--epochs", "1", "--limit-train", "64",
      "--limit-val", "32", "--quiet"]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (but pfconvert's lock file) with the hash of its content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*")) if p.name != LOCK_FILE and not p.is_symlink()}


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and "Traceback" not in err, err
    return lines[-1]


# -- Ctrl-C (item 2) ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", [130, KeyboardInterrupt], ids=["typer-returns-130", "keyboard-interrupt"])
def test_main_turns_an_interrupt_into_exit_130_and_one_line(outcome: object, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from pfconvert.cli import app as cli

    def fake_app(**_: object) -> int:
        cli.on_interrupt(lambda: "fake stopped by Ctrl-C; nothing was written")
        if outcome is KeyboardInterrupt:
            raise KeyboardInterrupt
        return outcome  # type: ignore[return-value]

    monkeypatch.setattr(cli, "_register", lambda: None)
    monkeypatch.setattr(cli, "app", fake_app)
    code, out, err = run_cli(["anything"], capsys, monkeypatch)
    assert code == 130 and out == ""
    assert err.strip().splitlines() == ["Interrupted: fake stopped by Ctrl-C; nothing was written"]


def test_main_passes_other_exit_codes_through(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from pfconvert.cli import app as cli

    monkeypatch.setattr(cli, "_register", lambda: None)
    for returned, want in ((3, 3), (0, 0), (None, 0)):
        monkeypatch.setattr(cli, "app", lambda returned=returned, **_: returned)
        code, _, err = run_cli(["anything"], capsys, monkeypatch)
        assert code == want and err == ""


class _Cli:
    """``python -m pfconvert ARGV`` in a subprocess, its stderr collected line by line as it comes."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        env = {**os.environ, "COLUMNS": "400"}
        self.process = subprocess.Popen([sys.executable, "-m", "pfconvert", *argv], cwd=cwd, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in self.lines):
                return
            if self.process.poll() is not None:
                self.reader.join(5)
                raise AssertionError(f"ended before {pattern!r}: {self.lines}")
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in time: {self.lines}")

    def interrupt(self, times: int = 1) -> tuple[int, list[str]]:
        for _ in range(times):
            self.process.send_signal(signal.SIGINT)
            time.sleep(0.3)
        self.process.wait(timeout=120)
        self.reader.join(10)
        return self.process.returncode, [line for line in self.lines if line.strip()]


@pytest.mark.slow
def test_ctrl_c_during_plan_exits_130_and_writes_nothing(ft_fmnist_dir: Path, tmp_path: Path) -> None:
    cli = _Cli(["plan", "mobilenetv2_050", "--data", str(ft_fmnist_dir), "--num-classes", "10", "--input-size", "32",
                "--batch-sizes", "1", "--runs", "500", "--max-seconds", "60", "--write-rule", "out/rule.yaml",
                "--plot", "out/plan.png"], tmp_path)
    cli.wait_for(r"^model: mobilenetv2_050")
    time.sleep(0.5)  # in the search
    code, lines = cli.interrupt()
    assert code == 130 and "Traceback" not in "\n".join(lines), lines
    assert lines[-1] == "Interrupted: plan stopped by Ctrl-C; nothing was written"
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_ctrl_c_during_eval_exits_130(ft_artifact: Path, ft_fmnist_dir: Path, tmp_path: Path) -> None:
    before = _snapshot(ft_artifact)
    cli = _Cli(["eval", str(ft_artifact), "--data", str(ft_fmnist_dir), "--split", "train", "--input-size", "256",
                "--batch-size", "1", "--workers", "0"], tmp_path)
    cli.wait_for(r"^evaluating the student model")
    code, lines = cli.interrupt()
    assert code == 130 and "Traceback" not in "\n".join(lines), lines
    assert lines[-1] == "Interrupted: eval stopped by Ctrl-C; nothing was written (eval writes no files)"
    assert _snapshot(ft_artifact) == before


@pytest.mark.slow
def test_ctrl_c_during_finetune_set_up_leaves_the_artifact_as_it_was(ft_artifact: Path, ft_fmnist_dir: Path,
                                                                    tmp_path: Path) -> None:
    import shutil

    art = Path(shutil.copytree(ft_artifact, tmp_path / "art"))
    before = _snapshot(art)
    cli = _Cli(["finetune", str(art), "--data", str(ft_fmnist_dir), "--input-size", "64", "--workers", "0",
                "--batch-size", "1", "--limit-val", "160"], tmp_path)
    cli.wait_for(r"^validating the student as converted")
    code, lines = cli.interrupt()
    assert code == 130 and "Traceback" not in "\n".join(lines), lines
    assert lines[-1] == ("Interrupted: fine-tuning stopped before its first checkpoint; nothing to resume and nothing "
                         "else written: run the same command again")
    assert _snapshot(art) == before


@pytest.mark.slow
def test_a_second_ctrl_c_in_training_exits_130_and_says_how_to_resume(ft_artifact: Path, ft_fmnist_dir: Path,
                                                                      tmp_path: Path) -> None:
    import shutil

    from pfconvert.recover.finetune.checkpoint import load_run_checkpoint

    art = Path(shutil.copytree(ft_artifact, tmp_path / "art"))
    cli = _Cli(["finetune", str(art), "--data", str(ft_fmnist_dir), "--input-size", "32", "--workers", "0",
                "--batch-size", "2", "--epochs", "3", "--limit-val", "16", "--limit-train", "64", "--bn-recalib-images", "0", "--reconstruct-images", "0", "--log-every", "1"], tmp_path)
    deadline = time.monotonic() + 180
    metrics = art / "metrics.jsonl"
    while '"event": "step"' not in (metrics.read_text() if metrics.exists() else ""):
        assert time.monotonic() < deadline and cli.process.poll() is None, cli.lines
        time.sleep(0.05)
    code, lines = cli.interrupt(times=2)
    # 130, or ended by the second SIGINT itself while the interpreter shut down (a shell reports both as 130)
    assert code in (130, -signal.SIGINT) and "Traceback" not in "\n".join(lines), lines
    last = art / "checkpoints" / "last.pt"
    assert lines[-1] == (f"Interrupted: fine-tuning stopped; its checkpoint {last} is kept: continue with "
                         f"`pfconvert finetune {art} --resume`")
    load_run_checkpoint(last)  # whole, readable
    assert not [p for p in art.rglob("*.tmp")]


# -- output paths checked before the work (items 10, 21) -------------------------------------------------------------


@pytest.fixture()
def no_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a plan, a sensitivity study or a report starts measuring."""
    import pfconvert.report.run
    import pfconvert.study.plan
    import pfconvert.study.sensitivity

    def started(*_: object, **__: object) -> None:
        raise AssertionError("the work started before the output paths were checked")

    monkeypatch.setattr(pfconvert.study.plan, "plan_on_data", started)
    monkeypatch.setattr(pfconvert.study.sensitivity, "sensitivity_on_data", started)
    monkeypatch.setattr(pfconvert.report.run, "run_report", started)


def _outputs_world(root: Path) -> dict[str, str]:
    (root / "folder").mkdir()
    (root / "file").write_text("the user's file\n")
    (root / "taken.png").write_bytes(b"the user's plot")
    return {"folder": str(root / "folder"), "file": str(root / "file"), "under": str(root / "file" / "x.yaml"),
            "under_png": str(root / "file" / "x.png"), "same": str(root / "same.png"),
            "same_alias": str(root / "folder" / ".." / "same.png"), "txt": str(root / "out.txt"),
            "taken": str(root / "taken.png")}


PLAN = ["plan", "mobilenetv2_050", "--data", "fashion-mnist"]
OUTPUT_CASES = [
    ("plan --write-rule DIR --overwrite", lambda p: [*PLAN, "--write-rule", p["folder"], "--overwrite"],
     r"^Error: --write-rule .*folder is a directory; give a file name such as .*folder/rule\.yaml$"),
    ("plan --plot DIR --overwrite", lambda p: [*PLAN, "--plot", p["folder"], "--overwrite"],
     r"^Error: --plot .*folder is a directory; give a file name such as .*folder/plan\.png$"),
    ("plan --write-rule FILE/x.yaml", lambda p: [*PLAN, "--write-rule", p["under"]],
     r"^Error: --write-rule .*file/x\.yaml lies under .*file, which is a file, not a directory"),
    ("plan --plot FILE/x.png", lambda p: [*PLAN, "--plot", p["under_png"]],
     r"^Error: --plot .*file/x\.png lies under .*file, which is a file"),
    ("plan --plot X --write-rule X", lambda p: [*PLAN, "--plot", p["same"], "--write-rule", p["same_alias"]],
     r"^Error: --write-rule and --plot both name .*same\.png; the second would replace the first"),
    ("plan --plot out.txt", lambda p: [*PLAN, "--plot", p["txt"]], r"^Error: --plot .*out\.txt is not a \.png file name"),
    ("plan --plot an existing file", lambda p: [*PLAN, "--plot", p["taken"]], r"already exists; choose another path"),
    ("sensitivity --write-rule DIR", lambda p: ["sensitivity", "mobilenetv2_050", "--data", "fashion-mnist",
                                                "--max-drop", "1", "--write-rule", p["folder"]], r"is a directory"),
    ("sensitivity --write-rule FILE/x.yaml", lambda p: ["sensitivity", "mobilenetv2_050", "--data", "fashion-mnist",
                                                        "--max-drop", "1", "--write-rule", p["under"]],
     r"which is a file, not a directory"),
    ("report --plot FILE/x.png", lambda p: ["report", "mobilenetv2_050", "--rule", "maxpool", "--plot",
                                            p["under_png"]], r"which is a file, not a directory"),
]


@pytest.mark.parametrize(("case", "argv", "message"), OUTPUT_CASES, ids=[c[0] for c in OUTPUT_CASES])
def test_output_paths_are_refused_before_any_work(case: str, argv: object, message: str, tmp_path: Path,
                                                  no_search: None, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _outputs_world(tmp_path)
    before = _snapshot(tmp_path)
    start = time.monotonic()
    code, out, err = run_cli(argv(paths), capsys, monkeypatch)  # type: ignore[operator]
    assert code == 1 and out == "" and re.search(message, _error_line(err)), err
    assert len(err.strip().splitlines()) == 1 and time.monotonic() - start < 10  # no model was built
    assert _snapshot(tmp_path) == before


# -- markup in user text (item 11) ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "shown"), [
    (["eval", "{art}", "--data", "/nonexistent/[/]"], "data path not found: /nonexistent/[/]"),
    (["eval", "/nonexistent/[bold]x[/bold]", "--data", "fashion-mnist"],
     "artifact directory not found: /nonexistent/[bold]x[/bold]"),
    (["inspect", "[/]"], "unknown timm model '[/]'"),
    (["convert", "mobilenetv2_050", "--out", "{root}/x[/]"], "output {root}/x[/] is a file, not a folder"),
], ids=["data", "artifact", "model", "out"])
def test_markup_in_user_text_is_printed_as_typed(argv: list[str], shown: str, ft_artifact: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "x[").mkdir()
    (tmp_path / "x[" / "]").write_text("the user's file\n")
    before = _snapshot(tmp_path)
    args = [a.format(art=ft_artifact, root=tmp_path) for a in argv]
    code, _, err = run_cli(args, capsys, monkeypatch)
    line = _error_line(err)
    assert code == 1 and line.startswith("Error: ") and shown.format(root=tmp_path) in line, err
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_markup_in_a_rule_name_reaches_the_tables_as_typed(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    rule = tmp_path / "r.yaml"
    rule.write_text("name: '[/]'\nrules:\n  - name: '[bold]dw[/bold]'\n    match: {depthwise: true}\n"
                    "    replace: {op: max_pool}\n")
    code, out, err = run_cli(["inspect", "mobilenetv2_050", "--rule", str(rule), "--input-size", "3,32,32"],
                             capsys, monkeypatch)
    assert code == 0 and "[bold]dw[/bold]" in out and "rule '[/]'" in err, err


# -- NaN and infinities (item 20) -----------------------------------------------------------------------------------


def _float_options() -> list[tuple[str, str]]:
    from pfconvert.cli.app import _register, app

    _register()
    group = typer.main.get_command(app)  # typer's own click: matched by type names, not classes
    found = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            if param.param_type_name == "option" and param.type.name in ("float", "float range"):
                found.append((name, param.opts[0]))
    return found


FLOAT_OPTIONS = _float_options()


def test_every_float_option_is_found() -> None:
    names = {f"{command} {option}" for command, option in FLOAT_OPTIONS}
    assert {"plan --max-drop", "plan --max-seconds", "report --accuracy-original", "finetune --lr",
            "export --tolerance", "convert --crop-pct", "eval --val-split"} <= names


@pytest.mark.parametrize(("command", "option"), FLOAT_OPTIONS, ids=[f"{c} {o}" for c, o in FLOAT_OPTIONS])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_option_refuses_nan_and_inf(command: str, option: str, value: str,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run_cli([command, option, value], capsys, monkeypatch)
    assert code == 2 and out == "", err
    refusal = "is not a finite number; give a number such as 1.0|is not in the range .*"  # a bound may refuse inf
    assert re.fullmatch(f"Error: Invalid value for '{option}'( / '--[a-z-]+')?: {float(value)} ({refusal})",
                        _error_line(err)), err


def test_json_is_strict() -> None:
    from pfconvert._json import strict_dumps
    from pfconvert.report.report import ModelStats, Report

    text = strict_dumps({"a": math.nan, "b": [math.inf, 1.5, (-math.inf,)], "c": "nan"}, indent=1)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in strict JSON")) == {
        "a": None, "b": [None, 1.5, [None]], "c": "nan"}
    assert strict_dumps({"x": object()}, default=lambda _: math.nan) == '{"x": null}'
    report = Report(original=ModelStats(name="a", params=1, macs=1, pool_ops=0, accuracy=math.nan),
                    converted=ModelStats(name="b", params=1, macs=1, pool_ops=0, accuracy=math.inf),
                    input_size=(3, 8, 8), threads=1, latency=[], convention="", memory_note="")
    assert "NaN" not in report.to_json() and "Infinity" not in report.to_json()


# -- a size the model refuses (item 12) ------------------------------------------------------------------------------


VIT = "vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def vit_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pfconvert

    model, record = pfconvert.convert(VIT, "vit-max", num_classes=10)
    return pfconvert.save(model, record, tmp_path_factory.mktemp("vit") / "vit-max")


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "fix"), [
    (["plan", VIT, "--data", "{data}", "--num-classes", "10", "--input-size", "32", "--rule", "vit-max"],
     "pass --kwarg img_size=32 (timm builds the model for that size) or --kwarg dynamic_img_size=true"),
    (["sensitivity", VIT, "--data", "{data}", "--num-classes", "10", "--input-size", "32", "--rule", "vit-max"],
     "pass --kwarg img_size=32"),
    (["eval", "{art}", "--data", "{data}", "--input-size", "32"],
     f"drop --input-size, or convert again for this size (pfconvert convert {VIT} --input-size 3,32,32 --kwarg "
     "img_size=32)"),
    (["finetune", "{art}", "--data", "{data}", *FT], "drop --input-size, or convert again for this size"),
    (["convert", VIT, "--rule", "vit-max", "--input-size", "3,32,32", "--out", "{root}/o"], "--kwarg img_size=H"),
    (["inspect", VIT, "--rule", "vit-max", "--input-size", "3,32,32"], "--kwarg img_size=H"),
], ids=["plan", "sensitivity", "eval", "finetune", "convert", "inspect"])
def test_an_img_size_a_vit_refuses_is_one_line(argv: list[str], fix: str, vit_artifact: Path, ft_fmnist_dir: Path,
                                               tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    before = _snapshot(vit_artifact)
    args = [a.format(data=ft_fmnist_dir, art=vit_artifact, root=tmp_path) for a in argv]
    code, _, err = run_cli(args, capsys, monkeypatch)
    line = _error_line(err)
    assert code == 1 and "does not take a 32x32 input (Input height (32) doesn't match model (224).)" in line, err
    assert fix in line and _snapshot(vit_artifact) == before and not (tmp_path / "o").exists()


def test_the_suggested_fix_gives_the_vit_that_size() -> None:
    from helpers import meta_model

    from pfconvert._inputs import check_input

    with pytest.raises(ModelError, match="does not take a 32x32 input"):
        check_input(meta_model(VIT, num_classes=10), (3, 32, 32))
    for kwargs in ({"img_size": 32}, {"dynamic_img_size": True}):
        assert check_input(meta_model(VIT, num_classes=10, **kwargs), (3, 32, 32)) is not None


# -- sizes that would not fit (item 13) ------------------------------------------------------------------------------


def test_memory_is_estimated_on_meta_tensors() -> None:
    import timm

    from pfconvert._inputs import check_memory, footprint

    model = timm.create_model("mobilenetv2_050", num_classes=10)
    fp = footprint(model, (3, 1000, 1000))  # a real forward would allocate ~1.5 GB
    assert fp is not None and fp.input_bytes == 12_000_000 and fp.largest_bytes >= 16 * 500 * 500 * 4
    assert fp.needed(32) > 32 * fp.largest_bytes
    available = 4 * fp.needed(8)
    check_memory(model, (3, 1000, 1000), {"--batch-sizes": [1, 8]}, available=available)  # fits in half of it
    with pytest.raises(PfconvertError, match=r"^--batch-sizes 64 at input 3x1000x1000 needs about .* more than half of "
                                             r"the .* of memory available; use at most (\d+)$") as info:
        check_memory(model, (3, 1000, 1000), {"--batch-sizes": [1, 64]}, available=available)
    fits = int(re.search(r"at most (\d+)", str(info.value)).group(1))  # type: ignore[union-attr]
    assert 8 <= fits < 64 and fp.needed(fits) <= available // 2 < fp.needed(fits + 1)


@pytest.mark.parametrize(("argv", "message"), [
    (["report", "mobilenetv2_050", "--rule", "maxpool", "--batch-sizes", "2000000"],
     "Error: --batch-sizes '2000000': at most 65536 (memory is checked against the model as well); give sizes such "
     "as 1,32"),
    (["report", "mobilenetv2_050", "--rule", "maxpool", "--input-size", "3,1000000,1000000"],
     "Error: --input-size '3,1000000,1000000': at most 16384 pixels a side and 4096 channels; give a size such as "
     "3,224,224"),
    (["plan", "mobilenetv2_050", "--data", "fashion-mnist", "--batch-sizes", "1,100000"], "at most 65536"),
    (["inspect", "mobilenetv2_050", "--input-size", "3,20000,20000"], "at most 16384 pixels a side"),
], ids=["report-batch", "report-input", "plan-batch", "inspect-input"])
def test_out_of_bounds_sizes_are_refused_at_once(argv: list[str], message: str, no_search: None,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_cli(argv, capsys, monkeypatch)
    assert code == 1 and message in _error_line(err), err


@pytest.mark.slow
def test_a_batch_that_would_not_fit_is_refused_before_the_report(no_search: None, capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import pfconvert._inputs

    monkeypatch.setattr(pfconvert._inputs, "available_memory", lambda: 200 * 2**20)  # 200 MiB free
    code, _, err = run_cli(["report", "mobilenetv2_050", "--rule", "maxpool", "--input-size", "3,224,224",
                            "--batch-sizes", "1,4096"], capsys, monkeypatch)
    line = _error_line(err)
    assert code == 1 and re.match(r"Error: --batch-sizes 4096 at input 3x224x224 needs about .* for mobilenetv2_050's "
                                  r"activations, more than half of the 209\.72MB of memory available; use at most \d+$",
                                  line), err


# -- PFCONVERT_DEBUG (item 23) ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "debug"), [("0", False), ("", False), ("no", False), ("false", False),
                                              ("1", True), ("TRUE", True), ("yes", True), (" Yes ", True)])
def test_debug_is_on_only_for_1_true_yes(value: str, debug: bool, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from pfconvert.cli import app as cli

    def failing(**_: object) -> None:
        raise PfconvertError("the user's mistake")

    monkeypatch.setenv("PFCONVERT_DEBUG", value)
    monkeypatch.setattr(cli, "_register", lambda: None)
    monkeypatch.setattr(cli, "app", failing)
    if debug:
        with pytest.raises(PfconvertError):
            run_cli(["x"], capsys, monkeypatch)
        return
    code, _, err = run_cli(["x"], capsys, monkeypatch)
    assert code == 1 and err.strip() == "Error: the user's mistake"


# -- what `report NAME ARTIFACT` compares (item 26) ------------------------------------------------------------------


@pytest.mark.slow
def test_a_model_named_beside_an_artifact_is_built_to_match_it(tmp_path: Path) -> None:
    import pfconvert
    import torch

    from pfconvert.report.pairs import resolve_pair

    model, record = pfconvert.convert("mobilenetv2_050", "maxpool", num_classes=10, input_size=(3, 32, 32))
    art = pfconvert.save(model, record, tmp_path / "art")
    x = torch.randn(2, 3, 32, 32)
    same = resolve_pair("mobilenetv2_050", str(art))  # the artifact's own model: its original, weights and all
    alone = resolve_pair(str(art))
    assert same.compared is not None and same.compared.startswith(f"compared: mobilenetv2_050 as {art}'s original")
    with torch.no_grad():
        assert torch.equal(same.original.eval()(x), alone.original.eval()(x))
    other = resolve_pair(str(art), "resnet18")  # another model: the artifact's class count, said so
    assert other.converted.eval()(x).shape == (2, 10)
    assert other.compared == f"compared: resnet18 with random weights (num_classes=10; num_classes as in {art})"
    given = resolve_pair("mobilenetv2_050", str(art), model_kwargs={"num_classes": 3})
    assert given.original.eval()(x).shape == (2, 3) and "num_classes=3" in (given.compared or "")
