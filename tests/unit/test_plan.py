"""The planner's search, Pareto front and choice, with stand-in accuracy and timing (the real ones: integration)."""

from __future__ import annotations

import pytest
import timm
from torch import nn

import pfconvert
from pfconvert.ops.kernels import FastMaxPool2d
from pfconvert.report.report import FASTER, SAME
from pfconvert.rules import load_rules
from pfconvert.study.groups import StageGroup
from pfconvert.study.plan import PlanRefused, PlanResult, plan_conversion

SIZE = (3, 32, 32)
STAGE_COST = {0: 4.0, 1: 3.0, 2: 0.5, 3: 0.2, 4: 0.1, 5: 0.3, 6: 0.2}  # accuracy points lost per converted stage


def _pools(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.MaxPool2d, FastMaxPool2d))]


def _top1(model: nn.Module) -> float:
    return 90.0 - sum(STAGE_COST[int(n.split(".")[1])] for n in _pools(model))


def _timer(per_pool: float):
    """Latency 10 ms minus ``per_pool`` per pool, the same in each of 5 rounds (no noise: the 3% floor decides); a
    negative value makes every pool slower."""
    def time_models(models: dict[str, nn.Module]) -> dict[int, dict[str, list[float]]]:
        return {bs: {name: [(10.0 - per_pool * len(_pools(m))) / 1e3] * 5 for name, m in models.items()}
                for bs in (1, 32)}
    return time_models


def _plan(per_pool: float, max_drop: float, rules: tuple[str, ...] = ("maxpool",), shrink: bool = True):
    model = timm.create_model("mobilenetv2_050", num_classes=10)
    return model, plan_conversion(model, [load_rules(r) for r in rules], SIZE, _top1, _timer(per_pool),
                                  lambda m: 1000, backend="cpu", backend_label="test", batch_sizes=(1, 32),
                                  max_drop=max_drop, shrink=shrink)


def test_greedy_prefixes_of_the_stage_ranking_and_the_choice() -> None:
    model, result = _plan(0.2, max_drop=2.0)
    ranked = result.sensitivity["maxpool"].ranked()
    ranking = [g.group for g in ranked]
    assert ranking[0] == StageGroup(6) and [g.drop for g in ranked] == sorted(g.drop for g in ranked)
    pooled = [c for c in result.candidates if c.rule == "maxpool"]
    assert [len(c.groups) for c in pooled] == list(range(1, len(ranking) + 1))
    assert all(c.drop <= d.drop for c, d in zip(pooled, pooled[1:]))  # least harmful first
    chosen = result.chosen
    assert chosen is not None and chosen.drop <= 2.0 and chosen.pays_off
    assert all(c.drop > 2.0 or c.worst_ratio >= chosen.worst_ratio for c in result.candidates)
    assert chosen.pareto and StageGroup(0) not in chosen.groups and chosen.groups == sorted(chosen.groups)
    assert chosen.to_dict()["groups"] == [f"stage {g.stage}" for g in chosen.groups]  # JSON: the labels
    _, record = pfconvert.convert(model, result.chosen_rules, input_size=SIZE)  # the written rule does exactly that
    assert [r.path for r in record.replacements if r.rule != "shrink"] == chosen.layers
    assert [r.path for r in record.replacements if r.rule == "shrink"] == chosen.shrunk
    assert "stages:" in result.chosen_rules.text
    shrink = next(c for c in result.candidates if c.rule == "shrink")  # geometry-exact shrinking alone: a candidate
    assert result.shrinkable == shrink.shrunk == [f"blocks.{i}.conv_dw" for i in ("5.0", "5.1", "5.2", "6.0")]
    assert shrink.layers == [] and shrink.params < result.base_params and shrink.drop == 0.0  # 1x1 maps at 32 px


