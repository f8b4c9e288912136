"""Convert a model: trace its dataflow, match the rules, swap the matched submodules, verify.

Replacements are applied to the original ``nn.Module`` by setting submodules on their parents (as
``timm.utils.reparameterize_model`` does), so the model keeps its class and methods (``forward_features``,
``reset_classifier``, ``pretrained_cfg``) and untouched layers keep their state-dict keys and values. Tracing, the
shape check of each replacement and the final check run on meta tensors (:func:`pfconvert.graph.meta_forward`), so
a conversion costs the same at 600 px as at 224 px.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.config import DataConfig, resolve_data_config
from ..errors import ConversionError, RuleError, one_line
from ..graph.dataflow import Call, Dataflow, meta_forward, run_forward, tensor_shapes, trace_dataflow
from ..graph.match import Match, find_matches
from ..graph.modules import count_params, module_aliases, set_module
from ..graph.residual import emptied_branches, is_trainable
from ..ops import build_replacement, describe_op
from ..ops.shrink import geometry_note
from ..rules.loading import LoadedRules, load_rules
from .models import RESERVED_KWARGS, ModelSource, build_model
from .models import input_size as model_input_size
from .versions import op_versions

__all__ = ["Replacement", "ConversionRecord", "match_rules", "preview", "build_op", "apply_matches", "convert",
           "convert_pair"]


@dataclass
class Replacement:
    """One replaced layer: where, by which rule, what it was, what it became, what was absorbed with it."""

    path: str
    rule: str
    old: str
    new: str
    absorbed: list[str] = field(default_factory=list)
    params_removed: int = 0
    ops: dict[str, int] = field(default_factory=dict)
    """The ops it was built from and their versions (``{"sequence": 1, "avg_pool": 1, "keep": 1}``)."""
    note: str = ""
    """What the replacement amounts to on the layer's traced input map, when worth saying (a pool that is an
    identity there, the taps a shrunk conv kept); see :func:`pfconvert.ops.shrink.geometry_note`."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Replacement:
        """The record back from :meth:`to_dict` (keys it does not know are ignored; those recorded before a field
        existed get its default: no ``ops`` recorded reads as ``{}``).

        Raises:
            ValueError: a field is missing or of the wrong type (pydantic's ``ValidationError``).
        """
        from pydantic import TypeAdapter

        return TypeAdapter(cls).validate_python(data, strict=False)


@dataclass
class ConversionRecord:
    """What a conversion did, enough to replay it on a freshly built model."""

    model_name: str | None
    model_kwargs: dict[str, Any]
    checkpoint: str | None
    rules: LoadedRules
    input_size: tuple[int, int, int]
    replacements: list[Replacement]
    params_before: int
    params_after: int
    removed_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    source: ModelSource | None = None
    data_config: DataConfig | None = None
    pruning: dict[str, Any] | None = None
    """The channel pruning done after the rules (:class:`pfconvert.conversion.pruning.Pruning` as a dict)."""

    def counts_by_rule(self) -> dict[str, int]:
        """Number of replaced layers per rule name (rules that matched nothing included, with 0)."""
        counts = {r.name: 0 for r in self.rules.ruleset.rules}
        for rep in self.replacements:
            counts[rep.rule] += 1
        return counts


def match_rules(model: nn.Module, rules: LoadedRules,
                input_size: tuple[int, int, int]) -> tuple[list[Match], Dataflow]:
    """Dry run: the matches the rules would replace in ``model`` (nothing is changed), and the traced dataflow."""
    flow = trace_dataflow(model, input_size)
    return find_matches(model, rules.ruleset, flow), flow


def build_op(match: Match, model: nn.Module, flow: Dataflow | None = None) -> nn.Module:
    """The module that replaces a match's layer (``model`` supplies context such as a ViT's token grid, ``flow`` the
    layer's input shapes in the traced forward)."""
    calls = (flow.calls_of(match.site.path) if flow is not None else []) or [match.site.call]
    shapes = tuple(c.input_shape for c in calls if c.input_shape is not None)
    return build_replacement(match.rule.replace, match.site.module, match.site.path, model, shapes)


def _check_shape(match: Match, op: nn.Module, flow: Dataflow) -> None:
    """Every call of the replaced conv: the replacement gives the same output shape for the same input shape."""
    if match.site.kind != "conv2d":
        return
    for call in flow.calls_of(match.site.path) or [match.site.call]:
        _check_call_shape(match, op, call)


