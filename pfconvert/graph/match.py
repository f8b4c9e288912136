"""Find the layers a rule set targets: module type and attribute predicates, never string patterns on code.

Candidates are the modules that ran in a traced forward (see :mod:`pfconvert.graph.dataflow`), in call order. Each candidate
is claimed by the first rule whose ``match`` holds; ``every_nth`` then thins each rule's matches. What each ``match:``
key tests is its predicate's (:mod:`pfconvert.rules.predicates`): this module gives them the :class:`Site` and the
model's :class:`Layout`.

Stages and blocks are read from qualified names: ``layer1.0`` (ResNet) is stage 0 block 0; ``stages.2.blocks.1`` and
``blocks.2.1`` (EfficientNet) are stage 2 block 1, as is ``s3.b2`` (RegNet, 1-based); ``blocks.5.attn`` (ViT, no stages) is stage 0 block 5.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import nn

from .dataflow import Call, Dataflow
from .geometry import ConvGeometry, conv_geometry
from .modules import is_activation, is_norm
from .residual import BranchInfo, branch_info

if TYPE_CHECKING:
    from ..rules.schema import Rule, RuleSet

__all__ = ["Site", "Match", "Layout", "find_matches", "stage_block", "block_path", "site_kind"]

_LAYER_RE = re.compile(r"(?:^|\.)layer(\d+)\.(\d+)(?:\.|$)")
_REGNET_RE = re.compile(r"(?:^|\.)s(\d+)\.b(\d+)(?:\.|$)")  # timm RegNet: s1.b1 (1-based)
_STAGE_RE = re.compile(r"(?:^|\.)(?:stages|stage|features|layers|blocks)\.(\d+)(?:\.(?:blocks\.)?(\d+))?(?:\.|$)")


def _parse(path: str) -> tuple[int | None, int | None, str | None, str | None]:
    """(stage, block, stage prefix, block path) of a qualified module name, or Nones."""
    m = _LAYER_RE.search(path)
    if m:
        return int(m.group(1)) - 1, int(m.group(2)), path[: m.start(2) - 1], path[: m.end(2)]
    m = _REGNET_RE.search(path)
    if m:
        return int(m.group(1)) - 1, int(m.group(2)) - 1, path[: m.end(1)], path[: m.end(2)]
    m = _STAGE_RE.search(path)
    if not m:
        return None, None, None, None
    if m.group(2) is None:  # blocks.5.attn: a flat list of blocks
        return 0, int(m.group(1)), path[: m.start(1) - 1], path[: m.end(1)]
    return int(m.group(1)), int(m.group(2)), path[: m.start(2) - 1], path[: m.end(2)]


def stage_block(path: str) -> tuple[int | None, int | None, str | None]:
    """(stage, block, stage prefix) parsed from a qualified module name, or Nones: ``layer2.1.conv1`` -> (1, 1,
    'layer2'), ``stages.2.blocks.1.conv_dw`` -> (2, 1, 'stages.2'), ``s3.b2.conv2`` (RegNet, 1-based) -> (2, 1,
    's3')."""
    return _parse(path)[:3]


def block_path(path: str) -> str | None:
    """The qualified name of the block holding ``path`` (``layer2.1``, ``stages.2.blocks.1``, ``s3.b2``), or None."""
    return _parse(path)[3]


def _is_attention(module: nn.Module) -> bool:
    return type(module).__name__ == "Attention" and hasattr(module, "qkv") and hasattr(module, "num_heads")


@dataclass
class Site:
    """A candidate layer: where it is, what it is, and which norm/activation directly follow it."""

    path: str
    module: nn.Module
    call: Call
    kind: str
    parent_type: str
    stage: int | None
    block: int | None
    norm: str | None = None
    act: str | None = None
    after_norm: str | None = None  # the consumer of the norm's output when it is not an activation
    consumer: str | None = None  # the direct consumer when there is no norm
    branch: BranchInfo = field(default_factory=BranchInfo)  # where it stands in residual branches

    @property
    def geometry(self) -> ConvGeometry | None:
        """The layer's conv geometry (None for an attention site)."""
        return conv_geometry(self.module)

    def describe(self) -> str:
        """Short text of the layer (``Conv2d 96->96 k3 s2 dw``)."""
        g = self.geometry
        return type(self.module).__name__ if g is None else g.describe(type(self.module).__name__)


@dataclass
class Match:
    """A site claimed by a rule, with the layers the rule absorbs."""

    rule: Rule
    site: Site
    absorbed: list[str] = field(default_factory=list)