@pytest.mark.slow
def test_nothing_that_is_slower_is_ever_chosen() -> None:
    with pytest.raises(PlanRefused, match="no conversion pays off on cpu: none of the candidates is faster") as info:
        _plan(-0.2, max_drop=100.0)
    result = info.value.result
    assert isinstance(result, PlanResult)  # the refusal carries what was measured (the CLI prints its table)
    assert result.candidates and result.chosen is None and not any(c.pays_off for c in result.candidates)


@pytest.mark.slow
def test_an_accuracy_budget_nothing_meets_is_a_refusal_too() -> None:
    with pytest.raises(PlanRefused, match=r"lose more than 0.05 top-1 points \(least: 0.50\)"):
        _plan(0.2, max_drop=0.05)


@pytest.mark.slow
def test_rules_that_match_nothing_are_skipped_with_the_reason() -> None:
    _, result = _plan(0.2, max_drop=2.0, rules=("maxpool", "bottleneck-max"), shrink=False)
    assert result.skipped == {"bottleneck-max": "matched no layer"}
    assert not result.shrinkable and not any(c.shrunk for c in result.candidates)  # --no-shrink


def test_latency_differences_within_the_noise_do_not_outweigh_accuracy() -> None:
    from pfconvert.study.plan import Candidate, choose

    def cand(name: str, drop: float, ratio: float) -> Candidate:
        c = Candidate("maxpool", [StageGroup(ord(name) - ord("a"))], [name], 80.0 - drop, drop, 1, 1)
        c.original_ms, c.latency_ms, c.verdicts = {1: 10.0}, {1: 10.0 * ratio}, {1: FASTER}
        return c

    fastest, close, clear = cand("a", 17.0, 0.220), cand("b", 7.0, 0.222), cand("c", 0.5, 0.30)
    assert choose([fastest, close, clear]) is close  # 1% apart: the same speed, 10 points better
    assert choose([fastest, clear]) is fastest  # 36% apart: a real difference


def _noisy_first_pass_timer(calls: list[list[str]]):
    """10 ms, 0.2 ms less per pool up to 3 pools (every candidate with 3 pools or more is 0.94x), 8 rounds. In the
    first call, the candidates with exactly 4 pools are timed with +-30% noise (a busy machine), later calls are
    quiet; ``calls`` records which models each call timed."""
    def time_models(models: dict[str, nn.Module]) -> dict[int, dict[str, list[float]]]:
        calls.append(list(models))
        out: dict[int, dict[str, list[float]]] = {}
        for bs in (1, 32):
            out[bs] = {}
            for name, m in models.items():
                ms = 10.0 - 0.2 * min(len(_pools(m)), 3)
                noisy = len(calls) == 1 and len(_pools(m)) == 4
                out[bs][name] = [ms * (1 + (0.3 if i % 2 else -0.3) * noisy) / 1e3 for i in range(8)]
        return out
    return time_models


@pytest.mark.slow
def test_a_noisy_close_call_is_timed_again_and_the_most_accurate_of_the_equally_fast_is_chosen() -> None:
    model = timm.create_model("mobilenetv2_050", num_classes=10)

    def plan(passes: int, calls: list[list[str]]):
        return plan_conversion(model, [load_rules("maxpool")], SIZE, _top1, _noisy_first_pass_timer(calls),
                               lambda m: 1000, backend="cpu", backend_label="test", batch_sizes=(1, 32),
                               max_drop=10.0, retime_passes=passes)

    calls: list[list[str]] = []
    result = plan(3, calls)
    best = min((c for c in result.candidates if len(c.layers) >= 3), key=lambda c: c.drop)  # of those at 0.94x
    assert len(best.layers) == 4 and best.groups == [StageGroup(4), StageGroup(6)]  # the noisy one
    retimed = result.retiming
    assert best.name in retimed.retimed and all(best.name in names for names in calls[1:]) and len(calls) > 1
    assert calls[1][0] == "original" and len(calls[1]) < len(calls[0])  # the close calls only, with the original
    assert best.rounds[1] == 8 * len(calls) and best.verdicts == {1: FASTER, 32: FASTER}  # rounds pooled
    assert not retimed.out_of_order and f"{retimed.passes} extra pass" in retimed.describe()
    assert result.chosen is best  # all 3+ pool candidates are 0.94x: equally fast, so the most accurate

    unchecked = plan(0, [])  # no re-timing: the noisy verdict stands and a less accurate candidate is chosen
    assert unchecked.chosen is not None and unchecked.chosen.drop > best.drop
    assert unchecked.retiming.unresolved and "not re-timed" in unchecked.retiming.describe()


