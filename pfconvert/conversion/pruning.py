"""Channel pruning as a lever of a conversion: Torch-Pruning's magnitude pruner (the optional extra
``pfconvert[prune]``), after the rules, recorded as data.

:func:`prune_channels` prunes one uniform ratio of the output channels of every layer but the classifier (L1 norm of
each channel's weights; channels that must stay aligned, such as a residual stage's, pruned together; counts rounded to
multiples of ``round_to``), in place. It returns a :class:`Pruning`: for every module whose tensors changed shape, its
shape attributes (``in_channels``, ``num_features``...) and the shape of each of its own parameters and buffers.
That record is plain JSON: :func:`apply_shapes` gives a freshly built (and converted) model the same shapes, so an
artifact's weights load into it strictly, with no pickled module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import chain
from typing import Any

import torch
from torch import nn

from ..errors import ArtifactError, PfconvertError

__all__ = ["PRUNE_ROUND_TO", "Pruning", "prune_channels", "apply_shapes", "torch_pruning", "with_prune"]

PRUNE_ROUND_TO = 8
"""Default channel rounding: counts stay multiples of 8 (what oneDNN's and ONNX Runtime's CPU kernels block by)."""
_ATTRS = ("in_channels", "out_channels", "groups", "num_features", "num_channels", "in_features", "out_features")
"""Module attributes that state a channel count, recorded (when present) for each pruned module."""


@dataclass
class Pruning:
    """What :func:`prune_channels` did: the ratio, the rounding, and ``shapes``: module path -> ``{"attrs": {name:
    value}, "tensors": {name: shape}}`` for every module whose own parameters or buffers changed shape."""

    ratio: float
    round_to: int = PRUNE_ROUND_TO
    method: str = "torch-pruning magnitude (L1), uniform ratio, classifier kept"
    shapes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Pruning":
        """The record back from :meth:`to_dict`."""
        return cls(float(data["ratio"]), int(data.get("round_to", PRUNE_ROUND_TO)), str(data.get("method", "")),
                   dict(data.get("shapes", {})))


def torch_pruning() -> Any:
    """The ``torch_pruning`` module, or a one-line error saying how to install it."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise PfconvertError("channel pruning needs Torch-Pruning: pip install 'pfconvert[prune]' (or "
                             "torch-pruning)") from None
    return tp


def _own(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t for name, t in chain(module.named_parameters(recurse=False), module.named_buffers(recurse=False))
            if t is not None}


def _classifier(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    return head if isinstance(head, nn.Module) and any(True for _ in head.parameters()) else None


def prune_channels(model: nn.Module, ratio: float, input_size: tuple[int, int, int],
                   round_to: int = PRUNE_ROUND_TO) -> tuple[Pruning, dict[str, torch.Tensor]]:
    """Prune ``model`` in place (see the module docstring).

    Returns:
        The record, and the state before pruning of every module it reshaped (``path.tensor`` -> tensor): what an
        artifact keeps to rebuild the original (the teacher).

    Raises:
        PfconvertError: Torch-Pruning is not installed, or the ratio is not in (0, 1).
    """
    if not 0.0 < ratio < 1.0:
        raise PfconvertError(f"pruning ratio must be between 0 and 1 (exclusive), got {ratio}")
    tp = torch_pruning()
    before = {path: _own(module) for path, module in model.named_modules()}
    ref = next(iter(model.parameters()))
    example = torch.randn(1, *input_size, device=ref.device, dtype=ref.dtype)
    head = _classifier(model)
    training = model.training
    model.eval()
    try:
        pruner = tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                           pruning_ratio=ratio, round_to=round_to,
                                           ignored_layers=[head] if head is not None else [])
        pruner.step()
    finally:
        model.train(training)
    record, removed = Pruning(ratio, round_to), {}
    for path, module in model.named_modules():
        old, new = before.get(path, {}), _own(module)
        if not path or all(name in old and old[name].shape == t.shape for name, t in new.items()):
            continue
        attrs = {a: (list(v) if isinstance(v, tuple) else v) for a in _ATTRS
                 if isinstance(v := getattr(module, a, None), (int, tuple))}
        record.shapes[path] = {"attrs": attrs, "tensors": {name: list(t.shape) for name, t in new.items()}}
        removed.update({f"{path}.{name}": t.detach().clone() for name, t in old.items()})
    return record, removed


def apply_shapes(model: nn.Module, pruning: Pruning | dict[str, Any], where: str = "the recipe") -> None:
    """Give ``model``'s modules the recorded shapes (uninitialised tensors; load weights after), in place.

    Raises:
        ArtifactError: a recorded module or tensor is not in the model (another timm version, another rule).
    """
    record = pruning if isinstance(pruning, Pruning) else Pruning.from_dict(pruning)
    for path, spec in record.shapes.items():
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise ArtifactError(f"{where}: the pruning names layer '{path}', which the rebuilt model does not "
                                "have") from None
        for attr, value in spec.get("attrs", {}).items():
            setattr(module, attr, tuple(value) if isinstance(value, list) else value)
        own = _own(module)
        for name, shape in spec.get("tensors", {}).items():
            if name not in own:
                raise ArtifactError(f"{where}: the pruning names tensor '{path}.{name}', which the rebuilt model "
                                    "does not have")
            old = own[name]
            new = torch.empty(shape, dtype=old.dtype, device=old.device)
            if name in module._parameters:
                module._parameters[name] = nn.Parameter(new, requires_grad=old.requires_grad)
            else:
                module._buffers[name] = new


def with_prune(rules: Any, ratio: float, round_to: int = PRUNE_ROUND_TO) -> Any:
    """``rules`` (a :class:`~pfconvert.rules.loading.LoadedRules`, or None: no rule) with a ``prune:`` section:
    channel pruning of ``ratio`` after them; the rule file ``pfconvert plan --prune`` writes and ``convert`` replays."""
    import yaml

    from ..rules.loading import parse_rules

    base = rules.ruleset.model_dump(mode="json", exclude_none=True) if rules is not None else {
        "name": "prune", "description": "Channel pruning only (written by pfconvert)", "rules": []}
    base["name"] = f"{base['name']}+prune{ratio:g}"
    base["prune"] = {"ratio": ratio, "round_to": round_to}
    doc = {key: base[key] for key in ("name", "description", "prune", "rules") if key in base}
    return parse_rules(yaml.safe_dump(doc, sort_keys=False, width=120), source="<prune>")
