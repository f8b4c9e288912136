"""Channel pruning as a lever of a conversion: Torch-Pruning's magnitude pruner (the optional extra
``pfconvert[prune]``), after the rules, recorded as data.

:func:`prune_channels` prunes the output channels of every layer but the classifier (channels that must stay aligned,
such as a residual stage's, pruned together; counts rounded to multiples of ``round_to``), in place. Which channels go
is the ``importance``'s choice (:data:`PRUNE_IMPORTANCES`): ``"l1"``, the L1 norm of each channel's weights (the
default, what pfconvert always did), or ``"group-norm"``, Torch-Pruning's recommended group importance (the L2 norm of
each channel's weights over every layer the channel couples, ``GroupMagnitudeImportance(p=2)``, the DepGraph paper's
group norm). How many go: by default one uniform ratio per layer; with ``global_pruning`` the channels of all layers are
ranked together (each layer's scores normalised by their mean, Torch-Pruning's global pruning) and the ratio is the
share of all channels removed, so layers that matter less lose more, no layer more than ``max_ratio``. It returns a
:class:`Pruning`: for every module whose tensors changed shape, its shape attributes (``in_channels``,
``num_features``...) and the shape of each of its own parameters and buffers. That record is plain JSON:
:func:`apply_shapes` gives a freshly built (and converted) model the same shapes, so an artifact's weights load into it
strictly, with no pickled module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import chain
from typing import Any

import torch
from torch import nn

from ..errors import ArtifactError, PfconvertError

__all__ = ["PRUNE_ROUND_TO", "PRUNE_IMPORTANCES", "PRUNE_MAX_RATIO", "Pruning", "prune_channels", "prune_method",
           "prune_label", "check_prune_method", "apply_shapes", "torch_pruning", "with_prune"]

PRUNE_ROUND_TO = 8
"""Default channel rounding: counts stay multiples of 8 (what oneDNN's and ONNX Runtime's CPU kernels block by)."""
PRUNE_IMPORTANCES = ("l1", "group-norm")
"""The channel importances :func:`prune_channels` knows: ``l1`` (per-channel L1 magnitude, the default) and
``group-norm`` (Torch-Pruning's group L2 norm over coupled layers)."""
PRUNE_MAX_RATIO = 0.8
"""Global pruning's default cap: no layer loses more than this share of its channels (at least the ratio itself)."""
_L1_METHOD = "torch-pruning magnitude (L1), uniform ratio, classifier kept"
"""The method string of the default pruning (what every record written before importances were choosable says)."""
_ATTRS = ("in_channels", "out_channels", "groups", "num_features", "num_channels", "in_features", "out_features")
"""Module attributes that state a channel count, recorded (when present) for each pruned module."""


@dataclass
class Pruning:
    """What :func:`prune_channels` did: the ratio, the rounding, the method (in words, and as ``importance``,
    ``global_pruning`` and ``max_ratio``), and ``shapes``: module path -> ``{"attrs": {name: value}, "tensors":
    {name: shape}}`` for every module whose own parameters or buffers changed shape (global pruning's per-layer counts
    differ: they are all here, so :func:`apply_shapes` needs nothing else)."""

    ratio: float
    round_to: int = PRUNE_ROUND_TO
    method: str = _L1_METHOD
    shapes: dict[str, dict[str, Any]] = field(default_factory=dict)
    importance: str = "l1"
    global_pruning: bool = False
    max_ratio: float | None = None  # global pruning's per-layer cap (None: uniform pruning)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``importance``, ``global_pruning`` and ``max_ratio`` only when not the defaults (an L1
        uniform record reads, and so fingerprints, as before they existed)."""
        data = asdict(self)
        for key, default in (("importance", "l1"), ("global_pruning", False), ("max_ratio", None)):
            if data[key] == default:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Pruning":
        """The record back from :meth:`to_dict` (records from before the importance was choosable: L1, uniform)."""
        cap = data.get("max_ratio")
        return cls(float(data["ratio"]), int(data.get("round_to", PRUNE_ROUND_TO)), str(data.get("method", "")),
                   dict(data.get("shapes", {})), str(data.get("importance", "l1")),
                   bool(data.get("global_pruning", False)), float(cap) if cap is not None else None)


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


def prune_method(importance: str = "l1", global_pruning: bool = False, max_ratio: float | None = None) -> str:
    """The pruning method in words (a :class:`Pruning`'s ``method``; the L1 uniform one as it always read)."""
    if importance == "l1" and not global_pruning:
        return _L1_METHOD
    norm = "magnitude (L1)" if importance == "l1" else "group norm (L2 over coupled layers)"
    share = f"global ratio (layers ranked together, each at most {max_ratio:g})" if global_pruning else "uniform ratio"
    return f"torch-pruning {norm}, {share}, classifier kept"


def check_prune_method(importance: str, global_pruning: bool = False, max_ratio: float | None = None,
                       ratio: float | None = None, where: str = "pruning") -> None:
    """Refuse an unknown importance, or a cap that is not in (0, 1), given without global pruning, or below the
    ratio, with a one-line :class:`~pfconvert.errors.PfconvertError`."""
    if importance not in PRUNE_IMPORTANCES:
        raise PfconvertError(f"{where}: unknown pruning importance {importance!r}; use one of "
                             f"{', '.join(PRUNE_IMPORTANCES)}")
    if max_ratio is None:
        return
    if not global_pruning:
        raise PfconvertError(f"{where}: max_ratio caps global pruning only; set global pruning or drop max_ratio")
    if not 0.0 < max_ratio < 1.0:
        raise PfconvertError(f"{where}: max_ratio must be between 0 and 1 (exclusive), got {max_ratio}")
    if ratio is not None and max_ratio < ratio:
        raise PfconvertError(f"{where}: max_ratio {max_ratio:g} is below the pruning ratio {ratio:g}; no layer "
                             "could lose its share")


def _importance(tp: Any, importance: str) -> Any:
    if importance == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    group = getattr(tp.importance, "GroupMagnitudeImportance", None)  # Torch-Pruning < 1.5: GroupNormImportance
    return group(p=2) if group is not None else tp.importance.GroupNormImportance(p=2)


def _global_ratios(tp: Any, model: nn.Module, example: torch.Tensor, importance: Any, ratio: float, cap: float,
                   round_to: int, ignored: list[nn.Module]) -> dict[nn.Module, float]:
    """Per-layer ratios of Torch-Pruning's global ranking, each capped at ``cap`` (its one-shot global step does not
    enforce ``max_pruning_ratio`` within the step, so a layer could lose all but ``round_to`` channels): the share of
    each root layer's channels the global threshold removes, read from its interactive step without pruning."""
    ranker = tp.pruner.BasePruner(model, example, importance=importance, global_pruning=True, pruning_ratio=ratio,
                                  max_pruning_ratio=cap, round_to=round_to, ignored_layers=ignored)
    ratios: dict[nn.Module, float] = {}
    for group in ranker.step(interactive=True):  # the groups it would prune; not pruned here
        dep, idxs = group[0]
        module = dep.target.module
        channels = (ranker.DG.get_out_channels(module) if ranker.DG.is_out_channel_pruning_fn(dep.handler)
                    else ranker.DG.get_in_channels(module))
        if not channels:
            continue
        n = min(len(idxs), int(cap * channels), channels - round_to)
        if n > 0:  # n - 0.5: the local pruner's int(C * (1 - r)) then keeps exactly C - n
            ratios[module] = (n - 0.5) / channels
    return ratios


def prune_channels(model: nn.Module, ratio: float, input_size: tuple[int, int, int],
                   round_to: int = PRUNE_ROUND_TO, importance: str = "l1", global_pruning: bool = False,
                   max_ratio: float | None = None) -> tuple[Pruning, dict[str, torch.Tensor]]:
    """Prune ``model`` in place (see the module docstring).

    Args:
        importance: which channels go (:data:`PRUNE_IMPORTANCES`).
        global_pruning: rank all layers' channels together; ``ratio`` is then the share of all channels removed.
        max_ratio: global pruning's per-layer cap (default :data:`PRUNE_MAX_RATIO`, at least ``ratio``).

    Returns:
        The record, and the state before pruning of every module it reshaped (``path.tensor`` -> tensor): what an
        artifact keeps to rebuild the original (the teacher).

    Raises:
        PfconvertError: Torch-Pruning is not installed, the ratio is not in (0, 1), or the method is unknown.
    """
    if not 0.0 < ratio < 1.0:
        raise PfconvertError(f"pruning ratio must be between 0 and 1 (exclusive), got {ratio}")
    check_prune_method(importance, global_pruning, max_ratio, ratio)
    cap = (max_ratio if max_ratio is not None else max(PRUNE_MAX_RATIO, ratio)) if global_pruning else None
    tp = torch_pruning()
    before = {path: _own(module) for path, module in model.named_modules()}
    ref = next(iter(model.parameters()))
    example = torch.randn(1, *input_size, device=ref.device, dtype=ref.dtype)
    head = _classifier(model)
    ignored = [head] if head is not None else []
    scorer = _importance(tp, importance)
    training = model.training
    model.eval()
    try:
        if cap is None:
            pruner = tp.pruner.MagnitudePruner(model, example, importance=scorer, pruning_ratio=ratio,
                                               round_to=round_to, ignored_layers=ignored)
        else:
            ratios = _global_ratios(tp, model, example, scorer, ratio, cap, round_to, ignored)
            pruner = tp.pruner.BasePruner(model, example, importance=scorer, pruning_ratio=0.0,
                                          pruning_ratio_dict=ratios, round_to=round_to, ignored_layers=ignored)
        pruner.step()
    finally:
        model.train(training)
    record = Pruning(ratio, round_to, prune_method(importance, global_pruning, cap), importance=importance,
                     global_pruning=global_pruning, max_ratio=cap)
    removed: dict[str, torch.Tensor] = {}
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


def with_prune(rules: Any, ratio: float, round_to: int = PRUNE_ROUND_TO, importance: str = "l1",
               global_pruning: bool = False, max_ratio: float | None = None) -> Any:
    """``rules`` (a :class:`~pfconvert.rules.loading.LoadedRules`, or None: no rule) with a ``prune:`` section:
    channel pruning of ``ratio`` after them; the rule file ``pfconvert plan --prune`` writes and ``convert`` replays.
    The method fields are written only when not the defaults (an L1 uniform section reads as it always did)."""
    import yaml

    from ..rules.loading import parse_rules

    check_prune_method(importance, global_pruning, max_ratio, ratio)
    base = rules.ruleset.model_dump(mode="json", exclude_none=True) if rules is not None else {
        "name": "prune", "description": "Channel pruning only (written by pfconvert)", "rules": []}
    base["name"] = f"{base['name']}+prune{ratio:g}{prune_label(importance, global_pruning)}"
    base["prune"] = {"ratio": ratio, "round_to": round_to}
    if importance != "l1":
        base["prune"]["importance"] = importance
    if global_pruning:
        base["prune"]["global_pruning"] = True
    if max_ratio is not None:
        base["prune"]["max_ratio"] = max_ratio
    doc = {key: base[key] for key in ("name", "description", "prune", "rules") if key in base}
    return parse_rules(yaml.safe_dump(doc, sort_keys=False, width=120), source="<prune>")


def prune_label(importance: str = "l1", global_pruning: bool = False) -> str:
    """A short suffix naming a pruning method that is not the default (``""`` for L1 uniform): ``-group-norm``,
    ``-global``, ``-group-norm-global``; candidate and rule names carry it."""
    return (f"-{importance}" if importance != "l1" else "") + ("-global" if global_pruning else "")
