"""Residual branches, read from the traced tensor graph: which layers lie between a fork and the add that joins it,
and what role a spatial conv plays in its branch.

A *join* is an addition of two same-shape tensors (``x + shortcut``, ``x += identity``). Its *fork* is the latest
tensor both operands were computed from (the block's input). Each operand's *branch* (one side of the join) is the
set of tensors computed from the fork that lead to that operand, fork excluded: an identity shortcut has an empty
branch, a projection shortcut holds its 1x1 conv, the residual branch holds the block's layers. Branches nest (DLA's
trees, Res2Net's hierarchical splits); a layer's *own* branch is the smallest one it lies in.

Roles of a k x k conv (k > 1) in its own branch:

- ``spatial``: the branch also holds a pointwise layer (a 1x1 conv on a feature map of the size of the conv's input
  or output, so not a squeeze-and-excitation's on pooled features; or a linear layer on that map's tokens), before or
  after it: the 3x3 of a bottleneck (1x1 -> 3x3 -> 1x1) or of a DarkNet block (1x1 -> 3x3), the depthwise conv of an
  inverted residual, a PVT attention's spatial-reduction conv;
- ``first`` / ``last``: the first / last of two or more k x k convs of the branch (a ResNet BasicBlock's conv1 / conv2);
- ``only``: the single k x k conv of the branch.

A *trainable layer* is a leaf module with a weight of two or more dimensions (a conv, a linear, an embedding): norms
and layer scales alone do not make a branch learn features. :func:`emptied_branches` finds the branches a set of
replacements would leave with none.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from torch import nn

from .dataflow import Call, Dataflow, Join
from .geometry import conv_geometry

__all__ = ["Branch", "BranchInfo", "ROLES", "residual_branches", "branch_info", "emptied_branches", "is_trainable"]

ROLES = ("spatial", "first", "last", "only")


@dataclass(frozen=True)
class Branch:
    """One side of a residual join: the module calls between the fork and the join."""

    join: Join
    fork: int
    nodes: frozenset[int]
    calls: tuple[Call, ...]

    def name(self) -> str:
        """The qualified name that holds all the branch's calls (the block), or the first call's path."""
        paths = [c.path.split(".") for c in self.calls]
        common: list[str] = []
        for parts in zip(*paths):
            if len(set(parts)) != 1:
                break
            common.append(parts[0])
        block = ".".join(common[:-1] if len(paths) == 1 else common)
        return block or (self.calls[0].path if self.calls else "?")


@dataclass
class BranchInfo:
    """Where a layer stands with respect to residual branches."""

    residual: bool = False
    roles: frozenset[str] = frozenset()
    branch: Branch | None = None  # the smallest branch holding the layer


@dataclass
class _Memo:
    branches: list[Branch] | None = None
    holding: dict[int, list[Branch]] = field(default_factory=dict)  # call index -> the branches it lies in
    info: dict[str, BranchInfo] = field(default_factory=dict)


def _memo(flow: Dataflow) -> _Memo:
    memo = flow.memo.get("residual")
    if memo is None:
        memo = flow.memo["residual"] = _Memo()
    return memo


def _sides(parents: list[tuple[int, ...]], join: Join) -> tuple[int, set[int], set[int]] | None:
    """The fork of a join and the nodes of its two sides, or None when the operands share no ancestor.

    Ancestors are visited newest first from both operands at once, so the first node reached from both is the
    latest common ancestor; every node newer than it on either side has been visited by then.
    """
    a, b = join.operands
    if a == b:
        return None
    marks: dict[int, int] = {a: 1, b: 2}
    heap = [-max(a, b), -min(a, b)]
    fork = None
    while heap:
        node = -heapq.heappop(heap)
        mark = marks[node]
        if mark == 3:
            fork = node
            break
        for parent in parents[node]:
            seen = marks.get(parent)
            if seen is None:
                marks[parent] = mark
                heapq.heappush(heap, -parent)
            elif seen | mark != seen:
                marks[parent] = seen | mark
    if fork is None:
        return None
    sides: tuple[set[int], set[int]] = (set(), set())
    from_fork = {fork}
    for node in sorted(n for n in marks if n > fork):  # parents are older: one pass in creation order
        if any(p in from_fork for p in parents[node]):
            from_fork.add(node)
            for i, bit in enumerate((1, 2)):
                if marks[node] & bit:
                    sides[i].add(node)
    return fork, sides[0], sides[1]


def residual_branches(flow: Dataflow) -> list[Branch]:
    """Both sides of every residual join of the forward, joins in forward order."""
    cache = _memo(flow)
    if cache.branches is not None:
        return cache.branches
    branches = []
    parents = flow.graph.parents
    for join in flow.graph.joins:
        found = _sides(parents, join)
        if found is None:
            continue
        fork, *sides = found
        for nodes in sides:
            inside = nodes | {fork}
            calls = tuple(c for c in flow.calls if c.output_node in nodes and c.input_node in inside)
            branch = Branch(join, fork, frozenset(nodes), calls)
            branches.append(branch)
            for call in calls:
                cache.holding.setdefault(call.index, []).append(branch)
    cache.branches = branches
    return branches


def _kxk(call: Call) -> bool:
    g = conv_geometry(call.module)
    return g is not None and max(g.kernel) > 1


def _hw(shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    return tuple(shape[2:]) if shape is not None and len(shape) == 4 else None


def _pointwise(call: Call, maps: set[tuple[int, ...] | None]) -> bool:
    """A 1x1 conv on a feature map of one of the sizes in ``maps`` (so not a squeeze-and-excitation's 1x1 convs on
    pooled features, unless the map is 1x1 itself), or a linear layer on that map's tokens (``(B, H*W, C)``, as a
    PVT attention's query/key/value projections)."""
    g = conv_geometry(call.module)
    if g is not None:
        return g.kernel == (1, 1) and _hw(call.input_shape) in maps
    shape = call.input_shape or ()
    return isinstance(call.module, nn.Linear) and len(shape) == 3 and any(
        m is not None and len(m) == 2 and shape[1] == m[0] * m[1] for m in maps)


