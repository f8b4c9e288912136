"""Artifacts: a directory with a replayable recipe and safetensors weights; no whole-model pickles.

Layout of ``OUT/``:

- ``recipe.json``: timm model name and kwargs, where the weights came from, the data config (input size, resize,
  crop, mean and std: what every later command feeds the model), the rule text and its hash, package versions, the
  replaced layers (each with the ops it was built from and their versions).
- ``model.safetensors``: the converted model's state dict.
- ``original-removed.safetensors``: the original state of the replaced/absorbed layers, so that the original model
  (the fine-tuning teacher) is rebuilt exactly: untouched layers come from ``model.safetensors``.
- ``finetuned.safetensors``: written by ``pfconvert finetune``; :func:`load` prefers it. Its safetensors metadata
  names the conversion it was trained from (the recipe's fingerprint), so a file copied in from another artifact is
  refused.

:func:`save` builds the files in a temporary folder inside ``OUT`` and moves them into place last (the recipe after
the weights): a full disk or an interrupt leaves what was there before, never weights without a recipe. It replaces
only what pfconvert wrote, and only in an artifact (a folder with ``recipe.json``).

:func:`load` rebuilds the model with ``timm.create_model``, replays the rules, and loads the weights strictly. An op
whose version changed since the artifact was made is migrated or refused (:mod:`pfconvert.conversion.versions`).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .._files import LOCK_FILE, TRANSIENT_PREFIX, atomic_write, ensure_writable, exclusive, os_reason, short, write_text
from ..data.config import DataConfig, resolve_data_config
from ..errors import ArtifactError, CheckpointError, DataError, PfconvertError, UsageError, one_line
from ..rules.loading import rule_sha256
from .models import ModelSource, create_model, file_sha256, load_weights
from .pruning import Pruning
from .rewrite import Replacement, convert
from .versions import replay_rules

__all__ = [
    "RECIPE_FILE", "WEIGHTS_FILE", "REMOVED_FILE", "FINETUNED_FILE", "RUN_FILES", "Recipe", "Artifact",
    "save", "load", "load_artifact", "build_original", "save_weights", "read_weights", "artifact_data_config",
    "read_summary", "CONVERSION_KEY", "finetuned_metadata",
]

RECIPE_FILE = "recipe.json"
WEIGHTS_FILE = "model.safetensors"
REMOVED_FILE = "original-removed.safetensors"
FINETUNED_FILE = "finetuned.safetensors"
SUMMARY_FILE = "finetune.json"
CHECKPOINT_FILES = ("last.pt", "best.pt", "start.pt")
"""The fine-tuning checkpoints in ``checkpoints/`` (``pfconvert.recover.finetune.checkpoint``'s LAST_FILE, BEST_FILE
and START_FILE, named here because conversion sits below recovery)."""
RUN_FILES = (FINETUNED_FILE, "checkpoints", "metrics.jsonl", SUMMARY_FILE, "model.onnx")
"""What fine-tuning and export add to an artifact: results of its model, stale once the artifact is re-created."""
FORMAT = "pfconvert-artifact/1"
MAX_RECIPE_BYTES = 16 << 20


_TYPED = {"replaced": Replacement, "source": ModelSource, "data_config": DataConfig, "pruning": Pruning}
"""The recipe's members that are typed records (stored by their ``to_dict``), by field name."""