def test_candidates_within_their_combined_noise_are_equally_fast() -> None:
    from pfconvert.study.plan import Candidate, choose, close_calls

    def cand(name: str, drop: float, ratio: float, margin: float, verdict: str = FASTER) -> Candidate:
        c = Candidate("maxpool", [StageGroup(ord(name) - ord("a"))], [name], 80.0 - drop, drop, 1, 1)
        c.original_ms, c.latency_ms, c.verdicts, c.margins = {1: 10.0}, {1: 10.0 * ratio}, {1: verdict}, {1: margin}
        return c

    fast, accurate = cand("a", 5.0, 0.90, 0.04), cand("b", 1.0, 0.93, 0.04)
    assert choose([fast, accurate]) is accurate  # 3.3% apart, combined margin 5.7%: as fast, and more accurate
    assert close_calls([fast, accurate], 10.0, [1]) == [fast, accurate]  # margins above the floor: time again
    precise_fast, precise_accurate = cand("a", 5.0, 0.90, 0.01), cand("b", 1.0, 0.93, 0.01)
    assert choose([precise_fast, precise_accurate]) is precise_fast  # beyond the noise: really faster
    assert close_calls([precise_fast, precise_accurate], 10.0, [1]) == []
    lower_not_faster = cand("c", 0.5, 0.92, 0.09, SAME)  # lower ratio than a candidate called faster, not faster
    assert close_calls([precise_fast, precise_accurate, lower_not_faster], 10.0, [1])[-2:] == [precise_accurate,
                                                                                                  lower_not_faster]
    assert close_calls([lower_not_faster], 0.1, [1]) == []  # beyond the accuracy budget: never a contender


@pytest.mark.slow
@pytest.mark.parametrize("importance,global_pruning,label", [("l1", False, ""),
                                                            ("group-norm", True, "-group-norm-global")])
def test_pruning_ratios_are_candidates_alone_and_after_each_rule_and_the_written_rule_replays_them(
        importance, global_pruning, label) -> None:
    from pfconvert.graph.modules import count_params

    model = timm.create_model("mobilenetv2_050", num_classes=10)
    full = count_params(model)

    def top1(m: nn.Module) -> float:  # each pool as before, and 1 point per 10% of the parameters pruned away
        return _top1(m) - 10.0 * max(0.0, 1 - count_params(m) / full) * (count_params(m) < full * 0.97)

    def timer(models: dict[str, nn.Module]) -> dict[int, dict[str, list[float]]]:  # latency follows the parameters
        return {bs: {name: [10.0 * count_params(m) / full / 1e3 - 1e-4 * len(_pools(m))] * 5
                     for name, m in models.items()} for bs in (1, 32)}

    result = plan_conversion(model, [load_rules("maxpool")], SIZE, top1, timer, lambda m: 1000, backend="cpu",
                             backend_label="test", batch_sizes=(1, 32), max_drop=100.0, prune_ratios=(0.5,),
                             retime_passes=0, prune_importance=importance, prune_global=global_pruning)
    plain = [c for c in result.candidates if c.prune is None]
    pruned = [c for c in result.candidates if c.prune == 0.5]
    assert len(pruned) == len(plain) and {c.name for c in pruned} == {f"{c.name} + prune 0.5{label}" for c in plain}
    assert all(p.params < c.params for p, c in zip(pruned, plain))
    chosen = result.chosen
    assert chosen is not None and chosen.prune == 0.5  # the fastest by far here
    extra = "\n  importance: group-norm\n  global_pruning: true" if global_pruning else "\nrules:"
    assert f"prune:\n  ratio: 0.5\n  round_to: 8{extra}" in result.chosen_rules.text
    converted, record = pfconvert.convert(model, result.chosen_rules, input_size=SIZE)  # convert replays it
    assert record.pruning is not None and count_params(converted) == chosen.params
    assert record.pruning.get("global_pruning", False) == global_pruning


