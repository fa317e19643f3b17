"""A small Vision Transformer (ViT) for 32x32 images (and 28x28 MNIST-like, 8x8 digits).

The image is cut into `patch` x `patch` patches (a Conv2d with kernel = stride = patch,
i.e. one Linear per patch), a learned position embedding is added, and `layers`
pre-LayerNorm blocks follow:

    x = x + Attn(LN(x))      non-causal multi-head self-attention (F.scaled_dot_product_attention)
    x = x + MLP(LN(x))       Linear(width, 4 width) -> GELU -> Linear(4 width, width)

then a final LayerNorm, **mean pooling over the patches** (no class token: every
patch feeds the head the same way, so a per-position signal broadcast over the
patches is the exact shape of BP's at the pooling) and a Linear to the classes.

A FeedbackPoint follows every block: its tensor is (N, P, width), P = (H/patch)(W/patch)
patches, features last. Patches of 4 on 32x32 give 64 tokens, on 28x28 49; the 8x8
digits need patch 2 (16 tokens) or 4 (4 tokens).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import DflearnError
from ..feedback.point import FeedbackPoint
from .base import register_model
from .gpt import Residual, SelfAttention


class ViT(nn.Module):
    def __init__(self, input_shape, num_classes: int, patch: int = 4, layers: int = 4, width: int = 128,
                 heads: int = 4, dropout: float = 0.0):
        super().__init__()
        if len(input_shape) != 3:
            raise DflearnError(f"vit takes images (C, H, W), not input {tuple(input_shape)}")
        c, h, w = input_shape
        if min(patch, layers, width, heads) < 1 or not 0 <= dropout < 1:
            raise DflearnError("vit: patch, layers, width and heads must be >= 1 and dropout in [0, 1)")
        if h % patch or w % patch:
            raise DflearnError(f"vit: patch {patch} does not divide the {h}x{w} image; choose a patch "
                               f"that divides both sides (e.g. -m patch=2 for 8x8 digits)")
        if width % heads:
            raise DflearnError(f"vit: width {width} is not divisible by heads {heads}; choose heads dividing it")
        self.patches = nn.Conv2d(c, width, patch, stride=patch)
        self.position = nn.Parameter(torch.zeros((h // patch) * (w // patch), width))
        nn.init.normal_(self.position, std=0.02)
        self.drop = nn.Dropout(dropout)
        blocks: list[nn.Module] = []
        for _ in range(layers):
            mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
            blocks += [Residual(width, SelfAttention(width, heads, dropout), dropout),
                       Residual(width, mlp, dropout), FeedbackPoint()]
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    @staticmethod
    def macs(inputs: tuple, output: torch.Tensor) -> tuple[int, int]:
        """For `dflearn cost`: the model's own parameter, the position table, is added elementwise
        (0 MACs); its submodules are counted on their own."""
        return 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patches(x).flatten(2).transpose(1, 2)  # (N, P, width), patches in raster order
        x = self.drop(x + self.position)
        return self.head(self.norm(self.blocks(x)).mean(1))


@register_model("vit")
def vit(input_shape, num_classes, patch: int = 4, layers: int = 4, width: int = 128, heads: int = 4,
        dropout: float = 0.0) -> ViT:
    """Small ViT: patch embedding, pre-LN blocks, mean pooling (no class token), a point after every block."""
    return ViT(input_shape, num_classes, patch, layers, width, heads, dropout)