def _check_call_shape(match: Match, op: nn.Module, call: Call) -> None:
    if call.input_shape is None or call.output_shape is None:
        return
    ref = next(iter(match.site.module.parameters()), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    x = torch.empty(call.input_shape, dtype=dtype, device="meta")
    try:
        with torch.no_grad():
            out = meta_forward(op.eval(), x)
    except Exception as exc:  # noqa: BLE001 - the op cannot take this input at all: say so, in one line
        raise ConversionError(f"layer '{match.site.path}': replacement {type(op).__name__} fails on the layer's input "
                              f"{call.input_shape} ({one_line(exc)}); adjust the rule's kernel/stride/padding") from None
    if tuple(out.shape) != call.output_shape:
        raise ConversionError(f"layer '{match.site.path}': replacement {type(op).__name__} gives shape "
                              f"{tuple(out.shape)}, the layer gave {call.output_shape}; adjust the rule's kernel/"
                              "stride/padding")


def _absorb(model: nn.Module, path: str, keep_act: bool, aliases: dict[int, list[str]]) -> None:
    module = model.get_submodule(path)
    act = getattr(module, "act", None)
    if keep_act and isinstance(act, nn.Module) and not isinstance(act, nn.Identity):
        set_module(model, path, act, aliases)  # timm BatchNormAct2d: drop the norm, keep its activation
    else:
        set_module(model, path, nn.Identity().train(module.training), aliases)


def _unalias_consumers(model: nn.Module, flow: Dataflow, last: str) -> None:
    """An op that hands its input on: a following in-place op would then corrupt that input (a residual)."""
    call = flow.by_path.get(last)
    if call is None:
        return
    for user in flow.consumers(call):
        module = model.get_submodule(user.path)
        if getattr(module, "inplace", False):
            module.inplace = False


def _state_of(model: nn.Module, paths: list[str]) -> dict[str, torch.Tensor]:
    state = {}
    for path in paths:
        for key, value in model.get_submodule(path).state_dict().items():
            state[f"{path}.{key}"] = value.detach().clone()
    return state


def _prepare(match: Match, model: nn.Module, flow: Dataflow) -> tuple[nn.Module, Replacement]:
    """Build and check the op for one match, and describe the replacement (the model is not changed)."""
    site = match.site
    op = build_op(match, model, flow)
    _check_shape(match, op, flow)
    op.train(site.module.training)
    removed = count_params(site.module) - count_params(op)
    removed += sum(count_params(model.get_submodule(path)) for path in match.absorbed)
    shapes = [c.input_shape for c in flow.calls_of(site.path) or [site.call] if c.input_shape is not None]
    return op, Replacement(site.path, match.rule.name, site.describe(), describe_op(op), list(match.absorbed), removed,
                           op_versions(match.rule.replace), geometry_note(op, shapes) if site.kind == "conv2d" else "")


def _check_branches(prepared: list[tuple[Match, nn.Module]], flow: Dataflow) -> None:
    """Refuse replacements that leave a residual branch with no trainable layer, unless each rule involved allows it
    (``allow_empty_branch``). A replacement that holds a trainable layer itself (a hybrid's kept conv, a token mixer's
    linears) does not empty its branch."""
    removed: dict[str, Match] = {}
    for match, op in prepared:
        if not any(is_trainable(m) for m in op.modules()):
            removed[match.site.path] = match
        removed.update((path, match) for path in match.absorbed)
    for branch, paths in emptied_branches(flow, list(removed)):
        rules = sorted({removed[p].rule.name for p in paths if not removed[p].rule.allow_empty_branch})
        if rules:
            names = ", ".join(p for p in paths if removed[p].site.path == p)
            raise RuleError(f"rule {', '.join(repr(r) for r in rules)} would leave the residual branch of "
                            f"'{branch.name()}' with no trainable layer ({names} replaced); narrow the match (e.g. "
                            "match.branch_role: first, or spatial), or set allow_empty_branch: true on the rule")


def _prepare_all(matches: list[Match], model: nn.Module, flow: Dataflow) -> list[tuple[nn.Module, Replacement]]:
    """:func:`_prepare` for every match, then the residual-branch check over all of them."""
    prepared = [_prepare(match, model, flow) for match in matches]
    _check_branches([(match, op) for match, (op, _) in zip(matches, prepared)], flow)
    return prepared


def preview(model: nn.Module, rule: str | Path | LoadedRules,
            input_size: tuple[int, int, int] | None = None) -> list[Replacement]:
    """Dry run: what ``rule`` would replace in ``model`` and with what (each op is built and shape-checked, and no
    residual branch may be left without a trainable layer; the model is not changed)."""
    size: tuple[int, int, int] = tuple(input_size) if input_size is not None else model_input_size(model)  # type: ignore
    matches, flow = match_rules(model, _rules(rule), size)
    return [replacement for _, replacement in _prepare_all(matches, model, flow)]


def apply_matches(model: nn.Module, matches: list[Match], flow: Dataflow,
                  removed_state: dict[str, torch.Tensor] | None = None) -> list[Replacement]:
    """Swap every matched layer (and the layers it absorbs) in ``model``; returns what was done.

    The original state of every replaced or absorbed layer is copied into ``removed_state`` when given, so that the
    original model can be rebuilt from the converted one (the teacher for fine-tuning).
    """
    done = []
    aliases = module_aliases(model)
    for match, (op, replacement) in zip(matches, _prepare_all(matches, model, flow)):
        if removed_state is not None:
            removed_state.update(_state_of(model, [match.site.path, *match.absorbed]))
        for path in match.absorbed:
            _absorb(model, path, keep_act="act" not in match.rule.absorb, aliases=aliases)
        set_module(model, match.site.path, op, aliases)
        if match.rule.replace.aliases_input():
            _unalias_consumers(model, flow, match.absorbed[-1] if match.absorbed else match.site.path)
        done.append(replacement)
    return done


def _convert(model: nn.Module, rules: LoadedRules, source: ModelSource | None,
             input_size: tuple[int, int, int] | int | None, data: dict[str, Any] | None, allow_empty: bool,
             verify: bool, prune: bool = True) -> ConversionRecord:
    """Convert ``model`` in place; ``source`` says where it came from (None: a module the caller built)."""
    size: tuple[int, int, int]
    if isinstance(input_size, int):  # a side: the model's channels at N x N
        size = (model_input_size(model)[0], input_size, input_size)
    else:
        size = tuple(input_size) if input_size is not None else model_input_size(model)  # type: ignore[assignment]
    data_config = resolve_data_config(model, input_size=size, **(data or {}))
    name = source.name if source is not None else None
    checkpoint = source.detail if source is not None and source.weights == "checkpoint" else None
    before = count_params(model)
    matches, flow = match_rules(model, rules, size)
    spec = rules.ruleset.prune
    if not matches and not allow_empty and spec is None:
        raise RuleError(f"rule '{rules.name}' matched no layer of {name or type(model).__name__}; "
                        f"check the rule with `pfconvert inspect`, or pass --allow-empty")
    removed: dict[str, torch.Tensor] = {}
    replacements = apply_matches(model, matches, flow, removed)
    if verify and replacements:
        _verify(model, flow, size)
    pruning = None
    if spec is not None and prune:
        from .pruning import prune_channels

        done, state = prune_channels(model, spec.ratio, size, spec.round_to, spec.importance, spec.global_pruning,
                                     spec.max_ratio)
        for key, value in state.items():  # a replaced layer keeps its original state, not its replacement's
            removed.setdefault(key, value)
        pruning = done.to_dict()
    kwargs = dict(source.kwargs) if source is not None else {}
    return ConversionRecord(name, kwargs, checkpoint, rules, size, replacements, before, count_params(model), removed,
                            source, data_config, pruning)


def _rules(rule: str | Path | LoadedRules) -> LoadedRules:
    return rule if isinstance(rule, LoadedRules) else load_rules(rule)


def convert(
    model_or_name: nn.Module | str,
    rule: str | Path | LoadedRules = "maxpool",
    *,
    checkpoint: str | Path | None = None,
    input_size: tuple[int, int, int] | int | None = None,
    allow_empty: bool = False,
    inplace: bool = False,
    verify: bool = True,
    prune: bool = True,
    pretrained: bool = False,
    pretrained_file: str | Path | None = None,
    new_head: bool = False,
    data: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> tuple[nn.Module, ConversionRecord]:
    """Replace the layers ``rule`` targets with parameter-free operations.

    Args:
        model_or_name: A timm model name (``mobilenetv2_100``, a family name with one default variant such as
            ``mobilenetv2``, a tagged name ``resnet50.a1_in1k``, an ``hf-hub:org/name`` id) or any ``nn.Module``.
        rule: A built-in rule name (``maxpool``, ``r50-max``...), a path to a YAML rule file, or loaded rules.
        checkpoint: Local weights for a model name (.pth/.pt/.safetensors, read with ``weights_only=True``).
        input_size: (C, H, W) of the traced forward, or a side N (the model's channels at N x N); defaults to the
            model's pretrained config.
        pretrained: For a model name, load timm's pretrained weights (Hub or its local cache).
        pretrained_file: For a model name, timm's pretrained weights from this local file.
        new_head: With ``checkpoint`` or ``pretrained_file``: re-initialise the classifier instead of loading it
            (both files are otherwise loaded strictly; see :func:`pfconvert.create_model`).
        data: Overrides of the model's data config (``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``,
            ``std``; :func:`pfconvert.data.resolve_data_config`), recorded with the conversion.
        allow_empty: Return the model unchanged instead of raising when no layer matches.
        inplace: Convert a given module in place instead of a deep copy.
        verify: Run a (meta) forward after conversion and check that the output shapes are unchanged.
        prune: Apply the rule file's ``prune:`` section (channel pruning after the rules; needs ``pfconvert[prune]``)
            and record it in ``record.pruning``; False leaves the channels as they are (:func:`pfconvert.load` then
            gives the rebuilt model the recorded shapes itself).
        **model_kwargs: ``timm.create_model`` kwargs for a model name (``num_classes=10``).

    Returns:
        The converted model (same class, same train/eval mode) and a :class:`ConversionRecord`.

    Example:
        >>> model, record = pfconvert.convert("mobilenetv2_100", "maxpool")
        >>> len(record.replacements)
        17
    """
    rules = _rules(rule)
    source: ModelSource | None
    if isinstance(model_or_name, str):
        model, source = build_model(model_or_name, checkpoint, pretrained=pretrained, pretrained_file=pretrained_file,
                                    new_head=new_head, **model_kwargs)
    elif isinstance(model_or_name, nn.Module):
        if checkpoint is not None or model_kwargs or pretrained or pretrained_file is not None or new_head:
            raise ConversionError("checkpoint, pretrained weights and model kwargs apply to model names only; load "
                                  "weights into your module first")
        model = model_or_name if inplace else copy.deepcopy(model_or_name)
        source = _module_source(model)
    else:
        raise ConversionError(f"expected a timm model name or an nn.Module, got {type(model_or_name).__name__}")
    return model, _convert(model, rules, source, input_size, data, allow_empty, verify, prune)


def _module_source(model: nn.Module) -> ModelSource | None:
    """Where a module the caller built came from, as far as timm says: its architecture and the kwargs it was
    created with (``timm.create_model`` records them; a model built from its class records none, and then its class
    count and input channels stand for them). :func:`pfconvert.save` checks that they rebuild the model."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture") if isinstance(cfg, dict) else None
    if not arch:
        return None
    recorded = getattr(model, "_model_args", None)
    if isinstance(recorded, dict):
        kwargs = {k: v for k, v in recorded.items() if k not in RESERVED_KWARGS and k != "pretrained_model_args"}
    else:
        kwargs = {k: getattr(model, k) for k in ("num_classes", "in_chans") if isinstance(getattr(model, k, None), int)}
    return ModelSource(arch, arch, kwargs, "module")


def convert_pair(name: str, rule: str | Path | LoadedRules = "maxpool", *, checkpoint: str | Path | None = None,
                 input_size: tuple[int, int, int] | int | None = None, allow_empty: bool = False,
                 pretrained: bool = False,
                 pretrained_file: str | Path | None = None, new_head: bool = False,
                 data: dict[str, Any] | None = None,
                 **model_kwargs: Any) -> tuple[nn.Module, nn.Module, ConversionRecord]:
    """Build timm model ``name`` and convert a copy: ``(original, converted, record)``, both with the same weights
    outside the replaced layers (what ``pfconvert convert`` measures and saves). Arguments as :func:`convert`."""
    from .original import load_original  # imports this module (through .artifact)

    rules = _rules(rule)
    original = load_original(name, checkpoint, pretrained=pretrained, pretrained_file=pretrained_file,
                             new_head=new_head, input_size=input_size, data=data, **model_kwargs)
    converted = copy.deepcopy(original.model)
    record = _convert(converted, rules, original.source, input_size, data, allow_empty, True)
    return original.model, converted, record


def _verify(model: nn.Module, flow: Dataflow, size: tuple[int, int, int]) -> None:
    shapes = tensor_shapes(run_forward(model, size))
    if shapes != flow.output_shapes:
        raise ConversionError(f"converted model output shapes {shapes} differ from the original {flow.output_shapes}")
