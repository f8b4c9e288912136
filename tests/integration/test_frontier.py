"""benchmarks/frontier.py --quick on the committed Fashion-MNIST sample: a tiny original trained, its candidates
(rules, pruning, the planner's choice) scored by both planner scores, fine-tuned, timed side by side and tabled with
the rank correlations and a plot; a rerun resumes from the cache without training again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import FASHION_MNIST_SAMPLE

pytest.importorskip("torch_pruning")
pytest.importorskip("scipy")

pytestmark = pytest.mark.slow  # trains a tiny resnet26 and fine-tunes five candidates (a few minutes on 2 cores)


def test_quick_frontier_tables_every_method_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import frontier

    argv = ["--quick", "--data", str(FASHION_MNIST_SAMPLE), "--out", str(tmp_path), "--backends", "cpu-eager",
            "--threads", "1", "--max-rule-candidates", "3", "--proxy-lrs", "1e-4"]
    [result] = frontier.main(argv)
    rows = {r["name"]: r for r in result["rows"]}
    methods = {r["method"] for r in rows.values()}
    assert methods == {"rules", "pruning", "planner"}, rows.keys()
    assert "r50-max" in rows and "prune 0.2" in rows
    for row in rows.values():
        assert row["test_top1"] is not None and 0 <= row["test_top1"] <= 100
        assert row["old_top1"] is not None and row["proxy_top1"] is not None
        assert row["latency_ms"]["PyTorch CPU eager (naive) bs1"] > 0
    assert result["correlation"]["candidates"] == len(rows) >= 5
    assert set(result["correlation"]) == {"candidates", "proxy_top1", "old_top1"}  # None: a chance-level original
    assert result["proxy_alternatives"]["0.0001"]["candidates"] == len(rows)  # every candidate, the planner's too
    assert set(json.loads((tmp_path / "resnet26-32px" / "proxy-lr0.0001.json").read_text())) == set(rows)
    out = capsys.readouterr().out
    assert "| original | - |" in out and "Spearman rank correlation" in out and "Compute: " in out
    assert list(tmp_path.glob("frontier-resnet26-32px-*.png"))
    fine_tunes = sorted(tmp_path.glob("resnet26-32px/seed0/*/row.json"))
    assert len(fine_tunes) == len(rows)
    stamps = [p.stat().st_mtime for p in fine_tunes]
    [again] = frontier.main(argv + ["--only-cached"])  # resumes: nothing trained or timed again
    assert [p.stat().st_mtime for p in fine_tunes] == stamps
    assert [r["test_top1"] for r in again["rows"]] == [r["test_top1"] for r in result["rows"]]
    assert json.loads((tmp_path / "frontier.json").read_text())["results"][0]["model"] == "resnet26"
    earlier = tmp_path / "earlier.json"
    (tmp_path / "frontier.json").rename(earlier)  # another run's table, tabled after this run's on one page
    capsys.readouterr()
    both = frontier.main(argv + ["--only-cached", "--with-results", str(earlier)])
    assert [r["model"] for r in both] == ["resnet26", "resnet26"] and both[1]["source"] == str(earlier)
    assert capsys.readouterr().out.count("## resnet26") == 2


def test_rank_correlation_of_each_planner_score() -> None:
    from benchmarks.frontier import correlation

    rows = [{"test_top1": t, "proxy_top1": p, "old_top1": o}
            for t, p, o in [(80.0, 60.0, 30.0), (82.0, 61.0, 20.0), (85.0, 70.0, 10.0), (70.0, 50.0, 40.0)]]
    rows.append({"test_top1": None, "proxy_top1": 1.0, "old_top1": 1.0})  # not fine-tuned: left out
    corr = correlation(rows)
    assert corr["candidates"] == 4
    assert corr["proxy_top1"]["rho"] == pytest.approx(1.0) and corr["old_top1"]["rho"] == pytest.approx(-1.0)
    flat = correlation([{**r, "proxy_top1": 5.0} for r in rows[:4]])
    assert flat["proxy_top1"] is None and correlation(rows[:2])["old_top1"] is None


def test_the_pruning_candidates_say_which_pruner_and_use_it(capsys: pytest.CaptureFixture[str]) -> None:
    import types

    import timm

    from benchmarks import frontier

    args = frontier.parse_args(["--prune-importance", "group-norm", "--prune-global", "--prune-ratios", "0.4"])
    model = timm.create_model("resnet18", num_classes=10).eval()
    with torch.no_grad():  # 480 weak channels: the global pruner takes them (down to its 0.8 cap), a uniform one 40%
        model.layer4[0].conv1.weight[32:] *= 0.01
    fake = types.SimpleNamespace(args=args, model=model, size=(3, 32, 32), families={})
    fake.prune_label = frontier.Frontier.prune_label.fget(fake)
    [spec] = frontier.Frontier.prune_specs(fake)
    assert spec.name == "prune 0.4-group-norm-global" and spec.prune == 0.4
    assert frontier.Frontier.build(fake, spec).layer4[0].conv1.out_channels < 200
    fake.args = frontier.parse_args(["--prune-ratios", "0.4"])  # the default: L1, uniform, named as before
    fake.prune_label = frontier.Frontier.prune_label.fget(fake)
    [spec] = frontier.Frontier.prune_specs(fake)
    assert spec.name == "prune 0.4" and frontier.Frontier.build(fake, spec).layer4[0].conv1.out_channels == 304
    with pytest.raises(SystemExit):
        frontier.parse_args(["--prune-importance", "taylor"])
    assert "invalid choice: 'taylor'" in capsys.readouterr().err


def test_per_rule_candidates_keep_each_rules_whole_model_and_first_stages() -> None:
    import types

    import timm

    from benchmarks import frontier

    model = timm.create_model("resnet26", num_classes=10).eval()
    fake = types.SimpleNamespace(args=frontier.parse_args(["--per-rule-candidates", "2"]), model=model,
                                 size=(3, 64, 64), orig=types.SimpleNamespace(model="resnet26"))
    fake.rules = lambda: frontier.Frontier.rules(fake)
    names = [s.name for s in frontier.Frontier.rule_specs(fake)]
    assert names == ["r50-max", "r50-max: stage 0", "r50-hybrid", "r50-hybrid: stage 0"], names
    fake.args = frontier.parse_args(["--max-rule-candidates", "2"])  # the first two of all, as before
    assert [s.name for s in frontier.Frontier.rule_specs(fake)] == ["r50-max", "r50-max: stage 0"]


def test_verdicts_compare_the_planners_choice_with_the_best_pruning_within_each_target() -> None:
    from benchmarks.frontier import verdicts

    def row(name: str, method: str, top1: float, ms: float) -> dict:
        return {"name": name, "method": method, "test_top1": top1, "latency_ms": {"ORT bs1": ms}}

    result = {"original_ms": {"ORT bs1": 10.0}, "settings": {"targets": [0.8, 0.5]},
              "rows": [row("r50-max", "rules", 85.0, 7.0), row("prune 0.2", "pruning", 86.0, 7.5),
                       row("prune 0.5", "pruning", 80.0, 4.0), row("plan@0.8x: r50-max: stage 0", "planner", 86.6, 7.9),
                       row("plan@0.5x: prune 0.5", "planner", 80.0, 5.2)]}
    table = [line for line in verdicts(result) if line.startswith("| ORT bs1")]
    assert table[0] == ("| ORT bs1 | 0.8x | r50-max: 85.00 (0.70x) | prune 0.2: 86.00 (0.75x) | "
                        "plan@0.8x: r50-max: stage 0: 86.60 (0.79x) | +0.60 |")
    # the planner's 0.5x choice measured 0.52x here: still tabled against the best pruning within 0.5x
    assert table[1] == ("| ORT bs1 | 0.5x | none | prune 0.5: 80.00 (0.40x) | plan@0.5x: prune 0.5: 80.00 (0.52x) | "
                        "+0.00 |")
    assert verdicts({**result, "settings": {}}) == []
    # a target whose choice is another target's (tabled once) is judged with that row
    shared = {**result, "settings": {"targets": [0.65]}, "planner_targets": {"0.65": "plan@0.8x: r50-max: stage 0"}}
    [line] = [line for line in verdicts(shared) if line.startswith("| ORT bs1")]
    assert "| plan@0.8x: r50-max: stage 0: 86.60 (0.79x) |" in line


def test_only_selects_candidates_by_exact_name_or_star_prefix() -> None:
    from benchmarks.frontier import selected

    assert selected("r50-max: stage 0", None) and selected("r50-max: stage 0", [])
    assert selected("r50-max", ["r50-max"]) and not selected("r50-max: stage 0", ["r50-max"])
    assert selected("plan@0.8x: r50-max: stage 0", ["prune *", "plan@*"]) and not selected("r50-hybrid", ["plan@*"])


def test_depthwise_conversions_are_fine_tuned_with_their_family_recipe() -> None:
    """The frontier fine-tunes as ``pfconvert finetune`` does: build() records each candidate's conversion family,
    which selects the recipe (depthwise: reconstruction, block steps, frozen BatchNorm); pruning alone has none."""
    import types

    import timm

    from benchmarks import frontier
    from pfconvert.rules import load_rules

    fake = types.SimpleNamespace(model=timm.create_model("mobilenetv2_050", num_classes=10).eval(), size=(3, 32, 32),
                                 families={})
    frontier.Frontier.build(fake, frontier.Spec("maxpool", "rules", load_rules("maxpool").text))
    frontier.Frontier.build(fake, frontier.Spec("prune 0.2", "pruning", None, 0.2))
    assert fake.families == {"maxpool": "depthwise", "prune 0.2": None}


def test_budget_table_sets_runs_of_one_model_side_by_side_by_budget() -> None:
    """Two runs of resnet26 at 32 px with 30% and 100% budgets: one row per candidate both fine-tuned (a candidate
    only one run has is left out), its top-1 at each budget and the gain, each run's latency ratio; a lone run, or
    runs of different models, give no table; a default-budget run keeps its plot and section names."""
    from benchmarks.frontier import budget_table, budget_tag

    def run(share: float, top1: float, ms: float, extra: bool = False) -> dict:
        rows = [{"name": "r50-max", "test_top1": top1, "test_spread": 0.1, "seeds": [0, 1],
                 "latency_ms": {"ORT bs1": ms}}]
        if extra:
            rows.append({"name": "prune 0.5", "test_top1": 80.0, "test_spread": 0.0, "seeds": [0], "latency_ms": {}})
        return {"model": "resnet26", "img_size": 32, "budget_images": int(120000 * share),
                "original_test_top1": 90.0, "original_ms": {"ORT bs1": 2.0}, "settings": {"budget_share": share},
                "rows": rows}

    table = budget_table([run(0.3, 88.0, 1.2, extra=True), run(1.0, 89.5, 1.3)])
    assert "| candidate | 30% budget (36000 images) | 100% budget (120000 images) | 100% - 30% |" in table[4]
    assert table[6] == "| original | 90.00 | 90.00 | - | 1.00 |"
    assert table[7] == "| r50-max | 88.00 ± 0.10 (2) | 89.50 ± 0.10 (2) | +1.50 | 0.60/0.65 |"
    assert not any("prune 0.5" in line for line in table)
    assert budget_table([run(0.3, 88.0, 1.2)]) == []
    assert budget_table([run(0.3, 88.0, 1.2), {**run(1.0, 89.5, 1.3), "model": "resnet50"}]) == []
    assert budget_tag(run(0.3, 1, 1), "-budget") == "" and budget_tag(run(1.0, 1, 1), "-budget") == "-budget100%"
