"""Artifacts: a directory with a replayable recipe and safetensors weights; no whole-model pickles.

Layout of ``OUT/``:

- ``recipe.json``: timm model name and kwargs, where the weights came from, the data config (input size, resize,
  crop, mean and std: what every later command feeds the model), the rule text and its hash, package versions, the
  replaced layers (each with the ops it was built from and their versions).
- ``model.safetensors``: the converted model's state dict.
- ``original-removed.safetensors``: the original state of the replaced/absorbed layers, so that the original model
  (the fine-tuning teacher) is rebuilt exactly: untouched layers come from ``model.safetensors``.
- ``finetuned.safetensors``: written by ``pfconvert finetune``; :func:`load` prefers it.

:func:`load` rebuilds the model with ``timm.create_model``, replays the rules, and loads the weights strictly. An op
whose version changed since the artifact was made is migrated or refused (:mod:`pfconvert.conversion.versions`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._files import atomic_write, ensure_writable, exclusive, write_text
from ..data.config import DataConfig, resolve_data_config
from ..errors import ArtifactError, CheckpointError, DataError, PfconvertError, one_line
from ..rules.loading import rule_sha256
from .models import create_model, file_sha256, load_weights
from .rewrite import convert
from .versions import replay_rules

__all__ = [
    "RECIPE_FILE", "WEIGHTS_FILE", "REMOVED_FILE", "FINETUNED_FILE", "RUN_FILES", "Recipe", "Artifact",
    "save", "load", "load_artifact", "build_original", "save_weights", "read_weights", "artifact_data_config",
    "read_summary",
]

RECIPE_FILE = "recipe.json"
WEIGHTS_FILE = "model.safetensors"
REMOVED_FILE = "original-removed.safetensors"
FINETUNED_FILE = "finetuned.safetensors"
SUMMARY_FILE = "finetune.json"
RUN_FILES = (FINETUNED_FILE, "checkpoints", "metrics.jsonl", SUMMARY_FILE, "model.onnx")
"""What fine-tuning and export add to an artifact: results of its model, stale once the artifact is re-created."""
FORMAT = "pfconvert-artifact/1"
MAX_RECIPE_BYTES = 16 << 20


@dataclass
class Recipe:
    """Everything needed to rebuild a converted model (stored as ``recipe.json``)."""

    model: str | None
    model_kwargs: dict[str, Any]
    checkpoint: str | None
    rule_name: str
    rule_text: str
    rule_sha256: str
    input_size: tuple[int, int, int]
    replaced: list[dict[str, Any]]
    versions: dict[str, str]
    params_before: int = 0
    params_after: int = 0
    checkpoint_sha256: str | None = None
    created: str = ""
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] | None = None
    data_config: dict[str, Any] | None = None
    pruning: dict[str, Any] | None = None
    """Channel pruning after the rules: ratio, rounding and every reshaped module's channel counts and tensor shapes
    (:class:`pfconvert.conversion.pruning.Pruning`); :func:`load` gives the rebuilt model these shapes."""

    def to_json(self) -> str:
        """The recipe as indented JSON."""
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> "Recipe":
        """Read and check ``recipe.json``: its format, the type of every field, and that the rule text is the one
        its hash was taken of.

        Raises:
            ArtifactError: the file is missing, unreadable, not JSON, malformed or edited by hand.
        """
        try:
            if path.stat().st_size > MAX_RECIPE_BYTES:
                raise ArtifactError(f"{path} is larger than {MAX_RECIPE_BYTES >> 20} MiB; it is not a recipe")
            data = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise ArtifactError(f"{path.parent} is not a pfconvert artifact: {RECIPE_FILE} is missing "
                                "(create one with `pfconvert convert`)") from None
        except (OSError, ValueError, RecursionError) as exc:  # JSON and UTF-8 errors are ValueErrors
            raise ArtifactError(f"cannot read {path}: {one_line(exc)}") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: object, where: str = RECIPE_FILE) -> "Recipe":
        """Validate a recipe's fields (see :meth:`from_file`)."""
        from pydantic import TypeAdapter, ValidationError

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ArtifactError(f"{where}: not a {FORMAT} recipe (format: {found!r})")
        try:
            recipe = TypeAdapter(cls).validate_python(data, strict=False)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "recipe"
            raise ArtifactError(f"{where}: malformed recipe, field '{field}': {err['msg']}") from None
        if any(not isinstance(entry.get("path"), str) for entry in recipe.replaced):
            raise ArtifactError(f"{where}: malformed recipe, field 'replaced': every entry needs a 'path'")
        if rule_sha256(recipe.rule_text) != recipe.rule_sha256:
            raise ArtifactError(f"{where}: the rule text does not match its rule_sha256 (the recipe was edited); "
                                "convert the model again with `pfconvert convert` instead of editing recipe.json")
        if min(recipe.input_size) < 1:
            raise ArtifactError(f"{where}: malformed recipe, field 'input_size': {recipe.input_size}")
        if recipe.data_config is not None:
            try:
                DataConfig.from_dict(recipe.data_config)
            except DataError as exc:
                raise ArtifactError(f"{where}: malformed recipe, field 'data_config': {exc}") from None
        return recipe

    def data(self, model: nn.Module | None = None) -> DataConfig:
        """The data config recorded at conversion; recipes older than it get timm's config of ``model`` (the
        original model) at the recorded input size."""
        if self.data_config is not None:
            return DataConfig.from_dict(self.data_config)
        if model is None:
            raise ArtifactError("this recipe records no data config; pass the original model to derive it")
        return resolve_data_config(model, input_size=tuple(self.input_size))  # type: ignore[arg-type]

    def fingerprint(self) -> str:
        """A hash of the whole recipe: the identity of one conversion (a checkpoint records it)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()


@dataclass
class Artifact:
    """A loaded artifact: the converted model (weights loaded), its recipe, its directory and weights file."""

    model: nn.Module
    recipe: Recipe
    path: Path
    weights_file: Path


def _versions() -> dict[str, str]:
    import timm

    from .. import __version__

    return {"pfconvert": __version__, "torch": torch.__version__.split("+")[0], "timm": timm.__version__}


def save_weights(state_or_model: nn.Module | dict[str, torch.Tensor], path: str | Path) -> None:
    """Write a state dict (or a model's) as safetensors atomically (:func:`pfconvert._files.atomic_write`)."""
    from safetensors.torch import save_file

    path = Path(path)
    state = state_or_model.state_dict() if isinstance(state_or_model, nn.Module) else state_or_model
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[tuple[int, int], str] = {}
    for key, value in state.items():
        ident = (value.untyped_storage().data_ptr(), value.storage_offset()) if value.numel() else (id(value), 0)
        tensors[key] = value.detach().cpu().clone() if ident in seen else value.detach().cpu().contiguous()
        seen.setdefault(ident, key)
    atomic_write(path, lambda temp: save_file(tensors, str(temp), metadata={"format": "pt"}))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, with a one-line error when it is missing or corrupt."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise ArtifactError(f"artifact weights missing: {path}") from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise ArtifactError(f"cannot read weights {path}: {exc}") from None


def save(model: nn.Module, record: Any, out: str | Path, overwrite: bool = False) -> Path:
    """Write a converted model and its :class:`~pfconvert.conversion.rewrite.ConversionRecord` as an artifact directory.

    Raises:
        ArtifactError: ``out`` exists and is not empty (pass ``overwrite=True``), or the model has no timm name to
            rebuild from.
    """
    out = Path(out)
    if record.model_name is None:
        raise ArtifactError("only timm models can be saved as artifacts (the recipe rebuilds them by name); "
                            "for other models save model.state_dict() and replay pfconvert.convert on load")
    ensure_writable(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out, "pfconvert convert"):
        _write(model, record, out)
    return out


def _write(model: nn.Module, record: Any, out: Path) -> None:
    """Replace the artifact in ``out`` (its lock held): a new recipe and weights, and no results of an earlier
    model (fine-tuning checkpoints, logs, fine-tuned weights, exports) left to be mistaken for this one's."""
    for name in RUN_FILES:
        stale = out / name
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    ck = Path(record.checkpoint) if record.checkpoint else None
    recipe = Recipe(
        model=record.model_name, model_kwargs=record.model_kwargs, checkpoint=record.checkpoint,
        rule_name=record.rules.name, rule_text=record.rules.text, rule_sha256=record.rules.sha256,
        input_size=tuple(record.input_size), replaced=[r.to_dict() for r in record.replacements],
        versions=_versions(), params_before=record.params_before, params_after=record.params_after,
        checkpoint_sha256=file_sha256(ck) if ck is not None and ck.is_file() else None,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        source=record.source.to_dict() if record.source is not None else None,
        data_config=record.data_config.to_dict() if record.data_config is not None else None,
        pruning=getattr(record, "pruning", None),
    )
    save_weights(model, out / WEIGHTS_FILE)
    save_weights(record.removed_state, out / REMOVED_FILE)
    write_text(out / RECIPE_FILE, recipe.to_json())


def _rebuild(recipe: Recipe, where: Path) -> nn.Module:
    """A fresh converted model (random init) by replaying the recipe; checks the same layers are replaced."""
    if not recipe.model:
        raise ArtifactError(f"{where}: the recipe names no timm model to rebuild")
    model = create_model(recipe.model, **recipe.model_kwargs)
    rules = replay_rules(recipe, where, source=f"{where / RECIPE_FILE} (rule '{recipe.rule_name}')")  # ops checked
    model, record = convert(model, rules, input_size=recipe.input_size, inplace=True, verify=False, allow_empty=True,
                            prune=False)
    if recipe.pruning is not None:  # the recorded shapes, not a new magnitude pruning of random weights
        from .pruning import apply_shapes

        apply_shapes(model, recipe.pruning, str(where / RECIPE_FILE))
    got = [r.path for r in record.replacements]
    want = [r["path"] for r in recipe.replaced]
    if got != want:
        raise ArtifactError(f"{where}: replaying rule '{recipe.rule_name}' replaced {len(got)} layers, the artifact "
                            f"has {len(want)} (timm {recipe.versions.get('timm')} made it; installed timm may differ)")
    return model


def load_artifact(path: str | Path, weights: str = "auto") -> Artifact:
    """Rebuild the converted model of an artifact and load its weights strictly.

    Args:
        path: The artifact directory.
        weights: ``auto`` (fine-tuned weights when present, else as converted), ``converted`` or ``finetuned``.
    """
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"artifact directory not found: {path} (create one with `pfconvert convert`)")
    if weights not in ("auto", "converted", "finetuned"):
        raise ArtifactError(f"weights must be auto, converted or finetuned, not {weights!r}")
    recipe = Recipe.from_file(path / RECIPE_FILE)
    file = path / (FINETUNED_FILE if weights == "finetuned" else WEIGHTS_FILE)
    if weights == "auto" and (path / FINETUNED_FILE).is_file():
        file = path / FINETUNED_FILE
    model = _rebuild(recipe, path)
    try:
        load_weights(model, read_weights(file), source=str(file))
    except CheckpointError as exc:
        raise ArtifactError(str(exc)) from None
    return Artifact(model=model, recipe=recipe, path=path, weights_file=file)


