"""Models: the only place that builds timm models and reads checkpoints."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ModelError, PfconvertError, one_line
from ..graph.modules import non_finite, non_finite_weights

__all__ = ["ModelSource", "FAMILY_DEFAULTS", "resolve_model_name", "build_model", "create_model", "load_checkpoint",
           "load_weights", "input_size", "suggest_models", "file_sha256", "misfit_message"]

_PREFIXES = ("module.", "_orig_mod.")
RESERVED_KWARGS = frozenset({"pretrained", "checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir",
                             "features_only"})
"""timm.create_model kwargs pfconvert sets itself, or that would load files or change what the model returns."""


def suggest_models(name: str, n: int = 5) -> list[str]:
    """Close matches of ``name`` among timm's model names."""
    import timm

    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.6)
    if not close:
        close = [m for m in names if name.lower() in m][:n]
    return close


@dataclass(frozen=True)
class ModelSource:
    """Where a model and its weights came from, as a recipe records it.

    Attributes:
        requested: the name as given (a family, a tagged name, an ``hf-hub:`` id...).
        name: what timm rebuilds without any download: the architecture, with its pretrained tag when there is one.
        kwargs: the ``timm.create_model`` kwargs of the build (those a Hub config added included).
        weights: ``random``, ``pretrained`` (timm's loader: Hugging Face Hub or its cache), ``pretrained-file``,
            ``checkpoint``, or ``module`` (a module the caller built and loaded, converted as given).
        detail: the Hub id or the file the weights came from.
        sha256: the hash of that file, when it is a local one.
        new_head: the classifier was re-initialised (``new_head=True``), not loaded from the weights.
    """

    requested: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str = "random"
    detail: str | None = None
    sha256: str | None = None
    new_head: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ModelSource:
        """The record back from :meth:`to_dict` (keys it does not know are ignored; those recorded before a field
        existed get its default).

        Raises:
            ValueError: a field is missing or of the wrong type (pydantic's ``ValidationError``).
        """
        from pydantic import TypeAdapter

        return TypeAdapter(cls).validate_python(data, strict=False)


_HUB_PREFIXES = ("hf-hub:", "local-dir:")  # names timm resolves through a Hub (or local) config

FAMILY_DEFAULTS = ("_100", "_b0", "_base")
"""A family name (``mobilenetv2``) stands for its one model named family + one of these (``mobilenetv2_100``)."""


def resolve_model_name(name: str) -> tuple[str, str | None]:
    """A timm model name for ``name`` and a note when it was resolved from a family name.

    Raises:
        ModelError: the name is unknown (close matches are suggested) or a family with no single default variant
            (its members are listed).
    """
    import timm

    if name.startswith(_HUB_PREFIXES) or timm.is_model(name):
        return name, None
    members = timm.list_models(f"{name}_*")
    defaults = [m for m in members if any(m == name + suffix for suffix in FAMILY_DEFAULTS)]
    if len(defaults) == 1:
        return defaults[0], f"{name} -> {defaults[0]}"
    if members:
        shown = ", ".join(members[:12]) + (f", ... ({len(members)} in all)" if len(members) > 12 else "")
        raise ModelError(f"'{name}' names a family of timm models, not one; choose one of {shown}")
    close = suggest_models(name)
    hint = (f"; did you mean {', '.join(close)}?" if close else
            "; run `python -c \"import timm; print(timm.list_models())\"`")
    raise ModelError(f"unknown timm model '{name}'{hint}")


