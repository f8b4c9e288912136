"""Models: the only place that builds timm models and reads checkpoints."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ModelError, one_line
from ..graph.modules import non_finite, non_finite_weights

__all__ = ["ModelSource", "FAMILY_DEFAULTS", "resolve_model_name", "build_model", "create_model", "load_checkpoint",
           "load_weights", "input_size", "suggest_models", "file_sha256"]

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
    """

    requested: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str = "random"
    detail: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


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
                pretrained_file: str | Path | None = None, **kwargs: Any) -> tuple[nn.Module, ModelSource]:
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
    resolved, _ = resolve_model_name(name)
    overlay = None
    if pretrained_file is not None:
        path = Path(pretrained_file)
        if not path.is_file():
            raise CheckpointError(f"pretrained file not found: {path}")
        overlay = {"file": str(path.resolve())}
    try:
        with _quiet_timm():
            model = timm.create_model(resolved, pretrained=bool(pretrained or overlay), pretrained_cfg_overlay=overlay,
                                      **kwargs)
    except (OSError, ImportError) as exc:
        if pretrained or resolved.startswith("hf-hub:"):
            raise _not_downloadable(resolved, exc) from None
        raise ModelError(f"cannot build '{resolved}': {one_line(exc)}") from None
    except (TypeError, ValueError, AssertionError, KeyError, RuntimeError, AttributeError) as exc:
        raise ModelError(f"cannot build '{resolved}' with {kwargs}: {one_line(exc)} (check --num-classes, --in-chans "
                         "and --kwarg values)") from None
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    if pretrained and not (cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file")):
        raise ModelError(f"timm has no pretrained weights for '{resolved}'; pick a tag from "
                         f"timm.list_pretrained('{cfg.get('architecture', resolved)}*')")
    built = {k: v for k, v in dict(getattr(model, "_model_args", kwargs)).items() if k != "pretrained_model_args"}
    hub = resolved.startswith(_HUB_PREFIXES)
    if hub and isinstance(getattr(model, "num_classes", None), int):
        built.setdefault("num_classes", model.num_classes)  # the Hub config's, which a rebuild by name would not get
    rebuild = cfg.get("architecture") or resolved if hub else resolved
    if (pretrained or overlay) and cfg.get("tag") and not hub and "." not in resolved:
        rebuild = f"{resolved}.{cfg['tag']}"  # which pretrained weights: the default tag, named
    source = ModelSource(name, rebuild, built)
    if pretrained:
        source = replace(source, weights="pretrained", detail=cfg.get("hf_hub_id") or cfg.get("url"))
    elif overlay is not None:
        file = Path(overlay["file"])
        source = replace(source, weights="pretrained-file", detail=str(file), sha256=file_sha256(file))
    if checkpoint is not None:
        load_weights(model, load_checkpoint(checkpoint), source=str(checkpoint))
        path = Path(checkpoint).resolve()
        source = replace(source, weights="checkpoint", detail=str(path), sha256=file_sha256(path))
    elif pretrained or overlay:
        bad = non_finite_weights(model)
        if bad:
            raise CheckpointError(f"the pretrained weights of {name} hold NaN or infinite values ({len(bad)} tensors, "
                                  f"e.g. {bad[0]})")
    return model, source


def create_model(name: str, checkpoint: str | Path | None = None, *, pretrained: bool = False,
                 pretrained_file: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """Build a timm model by name: random init, timm's pretrained weights, or a local checkpoint.

    Args:
        name: A timm model name (``mobilenetv2_100``), tagged (``resnet50.a1_in1k``), an ``hf-hub:org/name`` id, or a
            family name with one default variant (``mobilenetv2`` -> ``mobilenetv2_100``).
        checkpoint: Local weights: ``.pth``/``.pt`` (loaded with ``weights_only=True``) or ``.safetensors``.
        pretrained: Load timm's pretrained weights through its own loader: from the Hugging Face Hub, or its local
            cache (``HF_HUB_OFFLINE=1`` never downloads). A classifier of another size is left randomly initialised,
            as timm does.
        pretrained_file: Load timm's pretrained weights from this local file (timm's pretrained-config ``file``
            overlay: the same adaptation as ``pretrained``, no download).
        **kwargs: Passed to ``timm.create_model`` (``num_classes``, ``in_chans``, ...).

    Raises:
        ModelError: the name is unknown (close matches are suggested), a family without one default variant, the
            model cannot be built, or pretrained weights cannot be had offline (the message says what is missing).
        CheckpointError: the checkpoint cannot be read or does not fit.
    """
    return build_model(name, checkpoint, pretrained=pretrained, pretrained_file=pretrained_file, **kwargs)[0]


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
        raise CheckpointError(f"cannot read checkpoint {path}: {one_line(exc)} "
                              "(expected a .safetensors file or a torch state dict saved with torch.save)") from None
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict of tensors")
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly into ``model``, naming missing/unexpected keys or shape mismatches on failure."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} shape mismatches (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise CheckpointError(f"checkpoint {source} does not fit the model: {'; '.join(parts)} "
                              "(check the model name and kwargs such as --num-classes)")
    checked = {k: v for k, v in state.items() if k in dict(model.named_parameters()) or
               k.rsplit(".", 1)[-1] in ("running_mean", "running_var")}
    bad = non_finite(checked)
    if bad:
        raise CheckpointError(f"checkpoint {source} holds NaN or infinite values in {len(bad)} of {len(checked)} "
                              f"weight tensors (e.g. {bad[0]}): the run that wrote it diverged; use an earlier "
                              "checkpoint")
    model.load_state_dict(state, strict=True)


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
