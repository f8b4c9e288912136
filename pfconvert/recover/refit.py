"""Least-squares reconstruction: refit the layer that reads each replaced op's output, on calibration images.

After conversion, the linear layer right after a replaced op (a bottleneck's ``conv3``, an inverted residual's
``conv_pwl``: a 1x1 conv or a Linear) still holds weights trained to read the *removed* op's output. Given a few
hundred unlabelled images, the best weights for it to read the new op's output instead have a closed form: ridge
regression of the original layer's output (fed by the original model) on the converted layer's input (fed by the
converted model). Blocks are refit in forward order, each one on top of the already refit ones, so errors do not pile
up. Only the consumer's weight (and bias, or the running mean of the BatchNorm right after it) change; the structure
does not, so the result is still the converted architecture, just a better starting point for fine-tuning.

Cost: the layers are refit one after another, each on the images as the blocks before it now transform them. Where
the blocks holding the refit layers form a chain (each called once, each reading the previous one's output:
``blocks.0.0`` -> ``blocks.1.0`` -> ..., ``layer1.2`` -> ``layer2.0``), both models' activations at the current block
are kept for every image and carried one block forward at a time, so the whole refit costs about two forwards of each
model; where they do not (or the cache would take more than half the free memory), each layer costs a partial
forward of both models up to it.

Optionally (``block_steps``), each cached block holding a replaced op is then trained for a few steps to give the
original block's output from the converted model's input (block-wise distillation, as post-training quantization
does it: BRECQ), before the next block reads it: a local, cheap complement to the closed-form fit, which only reaches
the one linear layer after each replacement.

The consumer of a changed module is found from one traced forward of the converted model: the first 1x1 conv
(``groups=1``) or Linear called after it, inside the same block (read from the module name: ``layer1.0``,
``blocks.2.1``, RegNet's ``s1.b1``; else the smallest residual branch holding it), whose input has the changed
module's output shape.
Changed modules are the ones whose class differs from the original model's module at the same path; modules with
trainable parameters of their own (ViT token mixers) are left to fine-tuning.

Example::

    from pfconvert.recover import reconstruct
    fits = reconstruct(converted, original, calibration_batches)
    print(fits[0].path, fits[0].rel_error)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConversionError
from ..graph.dataflow import Call, Dataflow, trace_dataflow
from ..graph.match import block_path
from ..graph.residual import branch_info
from ..graph.modules import eval_mode

__all__ = ["BlockFit", "Refit", "changed_paths", "find_consumers", "reconstruct", "reconstruction_capacity"]


@dataclass(frozen=True)
class Refit:
    """One refit layer: its path, the changed modules it reads from, and the relative error of its output on the
    calibration images before (weights as converted) and after the fit: ``||y_conv - y_orig|| / ||y_orig||``.

    ``norm`` is the BatchNorm right after the layer, if any: its statistics are the original model's, which is what
    the fit targets, so BatchNorm re-estimation should leave it alone (re-estimating it would rescale the fitted
    output, whose variance least squares shrinks on purpose, to unit variance).
    """

    path: str
    after: tuple[str, ...]
    rel_error_before: float
    rel_error: float
    norm: str | None = None


@dataclass(frozen=True)
class BlockFit:
    """One block trained by block-wise distillation: its path, the steps taken, and the relative error of its output
    against the original block's on the calibration images before and after (``||y_conv - y_orig|| / ||y_orig||``;
    a block the steps did not improve is put back as it was, and reports the same error twice)."""

    path: str
    steps: int
    rel_error_before: float
    rel_error: float


class _Stop(Exception):
    """Raised from a hook to end a forward pass once the layer being refit has been reached."""


def changed_paths(converted: nn.Module, original: nn.Module) -> list[str]:
    """Paths whose module class differs between ``converted`` and ``original`` (outermost only, forward order is the
    registration order); parameter-free replacements only."""
    theirs = dict(original.named_modules())
    changed: list[str] = []
    replaced: list[str] = []  # every replacement, parameter-free or not: nothing inside one is looked at again
    for path, module in converted.named_modules():
        if not path or any(path.startswith(p + ".") for p in replaced):
            continue
        other = theirs.get(path)
        if other is not None and type(other) is type(module):
            continue
        replaced.append(path)
        if not any(True for _ in module.parameters()):
            changed.append(path)
    return changed


def _scope(flow: Dataflow, call: Call) -> Callable[[str], bool] | None:
    """Which module paths lie in the block around ``call``: under its block path when the name tells it
    (``layer1.0``, ``blocks.2.1``, RegNet's ``s1.b1``), else the smallest residual branch holding it (DLA's trees,
    HRNet's blocks), else None."""
    block = block_path(call.path)
    if block is not None:
        return lambda path: path == block or path.startswith(block + ".")
    branch = branch_info(flow, call).branch
    if branch is None:
        return None
    inside = {c.path for c in branch.calls}
    return inside.__contains__


def _is_linear_reader(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return (isinstance(module, nn.Conv2d) and module.groups == 1 and tuple(module.kernel_size) == (1, 1)
            and tuple(module.stride) == (1, 1) and module.padding in ((0, 0), "valid"))


def find_consumers(converted: nn.Module, original: nn.Module,
                   input_size: tuple[int, int, int]) -> dict[str, list[str]]:
    """``{consumer path: [changed paths it reads]}`` in forward order (see the module docstring for the rule)."""
    return _consumers(trace_dataflow(converted, input_size), converted, original)


def _consumers(flow: Dataflow, converted: nn.Module, original: nn.Module) -> dict[str, list[str]]:
    theirs = dict(original.named_modules())
    consumers: dict[str, list[str]] = {}
    for path in changed_paths(converted, original):
        calls = flow.calls_of(path)
        scope = _scope(flow, calls[0]) if calls else None
        if scope is None or calls[0].output_shape is None:
            continue
        found = _first_reader(flow.calls[calls[0].index + 1:], scope, calls[0].output_shape)
        if found is None or not isinstance(theirs.get(found.path), type(found.module)):
            continue
        if theirs[found.path].weight.shape != found.module.weight.shape:  # type: ignore[union-attr]
            continue
        consumers.setdefault(found.path, []).append(path)
    return consumers


def _first_reader(calls: Sequence[Call], inside: Callable[[str], bool], shape: tuple[int, ...]) -> Call | None:
    for call in calls:
        if not inside(call.path):
            return None
        if _is_linear_reader(call.module):
            return call if call.input_shape == shape else None
    return None


class _Normal:
    """Running sums of the normal equations of ``y_orig ~ A [x_conv; 1]``, in float64 on the activations' device.

    ``xx`` is ``sum [x_conv; 1] [x_conv; 1]^T``, ``tx`` is ``sum x_orig [x_conv; 1]^T`` and ``tt`` is
    ``sum x_orig x_orig^T``; the blocks without the constant row are :attr:`ss` and :attr:`ts`.
    """

    CHUNK = 1 << 16  # samples per outer product: bounds the float64 copies of large activations

    def __init__(self, features: int, device: torch.device) -> None:
        def zeros(rows: int, cols: int) -> torch.Tensor:
            return torch.zeros(rows, cols, dtype=torch.float64, device=device)

        self.xx = zeros(features + 1, features + 1)
        self.tx = zeros(features, features + 1)
        self.tt = zeros(features, features)

    @property
    def ss(self) -> torch.Tensor:
        """``sum x_conv x_conv^T``."""
        return self.xx[:-1, :-1]

    @property
    def ts(self) -> torch.Tensor:
        """``sum x_orig x_conv^T``."""
        return self.tx[:, :-1]

    def add(self, x_conv: torch.Tensor, x_orig: torch.Tensor) -> None:
        """Add the samples (columns) of one batch. Each chunk's products are computed in float32 (BLAS accumulates
        them blockwise: about 3e-7 relative error at 65,536 samples, 8x faster than float64) and summed in float64."""
        for start in range(0, x_conv.shape[1], self.CHUNK):
            xs = x_conv[:, start:start + self.CHUNK].float()
            xt = x_orig[:, start:start + self.CHUNK].float()
            self.ss.add_(xs @ xs.T)
            self.ts.add_(xt @ xs.T)
            self.tt += xt @ xt.T
            self.xx[:-1, -1] += xs.sum(1, dtype=torch.float64)
            self.xx[-1, -1] += xs.shape[1]
            self.tx[:, -1] += xt.sum(1, dtype=torch.float64)

    def moments(self) -> _Normal:
        """Mirror the constant row of the (symmetric) normal matrix and move everything to the CPU."""
        self.xx[-1, :-1] = self.xx[:-1, -1]
        self.xx, self.tx, self.tt = self.xx.cpu(), self.tx.cpu(), self.tt.cpu()
        return self


def _features(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """(features, samples): channels of a conv input, or the last dim of a Linear input."""
    if isinstance(layer, nn.Conv2d):
        return x.transpose(0, 1).reshape(x.shape[1], -1)
    return x.reshape(-1, x.shape[-1]).T


def _input_of(model: nn.Module, layer: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The input ``layer`` receives when ``model`` runs on ``images`` (the forward stops there)."""
    return _capture(model, layer, images, output=False)


def _output_of(model: nn.Module, layer: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The output ``layer`` returns when ``model`` runs on ``images`` (the forward stops there)."""
    return _capture(model, layer, images, output=True)


def _capture(model: nn.Module, layer: nn.Module, images: torch.Tensor, output: bool) -> torch.Tensor:
    """Run ``model`` on ``images`` until ``layer`` is called; return its first input, or its output."""
    seen: list[torch.Tensor] = []

    def hook(_module: nn.Module, args: tuple, result: torch.Tensor | None = None) -> None:
        seen.append(result if output else args[0])  # type: ignore[arg-type]
        raise _Stop

    handle = layer.register_forward_hook(hook) if output else layer.register_forward_pre_hook(hook)
    try:
        model(images)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not seen:
        raise ConversionError(f"{type(layer).__name__} was not called in the forward pass; cannot refit it")
    return seen[0]


def _next_batchnorm(model: nn.Module, path: str, channels: int) -> str | None:
    """The path of the BatchNorm registered right after ``path``, if it normalises ``channels`` channels."""
    modules = list(model.named_modules())
    index = next(i for i, (name, _) in enumerate(modules) if name == path)
    if index + 1 < len(modules):
        name, module = modules[index + 1]
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.num_features == channels:
            return name
    return None


def _error(weight: torch.Tensor, shift: torch.Tensor, target_w: torch.Tensor, n: _Normal) -> float:
    """||W_t x_t - (W x_s + shift)|| / ||W_t x_t|| from the accumulated moments (without the shared bias)."""
    count = n.xx[-1, -1]
    mean_s = n.xx[:-1, -1] / count
    target = torch.trace(target_w @ n.tt @ target_w.T)
    cross = torch.trace(target_w @ n.ts @ weight.T) + (target_w @ n.tx[:, -1]) @ shift
    own = torch.trace(weight @ n.ss @ weight.T) + 2 * (weight @ mean_s * count) @ shift + count * shift @ shift
    return float(((target - 2 * cross + own).clamp_min(0) / target.clamp_min(1e-30)).sqrt())


@torch.no_grad()
def reconstruct(converted: nn.Module, original: nn.Module, batches: Iterable[torch.Tensor], *,
                input_size: tuple[int, int, int] | None = None, ridge: float = 1e-3,
                advance: Callable[[int], None] | None = None, block_steps: int = 0, block_lr: float = 1e-3,
                blocks: list[BlockFit] | None = None) -> list[Refit]:
    """Refit, in place, the layer reading each parameter-free replacement of ``converted`` (see the module docstring).

    Args:
        converted: the converted model (changed in place; its train/eval flags are restored).
        original: the unconverted model it came from (not changed).
        batches: calibration images, un-augmented, on the models' device; iterated more than once, so a list.
        input_size: (C, H, W) for the tracing forward; default: the first batch's.
        ridge: ridge strength, relative to the mean input energy per feature.
        advance: called with 1 after each refit layer.
        block_steps: block-wise distillation steps per cached block holding a replaced op (0: none), one batch of
            ``batches`` each, Adam at ``block_lr`` on a cosine schedule; BatchNorm statistics stay as they are.
        block_lr: the peak learning rate of those steps.
        blocks: where to append a :class:`BlockFit` per trained block.

    Returns:
        One :class:`Refit` per refit layer, in forward order (empty when no replaced op has a linear reader).
    """
    batches = list(batches)
    if not batches:
        raise ConversionError("reconstruction needs at least one batch of calibration images")
    if block_steps < 0 or not block_lr > 0:
        raise ConversionError(f"block_steps must be 0 or more and block_lr above 0, got {block_steps} and {block_lr}")
    size = input_size if input_size is not None else tuple(batches[0].shape[1:])
    images = sum(len(b) for b in batches)
    done = advance if advance is not None else (lambda _n: None)
    with eval_mode(converted), eval_mode(original):
        flow = trace_dataflow(converted, size)  # type: ignore[arg-type]
        consumers = _consumers(flow, converted, original)
        fits: list[Refit] = []
        tuning = _Tuning(block_steps, block_lr, tuple(changed_paths(converted, original)),
                         blocks if blocks is not None else [])
        for step in _schedule(flow, consumers, images, batches[0]):
            if isinstance(step, _Segment):
                fits.extend(_refit_segment(converted, original, step, batches, ridge, done, tuning))
            else:
                fits.append(_refit(converted, original, step[0], step[1], batches, ridge))
                done(1)
    return fits


def reconstruction_capacity(converted: nn.Module, original: nn.Module, input_size: tuple[int, int, int],
                            device: torch.device | str = "cpu") -> int | None:
    """How many calibration images :func:`reconstruct` can hold in half the free memory of ``device`` together with
    both models' activations at the largest block it caches (see the module docstring), or None when no refit layer
    lies in a block it could cache from (every layer then takes partial forwards, and only the images are held)."""
    device = torch.device(device)
    with eval_mode(converted), eval_mode(original):
        flow = trace_dataflow(converted, input_size)
        consumers = _consumers(flow, converted, original)
    held = {block_path(path) for path in consumers} - {None}
    calls = [c for c in flow.calls if c.path in held and c.input_shape]
    if not calls:
        return None
    per_image = 4 * math.prod(input_size) + _cache_bytes(calls, 1, 4)  # float32 images and both models' activations
    return _cache_budget(device) // per_image


@dataclass(frozen=True)
class _Tuning:
    """The block-wise distillation asked of :func:`_refit_segment`: steps per block, learning rate, the changed
    paths (a block holding one is trained) and where the results go."""

    steps: int
    lr: float
    changed: tuple[str, ...]
    done: list[BlockFit]

    def wants(self, block: str) -> bool:
        return self.steps > 0 and any(path.startswith(block + ".") for path in self.changed)


@dataclass
class _Segment:
    """Blocks called one after another, each on the previous one's output, and the layers to refit in each."""

    blocks: list[str]
    layers: dict[str, list[tuple[str, tuple[str, ...]]]] = field(default_factory=dict)


def _schedule(flow: Dataflow, consumers: dict[str, list[str]], images: int,
              sample: torch.Tensor) -> list[_Segment | tuple[str, tuple[str, ...]]]:
    """The refits in forward order: runs of chained blocks as :class:`_Segment` (refit from cached activations),
    every other layer alone (refit from partial forwards of both models)."""
    named = [c for c in flow.calls if block_path(c.path) == c.path]  # blocks, and stages named like blocks (blocks.1)
    outer = {a.path for a in named for b in named if b.path.startswith(a.path + ".")}
    blocks = [c for c in named if c.path not in outer]
    position = {c.path: i for i, c in enumerate(blocks) if len(flow.calls_of(c.path)) == 1}
    budget = _cache_budget(sample.device)
    steps: list[_Segment | tuple[str, tuple[str, ...]]] = []
    last: int | None = None  # the block index of the open segment's last block
    for path, sources in consumers.items():
        block = block_path(path)
        at = position.get(block) if block is not None else None
        segment = steps[-1] if steps and isinstance(steps[-1], _Segment) else None
        if at is None:
            steps.append((path, tuple(sources)))
            last = None
            continue
        if segment is not None and last is not None and at >= last and _chained(blocks[last:at + 1]) \
                and _cache_bytes(blocks[position[segment.blocks[0]]:at + 1], images, sample.element_size()) <= budget:
            segment.blocks.extend(c.path for c in blocks[last + 1:at + 1])
        elif _cache_bytes(blocks[at:at + 1], images, sample.element_size()) <= budget:
            segment = _Segment([block])  # type: ignore[list-item]
            steps.append(segment)
        else:
            steps.append((path, tuple(sources)))
            last = None
            continue
        segment.layers.setdefault(block, []).append((path, tuple(sources)))  # type: ignore[arg-type]
        last = at
    return steps


def _chained(blocks: Sequence[Call]) -> bool:
    """Whether each block reads exactly the tensor the one before it returned (ids from the traced forward)."""
    return all(b.input_id is not None and b.input_id == a.output_id for a, b in zip(blocks, blocks[1:]))


def _cache_bytes(blocks: Sequence[Call], images: int, element_size: int) -> int:
    """Bytes held by both models' activations at the largest block input of ``blocks``, for every image."""
    largest = max(math.prod(c.input_shape[1:]) if c.input_shape else 0 for c in blocks)
    return 2 * largest * images * element_size


def _cache_budget(device: torch.device) -> int:
    """Half the memory free on ``device`` now (the activation cache of :func:`_refit_segment` may take that much)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): partial forwards only
        return 0


def _runs_as_chain(model: nn.Module, blocks: Sequence[str], images: torch.Tensor, start: torch.Tensor) -> bool:
    """Whether running ``blocks`` one after another from ``start`` (their input in ``model`` on ``images``) gives
    what the last one returns in the full forward: the check that the cached path computes what the model does."""
    x = start
    for path in blocks:
        x = model.get_submodule(path)(x)
    expected = _output_of(model, model.get_submodule(blocks[-1]), images)
    return isinstance(x, torch.Tensor) and x.shape == expected.shape and torch.allclose(x, expected, rtol=1e-4,
                                                                                        atol=1e-5)


def _refit_segment(converted: nn.Module, original: nn.Module, segment: _Segment, batches: list[torch.Tensor],
                   ridge: float, done: Callable[[int], None], tuning: _Tuning | None = None) -> list[Refit]:
    """Refit the layers of ``segment`` from both models' activations at each block, cached for every image and
    carried one block forward at a time (after the block's own layers are refit and, with ``tuning``, the block
    trained to give the original block's output)."""
    first = segment.blocks[0]
    mine = [_input_of(converted, converted.get_submodule(first), b) for b in batches]
    theirs = [_input_of(original, original.get_submodule(first), b) for b in batches]
    if not (_runs_as_chain(converted, segment.blocks, batches[0], mine[0])
            and _runs_as_chain(original, segment.blocks, batches[0], theirs[0])):
        del mine, theirs
        fits = []
        for layers in segment.layers.values():
            for path, sources in layers:
                fits.append(_refit(converted, original, path, sources, batches, ridge))
                done(1)
        return fits
    fits = []
    for index, block in enumerate(segment.blocks):
        my_block, their_block = converted.get_submodule(block), original.get_submodule(block)
        for path, sources in segment.layers.get(block, []):
            mine_layer, their_layer = converted.get_submodule(path), original.get_submodule(path)
            normal = _Normal(their_layer.weight.shape[1], batches[0].device)  # type: ignore[union-attr]
            for x_mine, x_theirs in zip(mine, theirs):
                normal.add(_features(_input_of(my_block, mine_layer, x_mine), mine_layer),
                           _features(_input_of(their_block, their_layer, x_theirs), their_layer))
            fits.append(_solve(converted, original, path, sources, normal, ridge))
            done(1)
        last = index + 1 == len(segment.blocks)
        if tuning is not None and tuning.wants(block):
            for i in range(len(theirs)):  # the targets, in place of the original's inputs (not needed any more)
                theirs[i] = their_block(theirs[i])
            tuning.done.append(_distill_block(block, my_block, mine, theirs, tuning.steps, tuning.lr))
            if not last:
                for i in range(len(mine)):
                    mine[i] = my_block(mine[i])
        elif not last:
            for i in range(len(mine)):
                mine[i], theirs[i] = my_block(mine[i]), their_block(theirs[i])
    return fits


def _block_error(block: nn.Module, inputs: list[torch.Tensor], targets: list[torch.Tensor]) -> float:
    """``||block(x) - y|| / ||y||`` over all the cached batches."""
    diff = sum(float((block(x).float() - y.float()).pow(2).sum()) for x, y in zip(inputs, targets))
    energy = sum(float(y.float().pow(2).sum()) for y in targets)
    return math.sqrt(diff / max(energy, 1e-30))


def _distill_block(path: str, block: nn.Module, inputs: list[torch.Tensor], targets: list[torch.Tensor],
                   steps: int, lr: float) -> BlockFit:
    """Train ``block`` (in eval mode: BatchNorm statistics fixed, affine weights trained) for ``steps`` batches to
    give ``targets`` from ``inputs`` (squared error over the target's mean square; Adam, cosine to 0). Kept only when
    it lowers the error on all the cached batches."""
    params = [p for p in block.parameters() if p.requires_grad]
    before = _block_error(block, inputs, targets)
    if not params:
        return BlockFit(path, 0, before, before)
    saved = {name: value.detach().clone() for name, value in block.state_dict().items()}
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(0)).tolist()
    with torch.enable_grad():
        for step in range(steps):
            index = order[step % len(order)]
            target = targets[index].float()
            loss = (block(inputs[index]).float() - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-12)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    for param in params:
        param.grad = None
    after = _block_error(block, inputs, targets)
    if not after < before:  # NaN or no better: put the block back
        block.load_state_dict(saved)
        return BlockFit(path, steps, before, before)
    return BlockFit(path, steps, before, after)


def _refit(converted: nn.Module, original: nn.Module, path: str, sources: tuple[str, ...],
           batches: list[torch.Tensor], ridge: float) -> Refit:
    """Refit one layer from partial forwards of both models, up to it, on every batch."""
    mine, theirs = converted.get_submodule(path), original.get_submodule(path)
    normal = _Normal(theirs.weight.shape[1], batches[0].device)  # type: ignore[union-attr]
    for images in batches:
        normal.add(_features(_input_of(converted, mine, images), mine),
                   _features(_input_of(original, theirs, images), theirs))
    return _solve(converted, original, path, sources, normal, ridge)


def _solve(converted: nn.Module, original: nn.Module, path: str, sources: tuple[str, ...], normal: _Normal,
           ridge: float) -> Refit:
    """Solve the ridge regression of the accumulated moments and write the weights (see :class:`Refit`)."""
    mine, theirs = converted.get_submodule(path), original.get_submodule(path)
    features = theirs.weight.shape[1]  # type: ignore[union-attr]
    normal.moments()
    target_w = theirs.weight.detach().reshape(theirs.weight.shape[0], features).double().cpu()  # type: ignore[union-attr]
    old_w = mine.weight.detach().reshape(target_w.shape).double().cpu()  # type: ignore[union-attr]
    before = _error(old_w, torch.zeros(target_w.shape[0], dtype=torch.float64), target_w, normal)
    lam = ridge * float(normal.xx.diagonal()[:-1].mean())
    eye = torch.eye(features + 1, dtype=torch.float64)
    eye[-1, -1] = 0.0  # the intercept is not shrunk
    solution = torch.linalg.solve(normal.xx + lam * eye, (target_w @ normal.tx).T).T
    weight, shift = solution[:, :-1], solution[:, -1]
    bias: torch.Tensor | None = getattr(mine, "bias", None)
    norm_path = _next_batchnorm(converted, path, target_w.shape[0])
    norm = converted.get_submodule(norm_path) if norm_path is not None else None
    if bias is None and norm is None:  # nowhere to put an intercept: refit without one
        solution = torch.linalg.solve(normal.xx[:-1, :-1] + lam * eye[:-1, :-1], (target_w @ normal.tx[:, :-1]).T).T
        weight, shift = solution, torch.zeros_like(shift)
    after = _error(weight, shift, target_w, normal)
    if after >= before:  # keep the weights as converted when the fit does not beat them (degenerate inputs)
        return Refit(path, sources, before, before)
    mine.weight.copy_(weight.reshape(mine.weight.shape).to(mine.weight))  # type: ignore[union-attr]
    if bias is not None:
        bias.copy_((theirs.bias.detach().double().cpu() + shift).to(bias))  # type: ignore[union-attr]
    elif norm is not None and norm.running_mean is not None:
        norm.running_mean.sub_(shift.to(norm.running_mean))  # type: ignore[operator]
    return Refit(path, sources, before, after, norm_path)
