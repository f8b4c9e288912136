"""Where models and weights come from: family names, tagged names, timm's pretrained loader (offline, from a local
Hugging Face cache built here), hf-hub ids and --pretrained-file; what the recipe records, and that an artifact
rebuilds its teacher with no download. Nothing here uses the network: HF_HUB_OFFLINE=1 throughout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from helpers import run_cli
from safetensors.torch import load_file, save_file

import pfconvert
from pfconvert.conversion.models import build_model, resolve_model_name
from pfconvert.errors import CheckpointError, ModelError

REPO = "timm/test_efficientnet.r160_in1k"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(root: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A Hugging Face cache holding ``REPO`` (weights and config.json) as ``huggingface_hub`` lays it out."""
    torch.manual_seed(7)
    state = {k: v.contiguous() for k, v in timm.create_model("test_efficientnet").state_dict().items()}
    repo = root / "hub" / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    save_file(state, str(snapshot / "model.safetensors"))
    cfg = {k: v for k, v in timm.create_model("test_efficientnet").pretrained_cfg.items()
           if k not in ("hf_hub_id", "architecture", "tag")}
    (snapshot / "config.json").write_text(json.dumps({"architecture": "test_efficientnet", "num_classes": 1000,
                                                      "pretrained_cfg": {**cfg, "interpolation": "bilinear"}}))
    return root / "hub", state


def _pfconvert(args: list[str], hub: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub), "HF_HOME": str(hub.parent / "hf-home")}
    return subprocess.run([sys.executable, "-m", "pfconvert", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_family_name_resolves_to_its_default_variant_and_an_ambiguous_one_lists_choices() -> None:
    assert resolve_model_name("mobilenetv2") == ("mobilenetv2_100", "mobilenetv2 -> mobilenetv2_100")
    assert resolve_model_name("efficientnet")[0] == "efficientnet_b0"
    assert resolve_model_name("resnet50.a1_in1k") == ("resnet50.a1_in1k", None)
    with pytest.raises(ModelError, match="'mobilenetv3' names a family of timm models, not one; choose one of "
                                         "mobilenetv3_large_075, mobilenetv3_large_100"):
        resolve_model_name("mobilenetv3")
    with pytest.raises(ModelError, match="unknown timm model 'mobilenetv2_10'; did you mean"):
        resolve_model_name("mobilenetv2_10")


def test_the_design_cards_command_works_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["convert", "mobilenetv2", "--rule", "maxpool"], capsys, monkeypatch)
    assert code == 0, err
    assert "model: mobilenetv2 -> mobilenetv2_100, weights: random init" in err
    assert "input: 3x224x224, bicubic" in err and "input 3x224x224" in out  # header, and the table says the size
    recipe = json.loads((tmp_path / "mobilenetv2-maxpool" / "recipe.json").read_text())
    assert recipe["model"] == "mobilenetv2_100" and recipe["source"]["requested"] == "mobilenetv2"


def test_a_tagged_name_keeps_its_pretrained_config_without_download() -> None:
    model, source = build_model("test_efficientnet.r160_in1k", num_classes=10)
    assert source.name == "test_efficientnet.r160_in1k" and source.weights == "random"
    assert model.pretrained_cfg["tag"] == "r160_in1k"


def test_pretrained_file_goes_through_timms_loader_and_is_recorded(tmp_path: Path) -> None:
    _, state = _hub_cache(tmp_path)
    file = tmp_path / "weights.safetensors"
    save_file(state, str(file))
    with pytest.raises(CheckpointError, match="the file's classifier has 1000 classes: pass --num-classes 1000"):
        pfconvert.convert("test_efficientnet", "maxpool", pretrained_file=file, num_classes=10)  # no silent new head
    model, record = pfconvert.convert("test_efficientnet", "maxpool", pretrained_file=file, num_classes=10,
                                      new_head=True)
    kept = "conv_stem.weight"
    assert torch.equal(model.state_dict()[kept], state[kept])  # loaded: not random init
    assert model.classifier.out_features == 10  # a new classifier, asked for
    assert record.source is not None and record.source.weights == "pretrained-file" and record.source.new_head
    assert record.source.sha256 and record.source.detail == str(file.resolve())
    art = pfconvert.save(model, record, tmp_path / "art")
    saved = json.loads((art / "recipe.json").read_text())["source"]
    assert saved["weights"] == "pretrained-file" and saved["sha256"] == record.source.sha256


@pytest.mark.slow
def test_pretrained_from_the_local_cache_offline_and_rebuilt_without_it(tmp_path: Path) -> None:
    hub, state = _hub_cache(tmp_path)
    done = _pfconvert(["convert", "test_efficientnet", "--pretrained", "--num-classes", "10", "--out", "a"], hub,
                      tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"weights: timm pretrained ({REPO})" in done.stderr
    recipe = json.loads((tmp_path / "a" / "recipe.json").read_text())
    assert recipe["model"] == "test_efficientnet.r160_in1k"
    assert recipe["source"]["weights"] == "pretrained" and recipe["source"]["detail"] == REPO
    shutil.rmtree(hub)  # the artifact alone rebuilds both models: nothing to download
    art = pfconvert.load_artifact(tmp_path / "a")
    teacher = pfconvert.build_original(art.recipe, art.path)
    assert torch.equal(teacher.state_dict()["blocks.3.0.conv_dw.weight"], state["blocks.3.0.conv_dw.weight"])
    assert torch.equal(art.model.state_dict()["conv_stem.weight"], state["conv_stem.weight"])
    missing = _pfconvert(["convert", "test_efficientnet", "--pretrained", "--out", "b"], hub, tmp_path)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    error = missing.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: the pretrained weights of 'test_efficientnet' (timm/test_efficientnet.r160_in1k) "
                            "are not in the local Hugging Face cache") and "--pretrained-file PATH" in error
    assert "HF_HUB_OFFLINE is set" in error and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_an_hf_hub_id_takes_its_config_and_weights_from_the_cache(tmp_path: Path) -> None:
    hub, state = _hub_cache(tmp_path)
    done = _pfconvert(["convert", f"hf-hub:{REPO}", "--pretrained", "--out", "h"], hub, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"model: hf-hub:{REPO} -> test_efficientnet" in done.stderr
    recipe = json.loads((tmp_path / "h" / "recipe.json").read_text())
    assert recipe["model"] == "test_efficientnet" and recipe["model_kwargs"] == {"num_classes": 1000}
    assert recipe["data_config"]["interpolation"] == "bilinear"  # the Hub config's, recorded
    shutil.rmtree(hub)
    weights = load_file(str(tmp_path / "h" / "model.safetensors"))
    assert torch.equal(weights["conv_stem.weight"], state["conv_stem.weight"])
    assert pfconvert.load(tmp_path / "h") is not None


def test_one_source_of_weights_at_a_time(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="give one source of weights"):
        build_model("test_efficientnet", tmp_path / "w.pth", pretrained=True)