def read_summary(path: str | Path) -> dict[str, Any]:
    """The artifact's fine-tune summary (``finetune.json``); empty when there is none or it cannot be read."""
    try:
        summary = json.loads((Path(path) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def artifact_data_config(path: str | Path, recipe: Recipe, model: Any, img_size: int | None = None,
                         trained: bool = True, summary: dict[str, Any] | None = None) -> tuple[DataConfig, str]:
    """The data config an artifact's model is fed with, and where it comes from.

    The config a fine-tune trained at (``finetune.json``, or ``summary`` when the caller read it) when ``trained``
    and there is one, else the one recorded at conversion (recipes older than that: timm's config of ``model`` at
    the recorded input size); ``img_size`` replaces the input height and width.
    """
    cfg, origin = None, "as converted (recipe.json)"
    recorded = (summary if summary is not None else read_summary(path)).get("data_config") if trained else None
    if recorded:
        cfg, origin = DataConfig.from_dict(recorded), f"as fine-tuned ({SUMMARY_FILE})"
    if cfg is None:
        cfg = recipe.data(model)
    if img_size is not None:
        cfg, origin = cfg.with_size(img_size), f"{origin}, at --img-size {img_size}"
    return cfg, origin


def load(path: str | Path, weights: str = "auto") -> nn.Module:
    """The converted model of an artifact (fine-tuned weights when present). See :func:`load_artifact`."""
    return load_artifact(path, weights).model


def build_original(recipe: Recipe, path: str | Path) -> nn.Module:
    """The original (unconverted) model with its original weights: the teacher for fine-tuning.

    Untouched layers come from the artifact's ``model.safetensors``, replaced layers from
    ``original-removed.safetensors``; both are the state at conversion time.
    """
    path = Path(path)
    if not recipe.model:
        raise ArtifactError(f"{path}: the recipe names no timm model to rebuild")
    model = create_model(recipe.model, **recipe.model_kwargs)
    converted = read_weights(path / WEIGHTS_FILE)
    own = model.state_dict()
    # a pruned layer's converted tensors have other shapes: its original ones are in the removed state
    state = {k: v for k, v in converted.items() if k in own and v.shape == own[k].shape}
    state.update({k: v for k, v in read_weights(path / REMOVED_FILE).items() if k in own})
    try:
        load_weights(model, state, source=f"{path} (original weights)")
    except PfconvertError as exc:
        raise ArtifactError(str(exc)) from None
    return model
