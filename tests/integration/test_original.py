"""load_original: the one function every command builds its original model (weights and data config) with."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pfconvert.conversion.artifact import RECIPE_FILE, Recipe, artifact_data_config, build_original, load_artifact
from pfconvert.conversion.original import load_original
from pfconvert.errors import ModelError


def test_a_model_name_is_built_with_its_data_config_at_the_size_given() -> None:
    built = load_original("test_efficientnet", num_classes=10, input_size=40, data={"interpolation": "bilinear"})
    assert built.source is not None and (built.source.name, built.source.kwargs) == ("test_efficientnet",
                                                                                     {"num_classes": 10})
    assert built.data_config.input_size == (3, 40, 40) and built.data_config.interpolation == "bilinear"
    assert built.artifact is None and built.model(torch.zeros(1, 3, 40, 40)).shape == (1, 10)


def test_an_artifact_gives_its_original_fed_as_its_model_is(ft_artifact: Path) -> None:
    built = load_original(ft_artifact)
    recipe = Recipe.from_file(ft_artifact / RECIPE_FILE)
    expected = build_original(recipe, ft_artifact).state_dict()
    assert built.model.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in built.model.state_dict().items())
    student = load_artifact(ft_artifact)
    assert built.data_config == artifact_data_config(ft_artifact, recipe, student.model)[0]
    assert built.source == recipe.source and built.artifact == ft_artifact
    assert load_original(ft_artifact, input_size=48).data_config.input_size == (3, 48, 48)


def test_an_artifact_records_its_own_weights_and_kwargs(ft_artifact: Path) -> None:
    with pytest.raises(ModelError, match="is an artifact: .* drop checkpoint, num_classes"):
        load_original(ft_artifact, checkpoint="w.pth", num_classes=10)


def test_a_string_is_a_model_name_even_where_a_folder_has_that_name(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`pfconvert convert test_efficientnet` in a folder holding a `test_efficientnet/` folder builds the model."""
    (tmp_path / "test_efficientnet").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_original("test_efficientnet").artifact is None
