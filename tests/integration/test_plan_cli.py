"""``pfconvert plan`` end to end on Fashion-MNIST: the table, the written rule, the plot, the refusal."""

from __future__ import annotations

import pytest
from conftest import FASHION_MNIST
from typer.testing import CliRunner

from pfconvert.cli.app import _register, app
from pfconvert.errors import BackendError, OutputExistsError, RuleError

pytestmark = pytest.mark.slow

TINY = ["--data", str(FASHION_MNIST), "--num-classes", "10", "--input-size", "32", "--limit", "64",
        "--bn-recalib-images", "32", "--reconstruct-images", "16", "--runs", "3", "--max-seconds", "2",
        "--batch-sizes", "1,4", "--retime-passes", "1", "--backend", "cpu-eager", "-r", "dw-hybrid",
        "--proxy-images", "64"]


def test_plan_prints_the_table_and_writes_what_it_chose_or_refuses(tmp_path) -> None:
    _register()
    rule, png = tmp_path / "planned.yaml", tmp_path / "plan.png"
    result = CliRunner().invoke(app, ["plan", "mobilenetv2_050", *TINY, "--max-drop", "100", "--write-rule", str(rule),
                                      "--plot", str(png)])
    assert "dw-hybrid: stage" in result.output and "Pareto" in result.output
    assert "before" in result.output and "proxy distillation" in " ".join(result.output.split())  # the caption
    assert png.stat().st_size > 1000
    if result.exit_code == 0:  # something is faster at batch 1 and 4 without being slower: its rule is written
        assert "name: dw-hybrid-planned" in rule.read_text() and "stages:" in rule.read_text()
    else:  # nothing pays off on this machine at this size: the refusal, and no rule file
        assert "no conversion pays off on cpu-eager" in str(result.exception) and not rule.exists()


def test_an_unavailable_backend_is_one_line(tmp_path) -> None:
    _register()
    result = CliRunner().invoke(app, ["plan", "mobilenetv2_050", *TINY[:-6], "--backend", "nope"])
    assert result.exit_code != 0 and str(result.exception).startswith("unknown backend 'nope'; choose from cpu")
    assert isinstance(result.exception, BackendError) and not isinstance(result.exception, RuleError)


def test_an_existing_output_is_refused_as_such_before_any_work(tmp_path) -> None:
    _register()
    rule = tmp_path / "planned.yaml"
    rule.write_text("mine")
    result = CliRunner().invoke(app, ["plan", "mobilenetv2_050", *TINY, "--write-rule", str(rule)])
    assert result.exit_code != 0 and "already exists; choose another path or pass --overwrite" in str(result.exception)
    assert isinstance(result.exception, OutputExistsError) and not isinstance(result.exception, RuleError)
    assert rule.read_text() == "mine"


@pytest.mark.parametrize("extra,message", [(["--prune", "--prune-importance", "taylor"],
                                            "--prune-importance: unknown pruning importance 'taylor'; use one of l1, "
                                            "group-norm"),
                                           (["--prune-global"], "--prune-importance and --prune-global choose how "
                                                                "--prune prunes; add --prune")])
def test_a_bad_pruning_method_is_one_line_before_any_work(extra, message) -> None:
    _register()
    result = CliRunner().invoke(app, ["plan", "mobilenetv2_050", *TINY, *extra])
    assert result.exit_code != 0 and str(result.exception) == message
