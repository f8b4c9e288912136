"""The planner's search, Pareto front and choice, with stand-in accuracy and timing (the real ones: integration)."""

from __future__ import annotations

import pytest
import timm
from torch import nn

import pfconvert
from pfconvert.ops.kernels import FastMaxPool2d
from pfconvert.report.report import FASTER, SAME, SLOWER
from pfconvert.rules import load_rules
from pfconvert.study.plan import NoPayoff, plan_conversion

SIZE = (3, 32, 32)
STAGE_COST = {0: 4.0, 1: 3.0, 2: 0.5, 3: 0.2, 4: 0.1, 5: 0.3, 6: 0.2}  # accuracy points lost per converted stage


def _pools(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.MaxPool2d, FastMaxPool2d))]


def _top1(model: nn.Module) -> float:
    return 90.0 - sum(STAGE_COST[int(n.split(".")[1])] for n in _pools(model))


def _timer(per_pool: float):
    """Latency 10 ms minus ``per_pool`` per pool: a negative value makes every pool slower."""
    def time_models(models: dict[str, nn.Module]) -> dict[int, dict[str, tuple[float, str]]]:
        out = {}
        for bs in (1, 32):
            times = {name: 10.0 - per_pool * len(_pools(m)) for name, m in models.items()}
            out[bs] = {name: (t, FASTER if t < 9.7 else SLOWER if t > 10.3 else SAME) for name, t in times.items()}
        return out
    return time_models


def _plan(per_pool: float, max_drop: float, rules: tuple[str, ...] = ("maxpool",)):
    model = timm.create_model("mobilenetv2_050", num_classes=10)
    return model, plan_conversion(model, [load_rules(r) for r in rules], SIZE, _top1, _timer(per_pool),
                                  lambda m: 1000, backend="cpu", backend_label="test", batch_sizes=(1, 32),
                                  max_drop=max_drop)


def test_greedy_prefixes_of_the_stage_ranking_and_the_choice() -> None:
    model, result = _plan(0.2, max_drop=2.0)
    ranked = result.sensitivity["maxpool"].ranked()
    ranking = [g.group for g in ranked]
    assert ranking[0] == "stage 6" and [g.drop for g in ranked] == sorted(g.drop for g in ranked)
    assert [len(c.groups) for c in result.candidates] == list(range(1, len(ranking) + 1))
    assert all(c.drop <= d.drop for c, d in zip(result.candidates, result.candidates[1:]))  # least harmful first
    chosen = result.chosen
    assert chosen is not None and chosen.drop <= 2.0 and chosen.pays_off
    assert all(c.drop > 2.0 or c.worst_ratio >= chosen.worst_ratio for c in result.candidates)
    assert chosen.pareto and "stage 0" not in chosen.groups
    _, record = pfconvert.convert(model, result.chosen_rules, input_size=SIZE)  # the written rule does exactly that
    assert [r.path for r in record.replacements] == chosen.layers
    assert "stages:" in result.chosen_rules.text


@pytest.mark.slow
def test_nothing_that_is_slower_is_ever_chosen() -> None:
    with pytest.raises(NoPayoff, match="no conversion pays off on cpu: none of the candidates is faster") as info:
        _plan(-0.2, max_drop=100.0)
    result = info.value.result
    assert result.candidates and result.chosen is None and not any(c.pays_off for c in result.candidates)


@pytest.mark.slow
def test_an_accuracy_budget_nothing_meets_is_a_refusal_too() -> None:
    with pytest.raises(NoPayoff, match=r"lose more than 0.05 top-1 points \(least: 0.50\)"):
        _plan(0.2, max_drop=0.05)


@pytest.mark.slow
def test_rules_that_match_nothing_are_skipped_with_the_reason() -> None:
    _, result = _plan(0.2, max_drop=2.0, rules=("maxpool", "bottleneck-max"))
    assert result.skipped == {"bottleneck-max": "matched no layer"}


def test_latency_differences_within_the_noise_do_not_outweigh_accuracy() -> None:
    from pfconvert.study.plan import Candidate, choose

    def cand(name: str, drop: float, ratio: float) -> Candidate:
        c = Candidate("maxpool", [name], [name], 80.0 - drop, drop, 1, 1)
        c.original_ms, c.latency_ms, c.verdicts = {1: 10.0}, {1: 10.0 * ratio}, {1: FASTER}
        return c

    fastest, close, clear = cand("a", 17.0, 0.220), cand("b", 7.0, 0.222), cand("c", 0.5, 0.30)
    assert choose([fastest, close, clear]) is close  # 1% apart: the same speed, 10 points better
    assert choose([fastest, clear]) is fastest  # 36% apart: a real difference