def test_the_refusal_is_its_own_error_with_its_result_and_the_old_name_still_catches_it() -> None:
    import pickle

    import pfconvert.study
    from pfconvert.errors import PfconvertError

    result = PlanResult(80.0, 1, 1, "cpu", "test", [1], 1.0)
    error = PlanRefused("no conversion pays off on cpu: ...", result)
    assert error.result is result and isinstance(error, PfconvertError) and str(error).startswith("no conversion")
    assert pickle.loads(pickle.dumps(error)).result.base_top1 == 80.0  # crosses process boundaries whole
    with pytest.warns(DeprecationWarning, match="NoPayoff is deprecated.*use PlanRefused"):
        from pfconvert.study.plan import NoPayoff
    assert NoPayoff is PlanRefused and pfconvert.study.PlanRefused is PlanRefused


def test_stage_groups_are_typed_ordered_and_labelled() -> None:
    from pfconvert.study.groups import LayerGroup

    groups = [StageGroup(None), StageGroup(10), StageGroup(2)]
    assert sorted(groups) == [StageGroup(2), StageGroup(10), StageGroup(None)]  # by number (not text), 'other' last
    assert [g.label for g in sorted(groups)] == ["stage 2", "stage 10", "other"] == [str(g) for g in sorted(groups)]
    assert all(StageGroup.from_label(g.to_json()) == g for g in groups)
    for bad in ("stage", "stage -1", "Stage 2", "layer1.0"):
        with pytest.raises(ValueError, match="not a stage group"):
            StageGroup.from_label(bad)
    assert LayerGroup("blocks.1.0.conv_dw").to_json() == "blocks.1.0.conv_dw"
    assert len({StageGroup(2), StageGroup(2), StageGroup(None)}) == 2  # frozen: hashable, keys of the group maps


class _Unstaged(nn.Module):
    """A depthwise conv in a stem (no stage: the group 'other') and one in each of two stages."""

    def __init__(self) -> None:
        super().__init__()

        def unit() -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8),
                                 nn.ReLU())

        self.stem = nn.Sequential(nn.Conv2d(3, 8, 1), *list(unit())[1:])
        self.blocks = nn.Sequential(unit(), unit())
        self.head = nn.Linear(8, 10)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_a_candidate_of_stages_is_written_by_stages_and_one_with_other_by_paths() -> None:
    from pfconvert.conversion.rewrite import match_rules
    from pfconvert.study.plan import candidate_rules
    from pfconvert.study.sensitivity import stage_groups

    rules = load_rules("maxpool")
    matches, _ = match_rules(_Unstaged(), rules, (3, 16, 16))
    groups = stage_groups(matches)
    assert {g: [m.site.path for m in ms] for g, ms in groups.items()} == {
        StageGroup(None): ["stem.1"], StageGroup(0): ["blocks.0.1"], StageGroup(1): ["blocks.1.1"]}
    staged = candidate_rules(rules, groups, [StageGroup(1), StageGroup(0)]).ruleset.rules[0].match
    assert staged.stages == [0, 1] and staged.path is None
    with_other = candidate_rules(rules, groups, sorted(groups))
    assert with_other.ruleset.rules[0].match.path == ["blocks.0.1", "blocks.1.1", "stem.1"]
    assert "on stage 0, stage 1, other only" in with_other.text
