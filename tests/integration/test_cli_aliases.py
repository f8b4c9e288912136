"""One name per concept: the old option names still work for one release (the value reaches the library, a one-line
warning on stderr names the new option), are hidden from --help, and giving both names is refused in one line.

The library call of each command is replaced by a recorder that stops the command, so no data is read."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import refused_in_one_line, run_cli

from pfconvert.errors import PfconvertError

STOP = "stopped by the test after the library call"
MODEL = ["mobilenetv2_050", "--num-classes", "10", "--data", "fashion-mnist"]


def _record(monkeypatch: pytest.MonkeyPatch, target: str) -> dict[str, Any]:
    """Replace ``module.function`` by one that keeps its keyword arguments and ends the command."""
    module, _, name = target.rpartition(".")
    seen: dict[str, Any] = {}

    def fake(*args: Any, **kwargs: Any) -> None:
        seen.update(kwargs, args=args)
        raise PfconvertError(STOP)

    monkeypatch.setattr(f"{module}.{name}", fake)
    if module == "pfconvert.recover.finetune.api":
        monkeypatch.setattr("pfconvert.recover.finetune.recipes.family_defaults", lambda path, train_images=None: (None, {}))
    return seen


CASES = [  # command, library call, old flag, new flag, value, keyword the library gets, value it gets
    (["sensitivity", *MODEL], "pfconvert.study.sensitivity.sensitivity_on_data", "--img-size", "--input-size", "32",
     "img_size", 32),
    (["sensitivity", *MODEL], "pfconvert.study.sensitivity.sensitivity_on_data", "--limit-val", "--limit", "7",
     "limit_val", 7),
    (["plan", *MODEL, "-r", "maxpool"], "pfconvert.study.plan.plan_on_data", "--img-size", "--input-size", "32",
     "img_size", 32),
    (["plan", *MODEL, "-r", "maxpool"], "pfconvert.study.plan.plan_on_data", "--limit-val", "--limit", "7",
     "limit_val", 7),
    (["eval", "ARTIFACT", "--data", "fashion-mnist"], "pfconvert.recover.finetune.api.evaluate_artifact",
     "--img-size", "--input-size", "32", "img_size", 32),
    (["finetune", "ARTIFACT", "--data", "fashion-mnist"], "pfconvert.recover.finetune.api.finetune",
     "--img-size", "--input-size", "32", "config.img_size", 32),
    (["finetune", "ARTIFACT", "--data", "fashion-mnist"], "pfconvert.recover.finetune.api.finetune",
     "--ce-weight", "--task-weight", "0.25", "config.task_weight", 0.25),
]
IDS = [f"{argv[0]} {old}" for argv, _, old, *_ in CASES]


def _argv(argv: list[str], tmp_path: Any) -> list[str]:
    return [str(tmp_path) if a == "ARTIFACT" else a for a in argv]


def _got(seen: dict[str, Any], key: str) -> Any:
    if key.startswith("config."):
        return getattr(seen["args"][1], key.removeprefix("config."))
    return seen[key]


@pytest.mark.parametrize(("argv", "call", "old", "new", "value", "key", "expected"), CASES, ids=IDS)
def test_the_old_name_still_works_and_warns(argv: list[str], call: str, old: str, new: str, value: str, key: str,
                                           expected: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record(monkeypatch, call)
    code, _, err = run_cli([*_argv(argv, tmp_path), old, value], capsys, monkeypatch)
    assert code == 1 and STOP in err and "Traceback" not in err, err
    assert _got(seen, key) == expected
    warning = f"Warning: {old} is deprecated and will be removed in pfconvert 0.2; use {new}"
    assert [line for line in err.splitlines() if line.startswith("Warning:")] == [warning], err

    seen.clear()
    code, _, err = run_cli([*_argv(argv, tmp_path), new, value], capsys, monkeypatch)
    assert code == 1 and STOP in err and "Warning:" not in err, err
    assert _got(seen, key) == expected


@pytest.mark.parametrize(("argv", "call", "old", "new", "value", "key", "expected"), CASES, ids=IDS)
def test_giving_both_names_is_refused_in_one_line(argv: list[str], call: str, old: str, new: str, value: str,
                                                  key: str, expected: Any, tmp_path: Any,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record(monkeypatch, call)
    refused_in_one_line([*_argv(argv, tmp_path), old, value, new, value],
                        rf"{old} and {new} are one option \({old} is its deprecated name\); give only {new}$", capsys,
                        monkeypatch)
    assert not seen


@pytest.mark.parametrize("command", ["sensitivity", "plan", "eval", "finetune"])
def test_the_old_names_are_hidden_from_help(command: str, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli([command, "--help"], capsys, monkeypatch)
    assert code == 0 and "--input-size" in out
    assert not {"--img-size", "--limit-val" if command != "finetune" else "--img-size", "--ce-weight"} & set(
        out.replace("│", " ").split()), out