def _roles(call: Call, branch: Branch) -> frozenset[str]:
    if not _kxk(call):
        return frozenset()
    spatial = [c for c in branch.calls if _kxk(c)]
    maps = {_hw(call.input_shape), _hw(call.output_shape)} - {None}
    pointwise = [c.index for c in branch.calls if _pointwise(c, maps)]
    roles = set()
    if pointwise:
        roles.add("spatial")
    if len(spatial) == 1:
        roles.add("only")
    elif spatial[0].index == call.index:
        roles.add("first")
    elif spatial[-1].index == call.index:
        roles.add("last")
    return frozenset(roles)


def branch_info(flow: Dataflow, call: Call) -> BranchInfo:
    """Whether ``call``'s layer lies in a residual branch, and its roles in the smallest one."""
    cache = _memo(flow)
    found = cache.info.get(call.path)
    if found is not None:
        return found
    residual_branches(flow)
    holding = cache.holding.get(call.index, [])
    if not holding:
        info = BranchInfo()
    else:
        own = min(holding, key=lambda b: len(b.nodes))
        info = BranchInfo(True, _roles(call, own), own)
    cache.info[call.path] = info
    return info


def is_trainable(module: nn.Module) -> bool:
    """A leaf module with a weight of two or more dimensions (conv, linear, embedding)."""
    return not any(True for _ in module.children()) and any(p.dim() >= 2 for p in module.parameters(recurse=False))


def emptied_branches(flow: Dataflow, removed: list[str]) -> list[tuple[Branch, list[str]]]:
    """The branches that hold a trainable layer now but would hold none once the modules at ``removed`` (and
    everything under them) are replaced; each with the removed paths that were in it."""
    def under(path: str, root: str) -> bool:
        return path == root or path.startswith(root + ".")

    out = []
    for branch in residual_branches(flow):
        trainable = [c.path for c in branch.calls if is_trainable(c.module)]
        if trainable and all(any(under(p, r) for r in removed) for p in trainable):
            out.append((branch, [r for r in removed if any(under(p, r) for p in trainable)]))
    return out