def build_model(name: str, checkpoint: str | Path | None = None, *, pretrained: bool = False,
                pretrained_file: str | Path | None = None, new_head: bool = False,
                **kwargs: Any) -> tuple[nn.Module, ModelSource]:
    """Build a timm model and say where it came from (see :func:`create_model` for the arguments).

    Returns:
        The model and its :class:`ModelSource`.
    """
    import timm

    reserved = sorted(set(kwargs) & RESERVED_KWARGS)
    if reserved:
        raise ModelError(f"model kwarg {reserved[0]!r} is pfconvert's to set: pass local weights with --checkpoint "
                         "PATH, timm's pretrained weights with --pretrained or --pretrained-file PATH")
    if sum(bool(x) for x in (checkpoint, pretrained, pretrained_file)) > 1:
        raise ModelError("give one source of weights: --checkpoint, --pretrained or --pretrained-file")
    if new_head and not (checkpoint or pretrained_file):
        raise ModelError("--new-head applies to weights from a file: pass it with --checkpoint or --pretrained-file")
    resolved, _ = resolve_model_name(name)
    file = Path(checkpoint if checkpoint is not None else pretrained_file) if (checkpoint or pretrained_file) else None
    state = load_checkpoint(file) if file is not None else None  # one reader, one set of checks, for both options
    build_kwargs, overlay = dict(kwargs), None
    if pretrained_file is not None:
        assert state is not None
        overlay, build_kwargs = _file_overlay(resolved, state, kwargs, new_head)
    try:
        with _quiet_timm():
            model = timm.create_model(resolved, pretrained=bool(pretrained or overlay), pretrained_cfg_overlay=overlay,
                                      **build_kwargs)
    except (OSError, ImportError) as exc:
        if pretrained or resolved.startswith("hf-hub:"):
            raise _not_downloadable(resolved, exc) from None
        raise ModelError(f"cannot build '{resolved}': {one_line(exc)}") from None
    except (TypeError, ValueError, AssertionError, KeyError, RuntimeError, AttributeError, IndexError) as exc:
        if overlay is not None:
            raise _file_load_error(resolved, kwargs, file, exc, new_head) from None
        raise ModelError(f"cannot build '{resolved}' with {kwargs}: {one_line(exc)} (check --num-classes, --in-chans "
                         "and --kwarg values)") from None
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    if overlay is not None:
        cfg.pop("state_dict", None)  # the file's tensors: not kept alive (nor copied with the model) by its config
        model.pretrained_cfg = model.default_cfg = {**cfg, "file": str(file.resolve())}  # type: ignore[union-attr]
        if state is not None:
            _check_dtypes(model, state, str(file))
    if pretrained and not (cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file")):
        raise ModelError(f"timm has no pretrained weights for '{resolved}'; pick a tag from "
                         f"timm.list_pretrained('{cfg.get('architecture', resolved)}*')")
    built = {k: v for k, v in dict(getattr(model, "_model_args", build_kwargs)).items() if k != "pretrained_model_args"}
    if new_head and pretrained_file is not None:
        classes = kwargs.get("num_classes", _default_classes(resolved))
        model.reset_classifier(classes)  # timm's own re-initialisation of the classifier alone
        model.pretrained_cfg["num_classes"] = classes  # type: ignore[index]
        if "num_classes" in kwargs or "num_classes" in built:
            built["num_classes"] = classes
    hub = resolved.startswith(_HUB_PREFIXES)
    if hub and isinstance(getattr(model, "num_classes", None), int):
        built.setdefault("num_classes", model.num_classes)  # the Hub config's, which a rebuild by name would not get
    rebuild = cfg.get("architecture") or resolved if hub else resolved
    if (pretrained or overlay) and cfg.get("tag") and not hub and "." not in resolved:
        rebuild = f"{resolved}.{cfg['tag']}"  # which pretrained weights: the default tag, named
    source = ModelSource(name, rebuild, built)
    if pretrained:
        source = replace(source, weights="pretrained", detail=cfg.get("hf_hub_id") or cfg.get("url"))
    elif pretrained_file is not None:
        path = Path(pretrained_file).resolve()
        source = replace(source, weights="pretrained-file", detail=str(path), sha256=file_sha256(path),
                         new_head=new_head)
    if checkpoint is not None:
        assert state is not None
        head = _classifier_keys(model) if new_head else set()
        load_weights(model, {k: v for k, v in state.items() if k not in head}, source=str(checkpoint),
                     allow_missing=head)
        path = Path(checkpoint).resolve()
        source = replace(source, weights="checkpoint", detail=str(path), sha256=file_sha256(path), new_head=new_head)
    elif pretrained or overlay:
        bad = non_finite_weights(model)
        if bad:
            raise CheckpointError(f"the pretrained weights of {name} hold NaN or infinite values ({len(bad)} tensors, "
                                  f"e.g. {bad[0]})")
    return model, source


def create_model(name: str, checkpoint: str | Path | None = None, *, pretrained: bool = False,
                 pretrained_file: str | Path | None = None, new_head: bool = False, **kwargs: Any) -> nn.Module:
    """Build a timm model by name: random init, timm's pretrained weights, or a local checkpoint.

    Args:
        name: A timm model name (``mobilenetv2_100``), tagged (``resnet50.a1_in1k``), an ``hf-hub:org/name`` id, or a
            family name with one default variant (``mobilenetv2`` -> ``mobilenetv2_100``).
        checkpoint: Local weights: ``.pth``/``.pt`` (loaded with ``weights_only=True``) or ``.safetensors``; loaded
            strictly (every key of the model, nothing else, the same shapes, floating-point weights).
        pretrained: Load timm's pretrained weights through its own loader: from the Hugging Face Hub, or its local
            cache (``HF_HUB_OFFLINE=1`` never downloads). A classifier of another size is left randomly initialised,
            as timm does.
        pretrained_file: timm's pretrained weights from this local file (read as ``checkpoint`` is, then through
            timm's loader, which adapts the first conv to ``in_chans`` and converts older layouts); loaded strictly:
            a file that lacks layers, has extra ones or a classifier of another size is refused.
        new_head: With ``checkpoint`` or ``pretrained_file``: re-initialise the classifier (at ``num_classes``)
            instead of loading it; everything else is still loaded strictly.
        **kwargs: Passed to ``timm.create_model`` (``num_classes``, ``in_chans``, ...).

    Raises:
        ModelError: the name is unknown (close matches are suggested), a family without one default variant, the
            model cannot be built, or pretrained weights cannot be had offline (the message says what is missing).
        CheckpointError: the checkpoint cannot be read or does not fit.
    """
    return build_model(name, checkpoint, pretrained=pretrained, pretrained_file=pretrained_file, new_head=new_head,
                       **kwargs)[0]


def _default_classes(name: str) -> int:
    """The class count timm builds ``name`` with when ``num_classes`` is not given."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name) if not name.startswith(_HUB_PREFIXES) else None
    return int(getattr(cfg, "num_classes", None) or 1000)


def _file_classifier(name: str, state: dict[str, torch.Tensor]) -> tuple[list[str], int | None]:
    """The classifier module names of timm model ``name`` and the class count of that classifier in ``state``."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name) if not name.startswith(_HUB_PREFIXES) else None
    names = getattr(cfg, "classifier", None) or []
    names = [names] if isinstance(names, str) else list(names)
    for head in names:
        weight = state.get(f"{head}.weight")
        if isinstance(weight, torch.Tensor) and weight.dim() >= 1:
            return names, int(weight.shape[0])
    return names, None


def _file_overlay(name: str, state: dict[str, torch.Tensor], kwargs: dict[str, Any],
                  new_head: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """timm's pretrained-config overlay that loads ``state`` strictly, and the kwargs to build the model with.

    timm drops the file's classifier and loads the rest non-strictly whenever the model's class count differs from
    its pretrained config's: the overlay states the model's count, so timm keeps the classifier and loads strictly.
    With ``new_head`` the model is built at the file's class count (loaded strictly, classifier included) and its
    classifier re-initialised afterwards.
    """
    build = dict(kwargs)
    overlay: dict[str, Any] = {"state_dict": state, "source": ""}  # these tensors, not the Hub's (hf-hub: names)
    if new_head:
        heads, classes = _file_classifier(name, state)
        if classes is None:
            raise CheckpointError(f"--new-head: the weights file holds no classifier ({', '.join(heads) or '?'}) to "
                                  f"replace; drop --new-head (a file without a classifier fits num_classes=0)")
        build["num_classes"] = classes
    if "num_classes" in build:
        overlay["num_classes"] = build["num_classes"]
    return overlay, build


_MISSING = re.compile(r"Missing key\(s\) in state_dict: (.*)")
_UNEXPECTED = re.compile(r"Unexpected key\(s\) in state_dict: (.*)")
_SIZE = re.compile(r"size mismatch for ([^:]+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) from "
                   r"checkpoint, the shape in current model is torch\.Size\(\[([^\]]*)\]\)")


def _file_load_error(name: str, kwargs: dict[str, Any], file: Path | None, exc: BaseException,
                     new_head: bool) -> PfconvertError:
    """The one-line error of a timm build that loads a weights file: the file's misfit (keys named) when torch's
    strict load refused it, else whichever of the model and the file failed."""
    import timm

    text = str(exc)
    if text.startswith("Error(s) in loading state_dict"):
        missing = [k for m in _MISSING.finditer(text) for k in re.findall(r'"([^"]+)"', m.group(1))]
        unexpected = [k for m in _UNEXPECTED.finditer(text) for k in re.findall(r'"([^"]+)"', m.group(1))]
        shapes = {m.group(1).strip(): (_dims(m.group(2)), _dims(m.group(3))) for m in _SIZE.finditer(text)}
        heads, _ = _file_classifier(name, {})
        return CheckpointError(misfit_message(str(file), missing, unexpected, shapes, heads, new_head))
    try:  # which one failed: the model itself, or the file?
        with _quiet_timm():
            timm.create_model(name, **kwargs)
    except Exception as build_exc:  # noqa: BLE001 - the model cannot be built even without the file
        return ModelError(f"cannot build '{name}' with {kwargs}: {one_line(build_exc)} (check --num-classes, "
                          "--in-chans and --kwarg values)")
    return CheckpointError(f"timm cannot load {file} into '{name}': {one_line(exc)} (is it a weights file of "
                           f"{name}?)")


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _classifier_keys(model: nn.Module) -> set[str]:
    """The state-dict keys of the model's classifier (timm's pretrained config names it)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    heads = cfg.get("classifier") if isinstance(cfg, dict) else None
    heads = [heads] if isinstance(heads, str) else list(heads or [])
    if not heads:
        raise ModelError(f"--new-head: timm names no classifier for {type(model).__name__}; load the whole file "
                         "without --new-head")
    return {k for k in model.state_dict() if any(k.startswith(f"{h}.") for h in heads)}


def misfit_message(source: str, missing: list[str], unexpected: list[str],
                   shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]], heads: list[str],
                   new_head: bool = False, fix: str | None = None) -> str:
    """One line: how a weights file does not fit the model (a few keys named) and the fix that matches the cause."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_few(unexpected)})")
    if shapes:
        k = next(iter(shapes))
        parts.append(f"{len(shapes)} shape mismatches (e.g. {k}: {shapes[k][0]} in the file, {shapes[k][1]} in the "
                     "model)")
    in_head = [k for k in [*missing, *unexpected, *shapes] if any(k.startswith(f"{h}.") for h in heads)]
    def body(keys: Any) -> list[str]:
        return [k for k in keys if not any(k.startswith(f"{h}.") for h in heads)]

    head_shapes = [k for k in shapes if k not in body(shapes)]
    missing, unexpected, other_shapes = body(missing), body(unexpected), body(shapes)  # outside the classifier
    hints = []
    if fix is not None:
        hints.append(fix)
    elif head_shapes:
        classes = shapes[head_shapes[0]][0][0]
        hints.append(f"the file's classifier has {classes} classes: pass --num-classes {classes} to load it, or "
                     "--new-head (library: new_head=True) to train a new classifier on the rest")
    elif in_head and not (missing or unexpected or other_shapes):
        hints.append("only the classifier differs: pass --new-head (library: new_head=True) to re-initialise it, or "
                     "--num-classes to match the file")
    if fix is None and other_shapes:
        hints.append("the shapes differ: check the model name and --in-chans / --kwarg values against the file's model")
    elif fix is None and missing and unexpected:
        hints.append("the file holds another model's weights: check the model name")
    elif fix is None and missing:
        hints.append("the file lacks these layers (a partial or truncated save?): give complete weights of this model")
    elif fix is None and unexpected:
        hints.append("the file holds layers this model does not have: check the model name and --kwarg values")
    hint = "; ".join(hints)
    return f"weights file {source} does not fit the model: {'; '.join(parts)}; {hint}"


def _few(keys: list[str], n: int = 3) -> str:
    return "e.g. " + ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


@contextlib.contextmanager
def _quiet_timm() -> Iterator[None]:
    """timm logs "loading pretrained weights" lines on its logger: keep them off the user's terminal."""
    logger = logging.getLogger("timm")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _not_downloadable(name: str, exc: BaseException) -> ModelError:
    """The one-line error for pretrained weights (or a Hub config) that are neither cached nor downloadable."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    cache = os.environ.get("HF_HUB_CACHE") or (os.path.join(os.environ["HF_HOME"], "hub") if "HF_HOME" in os.environ
                                               else "~/.cache/huggingface/hub")
    why = "HF_HUB_OFFLINE is set" if offline else f"the download failed: {type(exc).__name__}"
    repo = name.removeprefix("hf-hub:")
    if not name.startswith(_HUB_PREFIXES):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        repo = getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None) or name
    return ModelError(f"the pretrained weights of '{name}' ({repo}) are not in the local Hugging Face cache ({cache}) "
                      f"and cannot be downloaded ({why}); download them where there is network (e.g. "
                      f"`huggingface-cli download {repo}`), or pass the weights file with --pretrained-file PATH")


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``; no pickled code runs).

    Nested ``{'state_dict': ...}`` / ``{'model': ...}`` / ``{'state_dict_ema': ...}`` containers and ``module.`` /
    ``_orig_mod.`` prefixes (DDP, torch.compile) are unwrapped.

    Raises:
        CheckpointError: the file is missing, empty, truncated, damaged, holds pickled objects other than tensors,
            or holds no state dict of tensors (one line that says which).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's fault
        raise CheckpointError(_read_error(path, exc)) from None
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = "no tensors" if isinstance(state, dict) and not state else f"a {type(state).__name__}"
        if isinstance(state, dict) and state:
            odd = next(k for k, v in state.items() if not isinstance(v, torch.Tensor))
            what = f"'{odd}': {type(state[odd]).__name__}"
        raise CheckpointError(f"checkpoint {path} does not hold a state dict of tensors ({what}); save "
                              "model.state_dict() (torch.save or safetensors)")
    if not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict: its keys are not all layer names")
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _read_error(path: Path, exc: BaseException) -> str:
    """The one-line reason a weights file cannot be read, with the fix for that reason (never: load it unsafely)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    name = type(exc).__name__
    if "Weights only load failed" in text or name == "UnpicklingError":
        found = re.search(r"(?:GLOBAL|global) ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (f"cannot read checkpoint {path}: it holds pickled Python objects{what} besides tensors, which "
                "pfconvert never unpickles; save the weights alone: torch.save(model.state_dict(), PATH) or "
                "safetensors")
    if path.stat().st_size == 0:
        return f"cannot read checkpoint {path}: the file is empty; download or save the weights again"
    if name == "SafetensorError" or path.suffix == ".safetensors":
        return (f"cannot read checkpoint {path}: not a complete .safetensors file ({one_line(exc, 120)}); it is "
                "truncated or damaged: download or save it again")
    first = one_line(exc, 160).split(". ")[0].rstrip(".")  # torch's zip errors go on about miniz internals
    if "zip archive" in first or name in ("EOFError", "BadZipFile"):
        return (f"cannot read checkpoint {path}: not a complete torch file ({first}); it is truncated or damaged: "
                "download or save it again")
    return (f"cannot read checkpoint {path}: {first}; expected a .safetensors file or a torch state dict saved with "
            "torch.save (a truncated or damaged file reads like this: download or save it again)")


def _check_dtypes(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse integer (quantized, boolean, complex...) tensors where the model holds floating-point ones: loading
    would cast them silently (an int8 weight of 0.3 becomes 0). Integer buffers (``num_batches_tracked``) stay."""
    own = model.state_dict()
    bad = [k for k, v in state.items() if k in own and own[k].is_floating_point() and not v.is_floating_point()]
    if bad:
        raise CheckpointError(f"checkpoint {source} holds {state[bad[0]].dtype} tensors where the model has "
                              f"floating-point weights ({len(bad)} tensors, e.g. {bad[0]}); pfconvert does not "
                              "dequantize: give the float weights (dequantize them first)")


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str,
                 allow_missing: set[str] | frozenset[str] = frozenset(), fix: str | None = None) -> None:
    """Load ``state`` strictly into ``model``, naming missing/unexpected keys or shape mismatches on failure (with
    ``fix`` as the hint when given, else one that matches the cause); keys in ``allow_missing`` (a re-initialised
    classifier) may be absent and keep the model's values."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and k not in allow_missing]
    unexpected = [k for k in state if k not in own]
    shapes = {k: (tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state
              and own[k].shape != state[k].shape}
    if missing or unexpected or shapes:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        heads = cfg.get("classifier") if isinstance(cfg, dict) else None
        heads = [heads] if isinstance(heads, str) else list(heads or [])
        raise CheckpointError(misfit_message(source, missing, unexpected, shapes, heads, fix=fix))
    _check_dtypes(model, state, source)
    checked = {k: v for k, v in state.items() if k in dict(model.named_parameters()) or
               k.rsplit(".", 1)[-1] in ("running_mean", "running_var")}
    bad = non_finite(checked)
    if bad:
        raise CheckpointError(f"checkpoint {source} holds NaN or infinite values in {len(bad)} of {len(checked)} "
                              f"weight tensors (e.g. {bad[0]}): the run that wrote it diverged; use an earlier "
                              "checkpoint")
    model.load_state_dict(state, strict=not allow_missing)


def input_size(model: nn.Module, default: tuple[int, int, int] = (3, 224, 224)) -> tuple[int, int, int]:
    """The model's input size (C, H, W) from its timm pretrained config, else ``default``."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    in_chans = getattr(model, "in_chans", None)
    fixed = getattr(getattr(model, "patch_embed", None), "img_size", None)  # ViTs built with img_size=...
    if isinstance(fixed, (tuple, list)) and len(fixed) == 2 and all(isinstance(v, int) for v in fixed):
        c = in_chans if isinstance(in_chans, int) else (size[0] if size is not None else default[0])
        return int(c), int(fixed[0]), int(fixed[1])
    if size is not None and len(size) == 3:
        c = in_chans if isinstance(in_chans, int) else size[0]
        return int(c), int(size[1]), int(size[2])
    if isinstance(in_chans, int):
        return in_chans, default[1], default[2]
    return default
