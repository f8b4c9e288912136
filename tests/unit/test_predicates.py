"""The match-predicate registry: every ``match:`` key is one registered predicate, the matcher consults each one's
check (or selection), and the README's ``match`` paragraph names them all."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo

from pfconvert.graph import find_matches, trace_dataflow
from pfconvert.rules import parse_rules
from pfconvert.rules.language import match_keys_markdown, readme_with_match_keys
from pfconvert.rules.predicates import _registry, list_predicates, predicate_fields
from pfconvert.rules.schema import MatchSpec

from test_matching import SIZE, Net

REPO = Path(__file__).resolve().parents[2]
PREDICATES = [p.name for p in list_predicates()]


def test_every_match_field_is_one_registered_predicate_with_a_check_or_a_selection() -> None:
    assert list(MatchSpec.model_fields) == list(predicate_fields())
    owners = [name for p in list_predicates() for name in p.fields]
    assert sorted(owners) == sorted(MatchSpec.model_fields) and len(owners) == len(set(owners))
    for pred in list_predicates():
        assert (pred.check is None) != (pred.select is None), f"{pred.name}: needs exactly one of check / select"
        assert all(isinstance(f, FieldInfo) and f.description for _, f in pred.fields.values()), pred.name
        assert getattr(MatchSpec(**{pred.name: pred.example}), pred.name) is not None, pred.name


def _paths(match: dict) -> list[str]:
    body = ", ".join(f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in match.items())
    rules = parse_rules(f"name: t\nrules: [{{name: r, match: {{{body}}}, replace: {{op: max_pool}}}}]")
    model = Net()
    return [m.site.path for m in find_matches(model, rules.ruleset, trace_dataflow(model, SIZE))]


@pytest.mark.parametrize("name", PREDICATES)
def test_the_matcher_consults_every_predicate(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A predicate whose check (or selection) refuses everything leaves nothing matched; one that accepts everything
    matches what the rule without that key matches."""
    pred = _registry._PREDICATES[name]
    base = {"kernel_size": 3} if name != "kernel_size" else {"stride": 1}
    with_key = {**base, name: pred.example}
    everything = _paths({**base, "op": "conv2d"} if name == "op" else base)
    assert everything
    refuse = dict(check=lambda *_: False) if pred.check else dict(select=lambda spec, matches: [])
    monkeypatch.setitem(_registry._PREDICATES, name, dataclasses.replace(pred, **refuse))
    assert _paths(with_key) == []
    accept = dict(check=lambda *_: True) if pred.check else dict(select=lambda spec, matches: list(matches))
    monkeypatch.setitem(_registry._PREDICATES, name, dataclasses.replace(pred, **accept))
    assert _paths(with_key) == everything


def test_the_readme_lists_every_predicate() -> None:
    """The README's line of `match` keys is generated from the registry (regenerate it with
    `python -m pfconvert.rules.language --readme README.md`)."""
    readme = (REPO / "README.md").read_text()
    assert readme_with_match_keys(readme) == readme
    line = match_keys_markdown()
    assert all(f"`{name}`" in line for name in MatchSpec.model_fields)
