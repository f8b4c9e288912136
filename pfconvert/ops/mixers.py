"""``eff_max`` and ``pool``: token mixers that replace self-attention in ViT-style blocks (the paper's efficient
transformer).

``EffMaxMixer`` is the paper's EffLayer (naver-ai/PfLayer ``vit_pf.py``): Linear(d -> e*d), GELU, k x k max-pool
(stride 1) over the token grid, GELU, Linear(e*d -> d), dropout. ``PoolMixer`` is PoolFormer's parameter-free mixer,
``avg_pool(x) - x`` over the grid (the block's residual adds ``x`` back). Class/register (prefix) tokens are not
mixed: the mixer outputs zeros for them, so the residual passes them through unchanged.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ._registry import BuildContext, Count, OpSpec, register_op

__all__ = ["EffMaxSpec", "PoolMixerSpec", "EffMaxMixer", "PoolMixer"]


class EffMaxSpec(OpSpec):
    """The paper's efficient token mixer for attention: Linear(d -> expand*d), GELU, k x k max-pool over the token
    grid, GELU, Linear(expand*d -> d). Prefix (class/register) tokens pass through unchanged."""

    op: Literal["eff_max"]
    expand: int = Field(3, ge=1, le=64, description="width of the mixer's hidden layer, in multiples of d")
    kernel_size: int = Field(3, ge=1, le=63, description="max-pool window over the token grid (stride 1)")


class PoolMixerSpec(OpSpec):
    """PoolFormer's parameter-free mixer for attention: `avg_pool(x) - x` over the token grid (padding excluded).
    Prefix (class/register) tokens pass through unchanged."""

    op: Literal["pool"]
    kernel_size: int = Field(3, ge=1, le=63, description="avg-pool window over the token grid (stride 1)")


class _GridMixer(nn.Module):
    """Splits prefix tokens from the patch grid, mixes the grid, returns zeros for the prefix."""

    def __init__(self, num_prefix_tokens: int, grid_size: tuple[int, int] | None) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.grid_size = grid_size

    def _grid(self, n: int) -> tuple[int, int]:
        if self.grid_size is not None and self.grid_size[0] * self.grid_size[1] == n:
            return self.grid_size
        side = math.isqrt(n)
        if side * side != n:
            raise RuntimeError(f"{type(self).__name__}: {n} patch tokens do not form a square grid")
        return side, side

    def mix(self, grid: torch.Tensor) -> torch.Tensor:
        """Mix a (B, C, H, W) grid of tokens; subclasses implement."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, *_: object, **__: object) -> torch.Tensor:
        b, n, c = x.shape
        p = self.num_prefix_tokens
        tokens = self.project_in(x[:, p:])
        h, w = self._grid(n - p)
        grid = tokens.transpose(1, 2).reshape(b, tokens.shape[-1], h, w)
        mixed = self.project_out(self.mix(grid).flatten(2).transpose(1, 2))
        return torch.cat([mixed.new_zeros(b, p, mixed.shape[-1]), mixed], dim=1) if p else mixed

    def project_in(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token map before mixing (identity by default)."""
        return x

    def project_out(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token map after mixing (identity by default)."""
        return x


class EffMaxMixer(_GridMixer):
    """The paper's efficient token mixer: Linear, GELU, max-pool over the grid, GELU, Linear."""

    def __init__(self, dim: int, expand: int = 3, kernel_size: int = 3, num_prefix_tokens: int = 0,
                 grid_size: tuple[int, int] | None = None, proj_drop: float = 0.0) -> None:
        super().__init__(num_prefix_tokens, grid_size)
        self.fc1 = nn.Linear(dim, dim * expand)
        self.act1 = nn.GELU()
        self.pool = nn.MaxPool2d(kernel_size, 1, kernel_size // 2)
        self.act2 = nn.GELU()
        self.fc2 = nn.Linear(dim * expand, dim)
        self.drop = nn.Dropout(proj_drop)
        for fc in (self.fc1, self.fc2):
            nn.init.trunc_normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)

    def project_in(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.fc1(x))

    def mix(self, grid: torch.Tensor) -> torch.Tensor:
        return self.act2(self.pool(grid))

    def project_out(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(x))


class PoolMixer(_GridMixer):
    """PoolFormer's mixer: ``avg_pool(x, k, stride 1, padding excluded) - x``; no parameters."""

    def __init__(self, kernel_size: int = 3, num_prefix_tokens: int = 0,
                 grid_size: tuple[int, int] | None = None) -> None:
        super().__init__(num_prefix_tokens, grid_size)
        self.kernel_size = kernel_size

    def mix(self, grid: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        return F.avg_pool2d(grid, k, 1, k // 2, count_include_pad=False) - grid


def _prefix_and_grid(model: nn.Module) -> tuple[int, tuple[int, int] | None]:
    """The model's number of prefix tokens and its patch grid (timm ``num_prefix_tokens``, ``patch_embed.grid_size``)."""
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    return prefix, (tuple(int(g) for g in grid) if grid is not None else None)  # type: ignore[return-value]


def _qkv(ctx: BuildContext) -> nn.Linear:
    qkv = getattr(ctx.module, "qkv", None)
    if not isinstance(qkv, nn.Linear):
        raise ctx.error("attention without a Linear qkv projection is not supported")
    return qkv


@register_op(EffMaxSpec, sites=("attention",), in_sequence=False,
             counts={"aten::max_pool2d": Count.POOL_WINDOW, "aten::max_pool2d_with_indices": Count.POOL_WINDOW})
def build_eff_max(spec: EffMaxSpec, ctx: BuildContext) -> nn.Module:
    """An :class:`EffMaxMixer` as wide as the attention's ``qkv`` input, on its device and dtype."""
    qkv = _qkv(ctx)
    prefix, grid = _prefix_and_grid(ctx.model)
    drop = getattr(getattr(ctx.module, "proj_drop", None), "p", 0.0)
    mixer = EffMaxMixer(qkv.in_features, spec.expand, spec.kernel_size, prefix, grid, drop)
    return mixer.to(device=qkv.weight.device, dtype=qkv.weight.dtype)


@register_op(PoolMixerSpec, sites=("attention",), in_sequence=False, counts={"aten::avg_pool2d": Count.POOL_WINDOW})
def build_pool_mixer(spec: PoolMixerSpec, ctx: BuildContext) -> nn.Module:
    """A :class:`PoolMixer` for the model's token grid."""
    _qkv(ctx)
    prefix, grid = _prefix_and_grid(ctx.model)
    return PoolMixer(spec.kernel_size, prefix, grid)