@dataclass
class Recipe:
    """Everything needed to rebuild a converted model (stored as ``recipe.json``).

    The replaced layers, the weights' source, the data config and the pruning are typed records
    (:class:`~pfconvert.conversion.rewrite.Replacement`, :class:`~pfconvert.conversion.models.ModelSource`,
    :class:`~pfconvert.data.config.DataConfig`, :class:`~pfconvert.conversion.pruning.Pruning`), read with their
    types checked. A recipe read from a file writes back byte for byte as it was read (:meth:`to_json`): a record
    that is unchanged keeps the exact JSON it was read from, including keys from before or after this version, so
    the :meth:`fingerprint` fine-tuned weights record stays the same.
    """

    model: str | None
    model_kwargs: dict[str, Any]
    checkpoint: str | None
    rule_name: str
    rule_text: str
    rule_sha256: str
    input_size: tuple[int, int, int]
    replaced: list[Replacement]
    versions: dict[str, str]
    params_before: int = 0
    params_after: int = 0
    checkpoint_sha256: str | None = None
    created: str = ""
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes (JSON values) a caller adds; pfconvert writes none."""
    source: ModelSource | None = None
    data_config: DataConfig | None = None
    pruning: Pruning | None = None
    """Channel pruning after the rules: ratio, rounding and every reshaped module's channel counts and tensor shapes;
    :func:`load` gives the rebuilt model these shapes."""
    weights: dict[str, str] = field(default_factory=dict)
    """The SHA-256 of each weights file written with the recipe (``model.safetensors``...): :func:`load` checks it,
    so weights swapped in from another artifact or damaged are refused (recipes older than it have none)."""
    _as_read: ClassVar[dict[str, Any]] = {}
    """The typed records' JSON as read from the file (none for a recipe built in memory): :meth:`to_dict` writes an
    unchanged record back as it was read."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: every field, the typed records by their ``to_dict`` (or, read from a file and unchanged,
        as they were read); ``weights`` and ``pruning`` only when there are any (a recipe from before they were
        recorded reads back as it was written)."""
        read = self._as_read
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "replaced":
                before = read.get("replaced")
                before = before if isinstance(before, list) and len(before) == len(value) else [None] * len(value)
                data["replaced"] = [_record_json(Replacement, entry, raw) for entry, raw in zip(value, before)]
            elif f.name in _TYPED:
                data[f.name] = _record_json(_TYPED[f.name], value, read.get(f.name))
            else:
                data[f.name] = _plain(value)
        if not data["weights"]:
            del data["weights"]
        if data["pruning"] is None:
            del data["pruning"]
        return data

    def to_json(self) -> str:
        """The recipe as indented JSON (:meth:`to_dict`): byte for byte what it was read from, when read from a file
        and unchanged, so its :meth:`fingerprint`, which fine-tuned weights record, stays the same."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

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
        from pydantic import ValidationError

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ArtifactError(f"{where}: not a {FORMAT} recipe (format: {found!r})")
        replaced = data.get("replaced")
        if isinstance(replaced, list) and any(not isinstance(e, dict) or not isinstance(e.get("path"), str)
                                              for e in replaced):
            raise ArtifactError(f"{where}: malformed recipe, field 'replaced': every entry needs a 'path'")
        try:
            recipe = _adapter(cls).validate_python(data, strict=False)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "recipe"
            raise ArtifactError(f"{where}: malformed recipe, field '{field}': {err['msg']}") from None
        except DataError as exc:  # DataConfig checks its values itself
            raise ArtifactError(f"{where}: malformed recipe, field 'data_config': {exc}") from None
        recipe._as_read = {name: copy.deepcopy(data.get(name)) for name in _TYPED}  # type: ignore[misc]
        if rule_sha256(recipe.rule_text) != recipe.rule_sha256:
            raise ArtifactError(f"{where}: the rule text does not match its rule_sha256 (the recipe was edited); "
                                "convert the model again with `pfconvert convert` instead of editing recipe.json")
        if min(recipe.input_size) < 1:
            raise ArtifactError(f"{where}: malformed recipe, field 'input_size': {recipe.input_size}")
        return recipe

    def data(self, model: nn.Module | None = None) -> DataConfig:
        """The data config recorded at conversion; recipes older than it get timm's config of ``model`` (the
        original model) at the recorded input size."""
        if self.data_config is not None:
            return self.data_config
        if model is None:
            raise ArtifactError("this recipe records no data config; pass the original model to derive it")
        return resolve_data_config(model, input_size=tuple(self.input_size))  # type: ignore[arg-type]

    def fingerprint(self) -> str:
        """A hash of the whole recipe: the identity of one conversion (a checkpoint records it)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def _adapter(kind: type) -> Any:
    """pydantic's validator of a record type (built once: building one costs milliseconds)."""
    from pydantic import TypeAdapter

    return TypeAdapter(kind)


