"""Models: the only place that builds timm models and reads checkpoints."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ModelError, one_line
from ..graph.modules import non_finite

__all__ = ["create_model", "load_checkpoint", "load_weights", "input_size", "suggest_models"]

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


def create_model(name: str, checkpoint: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """Build a timm model by name with random init (never downloads), then load ``checkpoint`` if given.

    Args:
        name: A timm model name (``mobilenetv2_100``).
        checkpoint: Local weights: ``.pth``/``.pt`` (loaded with ``weights_only=True``) or ``.safetensors``.
        **kwargs: Passed to ``timm.create_model`` (``num_classes``, ``in_chans``, ...).

    Raises:
        ModelError: the name is unknown (close matches are suggested) or the model cannot be built.
        CheckpointError: the checkpoint cannot be read or does not fit.
    """
    import timm

    reserved = sorted(set(kwargs) & RESERVED_KWARGS)
    if reserved:
        raise ModelError(f"model kwarg {reserved[0]!r} is pfconvert's to set: pass local weights with --checkpoint "
                         "PATH (checkpoint=... in the library)")
    if not timm.is_model(name):
        close = suggest_models(name)
        hint = (f"; did you mean {', '.join(close)}?" if close else
                "; run `python -c \"import timm; print(timm.list_models())\"`")
        raise ModelError(f"unknown timm model '{name}'{hint}")
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, RuntimeError, AttributeError) as exc:
        raise ModelError(f"cannot build '{name}' with {kwargs}: {one_line(exc)} (check --num-classes, --in-chans "
                         "and --kwarg values)") from None
    if checkpoint is not None:
        load_weights(model, load_checkpoint(checkpoint), source=str(checkpoint))
    return model


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
