"""Token mixers that replace self-attention in ViT-style blocks (the paper's efficient transformer).

``EffMaxMixer`` is the paper's EffLayer (naver-ai/PfLayer ``vit_pf.py``): Linear(d -> e*d), GELU, k x k max-pool
(stride 1) over the token grid, GELU, Linear(e*d -> d), dropout. ``PoolMixer`` is PoolFormer's parameter-free mixer,
``avg_pool(x) - x`` over the grid (the block's residual adds ``x`` back). Class/register (prefix) tokens are not
mixed: the mixer outputs zeros for them, so the residual passes them through unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConversionError
from .schema import TokenMixerSpec

__all__ = ["EffMaxMixer", "PoolMixer", "build_token_mixer"]


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


def build_token_mixer(spec: TokenMixerSpec, attn: nn.Module, path: str, model: nn.Module) -> nn.Module:
    """The mixer that replaces attention module ``attn`` at ``path`` in ``model``.

    The number of prefix tokens and the patch grid come from the model (timm ``num_prefix_tokens``,
    ``patch_embed.grid_size``); the width from the attention's ``qkv`` projection.
    """
    qkv = getattr(attn, "qkv", None)
    if not isinstance(qkv, nn.Linear):
        raise ConversionError(f"layer '{path}': attention without a Linear qkv projection is not supported")
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    grid = tuple(int(g) for g in grid) if grid is not None else None
    if spec.op == "eff_max":
        drop = getattr(getattr(attn, "proj_drop", None), "p", 0.0)
        mixer: nn.Module = EffMaxMixer(qkv.in_features, spec.expand, spec.kernel_size, prefix, grid, drop)
    else:
        mixer = PoolMixer(spec.kernel_size, prefix, grid)
    ref = qkv.weight
    return mixer.to(device=ref.device, dtype=ref.dtype)
