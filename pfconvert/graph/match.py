"""Find the layers a rule set targets: module type and attribute predicates, never string patterns on code.

Candidates are the modules that ran in a traced forward (see :mod:`pfconvert.graph.dataflow`), in call order. Each candidate
is claimed by the first rule whose ``match`` holds; ``every_nth`` then thins each rule's matches.

Stages and blocks are read from qualified names: ``layer1.0`` (ResNet) is stage 0 block 0; ``stages.2.blocks.1`` and
``blocks.2.1`` (EfficientNet) are stage 2 block 1, as is ``s3.b2`` (RegNet, 1-based); ``blocks.5.attn`` (ViT, no stages) is stage 0 block 5.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import nn

from .dataflow import Call, Dataflow
from .geometry import ConvGeometry, conv_geometry
from .modules import is_activation, is_norm
from .residual import BranchInfo, branch_info

if TYPE_CHECKING:
    from ..rules.schema import MatchSpec, Rule, RuleSet

__all__ = ["Site", "Match", "find_matches", "stage_block", "block_path", "site_kind"]

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


def _globs(value: str, patterns: list[str] | None) -> bool:
    return patterns is None or any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _holds(spec: MatchSpec, site: Site, block_counts: dict[str, int]) -> bool:
    """Whether every field given in ``spec`` holds for ``site``."""
    if spec.op != site.kind:
        return False
    if not _globs(site.path, spec.path) or not _globs(site.parent_type, spec.parent):
        return False
    if spec.exclude and any(fnmatch.fnmatchcase(site.path, p) for p in spec.exclude):
        return False
    if spec.path_regex is not None and re.search(spec.path_regex, site.path) is None:
        return False
    if spec.stages is not None and site.stage not in spec.stages:
        return False
    if spec.residual is not None and site.branch.residual != spec.residual:
        return False
    if spec.branch_role is not None and not site.branch.roles.intersection(spec.branch_role):
        return False
    if spec.blocks is not None:
        _, _, prefix = stage_block(site.path)
        n = block_counts.get(prefix or "", 0)
        if site.block is None or not any(site.block == (b if b >= 0 else n + b) for b in spec.blocks):
            return False
    g = site.geometry
    if g is None:
        return True
    checks = [
        spec.depthwise is None or (g.depthwise if spec.depthwise else g.dense),
        spec.groups is None or any(kind == "any" or getattr(g, kind) for kind in spec.groups),
        spec.kernel_size is None or (g.kernel[0] == g.kernel[1] and g.kernel[0] in spec.kernel_size),
        spec.stride is None or (g.stride[0] == g.stride[1] and g.stride[0] in spec.stride),
        spec.dilation is None or (g.dilation[0] == g.dilation[1] and g.dilation[0] in spec.dilation),
        spec.same_channels is None or (g.in_channels == g.out_channels) == spec.same_channels,
    ]
    return all(checks)


def site_kind(module: nn.Module) -> str | None:
    """The kind of site a module is: ``conv2d``, ``attention``, or None (never replaced)."""
    if conv_geometry(module) is not None:
        return "conv2d"
    return "attention" if _is_attention(module) else None


def _block_counts(model: nn.Module) -> dict[str, int]:
    counts: dict[str, set[int]] = {}
    for name, _ in model.named_modules():
        _, block, prefix = stage_block(name)
        if prefix is not None and block is not None:
            counts.setdefault(prefix, set()).add(block)
    return {p: max(b) + 1 for p, b in counts.items()}


def find_matches(model: nn.Module, ruleset: RuleSet, flow: Dataflow) -> list[Match]:
    """Assign each candidate layer to the first rule that matches it, then apply each rule's ``every_nth``."""
    modules = dict(model.named_modules())
    counts = _block_counts(model)
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
            if _holds(rule.match, site, counts):
                per_rule[rule.name].append(Match(rule, site, _absorbed(rule, site)))
                break
    selected: list[Match] = []
    for rule in ruleset.rules:
        found = per_rule[rule.name]
        n, off = rule.match.every_nth, rule.match.offset
        if n is not None:
            found = [m for i, m in enumerate(found) if i >= off and (i - off) % n == 0]
        selected.extend(found)
    order = {c.path: c.index for c in flow.calls}
    return sorted(selected, key=lambda m: order[m.site.path])


def _absorbed(rule: Rule, site: Site) -> list[str]:
    out = []
    if "norm" in rule.absorb and site.norm:
        out.append(site.norm)
        if "act" in rule.absorb and site.act:
            out.append(site.act)
    return out