def _record_json(kind: type, value: Any, raw: Any) -> Any:
    """The JSON of a typed record: ``raw`` (what it was read from) when that reads as the same record, else its
    ``to_dict()``; None stays None."""
    if value is None:
        return None
    fresh = value.to_dict()
    if raw is not None:
        try:
            if _adapter(kind).validate_python(raw, strict=False).to_dict() == fresh:
                return raw
        except (ValueError, PfconvertError):  # pydantic's ValidationError is a ValueError
            pass
    return fresh


def _plain(value: Any) -> Any:
    """A field's JSON value (tuples as lists, containers copied)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


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


CONVERSION_KEY = "pfconvert.conversion"
"""safetensors metadata key of fine-tuned weights: the fingerprint of the recipe they were trained from."""


def save_weights(state_or_model: nn.Module | dict[str, torch.Tensor], path: str | Path,
                 metadata: dict[str, str] | None = None) -> None:
    """Write a state dict (or a model's) as safetensors atomically (:func:`pfconvert._files.atomic_write`), with
    ``metadata`` in its header.

    Raises:
        OSError: the file cannot be written (disk full, read-only...): the caller says where, in one line.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    state = state_or_model.state_dict() if isinstance(state_or_model, nn.Module) else state_or_model
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[tuple[int, int], str] = {}
    for key, value in state.items():
        ident = (value.untyped_storage().data_ptr(), value.storage_offset()) if value.numel() else (id(value), 0)
        tensors[key] = value.detach().cpu().clone() if ident in seen else value.detach().cpu().contiguous()
        seen.setdefault(ident, key)

    def write(temp: Path) -> None:
        try:
            save_file(tensors, str(temp), metadata={"format": "pt", **(metadata or {})})
        except SafetensorError as exc:  # its I/O errors (a full disk) come as SafetensorError: an OSError for callers
            full = "StorageFull" in str(exc) or "No space" in str(exc)
            raise OSError(errno.ENOSPC if full else errno.EIO, os.strerror(errno.ENOSPC) if full else one_line(exc),
                          str(path)) from None

    atomic_write(path, write)


def read_weights(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, with a one-line error when it is missing or corrupt, or (``sha256`` given, as the
    recipe records it) when it is not the file the artifact was written with."""
    from safetensors.torch import load_file

    if sha256 is not None and path.is_file():
        try:
            actual = file_sha256(path)
        except OSError as exc:
            raise ArtifactError(f"cannot read weights {path}: {os_reason(exc, 'artifact')}") from None
        if actual != sha256:
            raise ArtifactError(f"{path} is not the file this artifact was written with (its SHA-256 differs from "
                                f"{RECIPE_FILE}'s): it was replaced, e.g. by another artifact's, or damaged; convert "
                                "again with `pfconvert convert --overwrite`")
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise ArtifactError(f"artifact weights missing: {path}") from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise ArtifactError(f"cannot read weights {path}: {one_line(exc)}") from None


def save(model: nn.Module, record: Any, out: str | Path, overwrite: bool = False) -> Path:
    """Write a converted model and its :class:`~pfconvert.conversion.rewrite.ConversionRecord` as an artifact directory.

    The files are built in a temporary folder inside ``out`` and moved into place at the end, the recipe last, so a
    failure (a full disk, an interrupt) leaves ``out`` as it was. With ``overwrite``, an existing artifact's own
    files are replaced (and the results of fine-tuning its earlier model removed); anything else in it is kept.

    Raises:
        ArtifactError: ``out`` exists and is not empty (pass ``overwrite=True``), is a file, or is a folder that is
            not an artifact (``overwrite`` never replaces one); the model has no timm name to rebuild from, or its
            kwargs cannot be recorded; the files cannot be written (one line: which, and why).
    """
    from .rewrite import ConversionRecord

    if not isinstance(model, nn.Module) or not isinstance(record, ConversionRecord):
        wrong = model if not isinstance(model, nn.Module) else record
        got = "None" if wrong is None else f"a {type(wrong).__name__}"
        raise UsageError(f"pfconvert.save(model, record, out) takes the model and ConversionRecord that "
                         f"pfconvert.convert returned, not {got}")
    out = Path(out)
    if record.model_name is None:
        raise ArtifactError("only timm models can be saved as artifacts (the recipe rebuilds them by name); "
                            "for other models save model.state_dict() and replay pfconvert.convert on load")
    ensure_writable(out, overwrite, marker=RECIPE_FILE)
    _check_rebuildable(model, record)
    created = [parent for parent in (out, *out.parents) if not os.path.lexists(parent)]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with exclusive(out, "pfconvert convert"):
            ensure_writable(out, overwrite, marker=RECIPE_FILE)  # again, now that no other pfconvert can write it
            _write(model, record, out)
    except BaseException as exc:
        for folder in created:  # folders this call made: removed again (they hold only its lock by now)
            with contextlib.suppress(OSError):
                (folder / LOCK_FILE).unlink(missing_ok=True)
                folder.rmdir()
        if isinstance(exc, OSError):
            where = f" ({short(exc.filename)})" if exc.filename and TRANSIENT_PREFIX not in str(exc.filename) else ""
            raise ArtifactError(f"cannot write the artifact {short(out)}{where}: {os_reason(exc)} (nothing was "
                                "changed)") from None
        raise
    return out


def _check_rebuildable(model: nn.Module, record: Any) -> None:
    """The recipe must rebuild this model: its kwargs JSON-recordable and, for a module the caller built, the model
    timm rebuilds from them of the same shapes (checked on the meta device: no memory, no compute)."""
    try:
        json.dumps(record.model_kwargs)
    except (TypeError, ValueError):
        bad = next(k for k, v in record.model_kwargs.items() if not _jsonable(v))
        raise ArtifactError(f"model kwarg {bad}={record.model_kwargs[bad]!r} cannot be recorded in {RECIPE_FILE} "
                            "(not a JSON value), so load could not rebuild the model; build it with JSON values "
                            "(e.g. act_layer='relu')") from None
    if record.source is None or record.source.weights != "module":
        return
    try:
        with torch.device("meta"):
            rebuilt = create_model(record.model_name, **record.model_kwargs).state_dict()
    except PfconvertError as exc:
        raise ArtifactError(f"cannot save: timm cannot rebuild {record.model_name} from the kwargs the model records "
                            f"({exc})") from None
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have.update({k: tuple(v.shape) for k, v in record.removed_state.items()})
    for key, value in rebuilt.items():
        if have.get(key, tuple(value.shape)) != tuple(value.shape) or key not in have:
            kwargs = ", ".join(f"{k}={v!r}" for k, v in record.model_kwargs.items()) or "no kwargs"
            raise ArtifactError(f"cannot save: timm.create_model('{record.model_name}', {kwargs}) does not rebuild "
                                f"this model ({key}: {have.get(key, 'absent')} here, {tuple(value.shape)} rebuilt), so "
                                "load could not read the artifact; build the model with timm.create_model(name, "
                                "**kwargs), or convert by name: pfconvert.convert(name, rule, num_classes=...)")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _write(model: nn.Module, record: Any, out: Path) -> None:
    """Replace the artifact in ``out`` (its lock held): the new files are written in a temporary folder in ``out``,
    then the results of an earlier model (fine-tuning checkpoints, logs, fine-tuned weights, exports) are removed,
    so as not to be mistaken for this one's, and the new files moved into place, the recipe last."""
    staging = Path(tempfile.mkdtemp(prefix=TRANSIENT_PREFIX, suffix=".tmp", dir=out))
    try:
        save_weights(model, staging / WEIGHTS_FILE)
        save_weights(record.removed_state, staging / REMOVED_FILE)
        ck = Path(record.checkpoint) if record.checkpoint else None
        recipe = Recipe(
            model=record.model_name, model_kwargs=record.model_kwargs, checkpoint=record.checkpoint,
            rule_name=record.rules.name, rule_text=record.rules.text, rule_sha256=record.rules.sha256,
            input_size=tuple(record.input_size), replaced=[copy.deepcopy(r) for r in record.replacements],
            versions=_versions(), params_before=record.params_before, params_after=record.params_after,
            checkpoint_sha256=file_sha256(ck) if ck is not None and ck.is_file() else None,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            source=record.source, data_config=record.data_config,
            weights={name: file_sha256(staging / name) for name in (WEIGHTS_FILE, REMOVED_FILE)},
            pruning=Pruning.from_dict(record.pruning) if record.pruning is not None else None,
        )
        write_text(staging / RECIPE_FILE, recipe.to_json())
        _remove_run_files(out)
        for name in (WEIGHTS_FILE, REMOVED_FILE, RECIPE_FILE):
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_run_files(out: Path) -> None:
    """Remove what fine-tuning and export wrote into an artifact (:data:`RUN_FILES`): only pfconvert's files,
    never a folder's other contents nor what a link points to."""
    for name in RUN_FILES:
        stale = out / name
        if name == "checkpoints" and stale.is_dir() and not stale.is_symlink():
            for entry in stale.iterdir():
                temporary = entry.name.startswith(tuple(f".{n}." for n in CHECKPOINT_FILES))
                ours = entry.name in CHECKPOINT_FILES or (temporary and entry.name.endswith(".tmp"))
                if ours and not entry.is_dir():
                    entry.unlink()
            with contextlib.suppress(OSError):
                stale.rmdir()  # only when nothing else is left in it
        elif stale.is_symlink() or stale.is_file():
            stale.unlink()


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
    want = [r.path for r in recipe.replaced]
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
    if file.name == FINETUNED_FILE:
        _check_finetuned(file, recipe)
    model = _rebuild(recipe, path)
    try:
        load_weights(model, read_weights(file, recipe.weights.get(file.name)), source=str(file), fix=_MISFIT_FIX)
    except CheckpointError as exc:
        raise ArtifactError(str(exc)) from None
    return Artifact(model=model, recipe=recipe, path=path, weights_file=file)


_MISFIT_FIX = ("the weights are not this recipe's (copied from another artifact?) or the installed timm builds the "
               "model differently: convert again with `pfconvert convert --overwrite`")


def _check_finetuned(file: Path, recipe: Recipe) -> None:
    """Fine-tuned weights must come from this artifact's conversion: their metadata names it (the recipe's
    fingerprint); files from before that record carry no name and are accepted with their ``finetune.json``."""
    from safetensors import safe_open

    if not file.is_file():
        return  # read_weights says it is missing
    try:
        with safe_open(str(file), framework="pt") as handle:
            tag = (handle.metadata() or {}).get(CONVERSION_KEY)
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise ArtifactError(f"cannot read weights {file}: {one_line(exc)}") from None
    if tag is None and (file.parent / SUMMARY_FILE).is_file():
        return
    if tag != recipe.fingerprint():
        why = ("it was fine-tuned from another conversion (copied from another artifact, or the artifact was "
               "converted again since)" if tag else
               f"nothing says it was fine-tuned from this artifact (no {SUMMARY_FILE}, no record in the file)")
        raise ArtifactError(f"{file} does not belong to this artifact: {why}; remove it, or load the converted "
                            "weights (weights='converted', --weights converted)")


def finetuned_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors metadata fine-tuned weights of the artifact at ``path`` are written with: the conversion
    they come from (:func:`load` checks it)."""
    return {CONVERSION_KEY: Recipe.from_file(Path(path) / RECIPE_FILE).fingerprint()}


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
        cfg, origin = cfg.with_size(img_size), f"{origin}, at --input-size {img_size}"
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
    converted = read_weights(path / WEIGHTS_FILE, recipe.weights.get(WEIGHTS_FILE))
    own = model.state_dict()
    # a pruned layer's converted tensors have other shapes: its original ones are in the removed state
    state = {k: v for k, v in converted.items() if k in own and v.shape == own[k].shape}
    state.update({k: v for k, v in read_weights(path / REMOVED_FILE, recipe.weights.get(REMOVED_FILE)).items()
                  if k in own})
    try:
        load_weights(model, state, source=f"{path} (original weights)", fix=_MISFIT_FIX)
    except PfconvertError as exc:
        raise ArtifactError(str(exc)) from None
    return model
