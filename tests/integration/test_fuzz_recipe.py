"""Fuzzing ``recipe.json`` (hypothesis, bounded): any edit of a real recipe loads a valid artifact or gives a
one-line ``PfconvertError``; never another exception, never a hang."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pfconvert
from pfconvert.conversion.artifact import Recipe
from pfconvert.errors import PfconvertError

pytestmark = pytest.mark.slow

FIELDS = ["model", "model_kwargs", "checkpoint", "rule_name", "rule_text", "rule_sha256", "input_size", "replaced",
          "versions", "params_before", "params_after", "checkpoint_sha256", "created", "format", "extra",
          "weights", "source", "data_config", "pruning"]
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                              st.text(max_size=10)),
                    lambda inner: st.one_of(st.lists(inner, max_size=3),
                                            st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=15)
EDITS = st.lists(st.tuples(st.sampled_from(["set", "delete", "nest"]), st.sampled_from(FIELDS), JSON), max_size=3)


def _edit(recipe: dict, edits: list) -> dict:
    for kind, key, value in edits:
        if kind == "delete":
            recipe.pop(key, None)
        elif kind == "set":
            recipe[key] = value
        elif isinstance(recipe.get(key), list) and recipe[key]:
            recipe[key][0] = value
        elif isinstance(recipe.get(key), dict):
            recipe[key]["fuzz"] = value
    return recipe


@pytest.fixture(scope="module")
def saved(ft_artifact: Path) -> dict:
    return json.loads((ft_artifact / "recipe.json").read_text())


def _alarm(*_: object) -> None:
    raise TimeoutError("loading took more than 30 s")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(EDITS)
def test_edited_recipe_fields_validate_or_fail_in_one_line(saved: dict, edits: list) -> None:
    data = _edit(json.loads(json.dumps(saved)), edits)
    try:
        recipe = Recipe.from_dict(data, "recipe.json")
    except PfconvertError as exc:
        assert "\n" not in str(exc)
    else:
        assert recipe.rule_text and recipe.replaced is not None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(EDITS)
def test_an_edited_artifact_loads_or_fails_in_one_line(ft_artifact: Path, tmp_path_factory: pytest.TempPathFactory,
                                                       saved: dict, edits: list) -> None:
    folder = Path(shutil.copytree(ft_artifact, tmp_path_factory.mktemp("fuzz") / "art"))
    (folder / "recipe.json").write_text(json.dumps(_edit(json.loads(json.dumps(saved)), edits)))
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(30)
    try:
        pfconvert.load(folder)
    except PfconvertError as exc:
        assert "\n" not in str(exc)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
