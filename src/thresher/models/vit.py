"""A small Vision Transformer (Dosovitskiy et al. 2021) for low-resolution images, in plain torch.

Non-overlapping ``patch_size`` patches are embedded linearly (a strided conv), a learned [CLS]
token is prepended and learned position embeddings are added; ``depth`` pre-norm blocks of
multi-head self-attention and a GELU MLP follow, then a final LayerNorm, and the [CLS] token's
features are the embedding. Patch 4 turns a 32x32 image into 64 tokens, fine enough for a ViT
trained from scratch on CIFAR. The defaults (width 192 with 3 heads, as DeiT-Tiny, at depth 6)
have 2,693,578 parameters for 10 classes on 32x32x3 inputs.

Dropout, when set, goes where the ViT paper puts it: after every dense layer except the qkv
projection (and the head), and on the position-embedded tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from thresher.models.base import Classifier, check_probability, check_square, positive_ints
from thresher.models.registry import register_model

INIT_STD = 0.02


def trunc_normal_(tensor: torch.Tensor, std: float = INIT_STD) -> torch.Tensor:
    """Normal(0, std) cut at +-2 std, by inverse CDF: one pass, where torch's rejection
    sampler (``nn.init.trunc_normal_`` with a, b = +-2 std) makes building the model ~10x
    slower on CPU."""
    bound = math.erf(math.sqrt(2))  # P(|z| < 2): the uniform range that maps to [-2, 2] std
    with torch.no_grad():
        return tensor.uniform_(-bound, bound).erfinv_().mul_(std * math.sqrt(2))


class SelfAttention(nn.Module):
    """Multi-head self-attention; ``scaled_dot_product_attention`` picks the fused kernel."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(*qkv.unbind(0))  # [B, heads, N, d / heads]
        return self.drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))``, then ``x + mlp(LN(x))``."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(Classifier):
    """Patch embedding, [CLS] + position embeddings, pre-norm blocks; embed = the final
    LayerNorm of the [CLS] token (``dim`` features)."""

    def __init__(self, num_classes: int, in_shape: tuple[int, int, int], patch_size: int = 4,
                 dim: int = 192, depth: int = 6, heads: int = 3, mlp_ratio: float = 4.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        (patch_size,) = positive_ints("patch_size", patch_size)
        (dim,) = positive_ints("dim", dim)
        (depth,) = positive_ints("depth", depth)
        (heads,) = positive_ints("heads", heads)
        dropout = check_probability("dropout", dropout)
        side = check_square(in_shape, min_size=1)
        if side % patch_size:
            raise ValueError(f"the image side must be divisible by patch_size={patch_size}, "
                             f"got {side}x{side} inputs")
        if dim % heads:
            raise ValueError(f"dim must be divisible by heads, got dim={dim}, heads={heads}")
        if not dim * mlp_ratio >= 1:
            raise ValueError(f"mlp_ratio must give the MLP at least one unit (dim * mlp_ratio "
                             f">= 1), got mlp_ratio={mlp_ratio!r} with dim={dim}")
        self.patch = nn.Conv2d(in_shape[0], dim, patch_size, stride=patch_size)
        self.cls = nn.Parameter(torch.empty(1, 1, dim))
        self.pos = nn.Parameter(torch.empty(1, (side // patch_size) ** 2 + 1, dim))
        self.drop = nn.Dropout(dropout)
        hidden = int(dim * mlp_ratio)
        self.blocks = nn.Sequential(*(Block(dim, heads, hidden, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        trunc_normal_(self.cls)
        trunc_normal_(self.pos)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)  # [B, patches, dim]
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)
        tokens = self.blocks(self.drop(tokens + self.pos))
        return self.norm(tokens[:, 0])  # LayerNorm is per token: only [CLS] is needed


@register_model("vit_tiny", "small Vision Transformer (patch 4, dim 192, depth 6), "
                            "2.7M params for 32x32 images")
def vit_tiny(num_classes: int, in_shape: tuple[int, int, int], *, patch_size: int = 4,
             dim: int = 192, depth: int = 6, heads: int = 3, mlp_ratio: float = 4.0,
             dropout: float = 0.0) -> VisionTransformer:
    return VisionTransformer(num_classes, in_shape, patch_size, dim, depth, heads, mlp_ratio,
                             dropout)