def _single(flow: Dataflow, call: Call) -> Call | None:
    """The one module that consumes the output of every call of ``call``'s module and nothing else, if any.

    A shared module (called more than once) counts only when each of its calls feeds that same consumer; a consumer
    that is also called on other tensors (a shared norm) does not count, since absorbing it would change those too.
    """
    calls = flow.calls_of(call.path) or [call]
    users = [flow.consumers(c) for c in calls]
    if any(len(u) != 1 for u in users) or len({u[0].path for u in users}) != 1:
        return None
    user = users[0][0]
    produced = {c.output_id for c in calls}
    if any(c.input_id not in produced for c in flow.calls_of(user.path)):
        return None
    return user


def _site(model_modules: dict[str, nn.Module], flow: Dataflow, call: Call, kind: str) -> Site:
    parent = call.path.rpartition(".")[0]
    stage, block, _ = stage_block(call.path)
    site = Site(call.path, call.module, call, kind, type(model_modules.get(parent, nn.Module())).__name__, stage, block)
    site.branch = branch_info(flow, call)
    if kind != "conv2d":
        return site
    nxt = _single(flow, call)
    channels = site.geometry.out_channels  # type: ignore[union-attr]
    if nxt is not None and is_norm(nxt.module) and _norm_channels(nxt.module) in (channels, None):
        site.norm = nxt.path
        after = _single(flow, nxt)
        if after is not None and is_activation(after.module):
            site.act = after.path
        elif after is not None:
            site.after_norm = after.path
    elif nxt is not None:
        site.consumer = nxt.path
    return site


def _norm_channels(module: nn.Module) -> int | None:
    for attr in ("num_features", "num_channels"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    shape = getattr(module, "normalized_shape", None)
    return shape[0] if isinstance(shape, (tuple, list)) and len(shape) == 1 else None


def site_kind(module: nn.Module) -> str | None:
    """The kind of site a module is: ``conv2d``, ``attention``, or None (never replaced)."""
    if conv_geometry(module) is not None:
        return "conv2d"
    return "attention" if _is_attention(module) else None


@dataclass(frozen=True)
class Layout:
    """The model's stages and blocks, for predicates that count from the end (``stages: -1``, ``blocks: -1``)."""

    stage_count: int = 0
    """Number of stages (the largest stage index read from any module path, plus one)."""
    block_counts: dict[str, int] = field(default_factory=dict)
    """Stage prefix (``layer2``, ``stages.1``) -> number of blocks in that stage."""

    @classmethod
    def of(cls, model: nn.Module) -> Layout:
        """Read from the model's module names."""
        counts: dict[str, set[int]] = {}
        stages: set[int] = set()
        for name, _ in model.named_modules():
            stage, block, prefix = stage_block(name)
            if stage is not None:
                stages.add(stage)
            if prefix is not None and block is not None:
                counts.setdefault(prefix, set()).add(block)
        return cls(max(stages, default=-1) + 1, {p: max(b) + 1 for p, b in counts.items()})

    def block_count(self, path: str) -> int:
        """Number of blocks in the stage holding ``path`` (0 outside any stage)."""
        return self.block_counts.get(stage_block(path)[2] or "", 0)


def find_matches(model: nn.Module, ruleset: RuleSet, flow: Dataflow) -> list[Match]:
    """Assign each candidate layer to the first rule whose ``match`` holds (every predicate it gives, see
    :mod:`pfconvert.rules.predicates`), then thin each rule's matches by its selections (``every_nth``)."""
    modules = dict(model.named_modules())
    layout = Layout.of(model)
    seen: set[str] = set()
    per_rule: dict[str, list[Match]] = {r.name: [] for r in ruleset.rules}
    for call in flow.calls:
        if call.path in seen:
            continue
        kind = site_kind(call.module)
        if kind is None:
            continue
        seen.add(call.path)
        site = _site(modules, flow, call, kind)
        for rule in ruleset.rules:
            if rule.match.holds(site, layout):
                per_rule[rule.name].append(Match(rule, site, _absorbed(rule, site)))
                break
    selected: list[Match] = []
    for rule in ruleset.rules:
        selected.extend(rule.match.select(per_rule[rule.name]))
    order = {c.path: c.index for c in flow.calls}
    return sorted(selected, key=lambda m: order[m.site.path])


def _absorbed(rule: Rule, site: Site) -> list[str]:
    out = []
    if "norm" in rule.absorb and site.norm:
        out.append(site.norm)
        if "act" in rule.absorb and site.act:
            out.append(site.act)
    return out
