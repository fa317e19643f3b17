"""A small decoder-only transformer (GPT) for character-level language modelling.

Token and learned position embeddings, then `layers` pre-LayerNorm blocks

    x = x + Attn(LN(x))      causal multi-head self-attention (F.scaled_dot_product_attention)
    x = x + MLP(LN(x))       Linear(width, 4 width) -> GELU -> Linear(4 width, width)

and a final LayerNorm and Linear to the vocabulary: logits (N, T, V) for ids (N, T).

Feedback points sit on the residual stream: after every block (`points="block"`,
the default), or after every sublayer (`points="sublayer"`: after the attention
residual and after the MLP residual), the two placements Launay et al. (2020)
compare for DFA on transformers. A point's tensor is (N, T, width): features last,
positions in between, the shape a per-position direct rule projects into.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DflearnError
from ..feedback.point import FeedbackPoint
from .base import register_model


class Attention(nn.Module):
    """softmax(q kᵀ / √d) v for q, k, v of shape (N, heads, T, d), through
    F.scaled_dot_product_attention. It has no parameters, but two batched products per head
    (q kᵀ and the weights times v, T·T_k·d multiply-adds each), which `dflearn cost` reads
    from `macs`: counted whole under the causal mask, as FlopCounterMode counts the kernel."""

    def __init__(self, dropout: float, causal: bool):
        super().__init__()
        self.dropout, self.causal = dropout, causal

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal,
                                              dropout_p=self.dropout if self.training else 0.0)

    @staticmethod
    def macs(inputs: tuple, output: torch.Tensor) -> tuple[int, int]:
        """Per sample: forward MACs, and those of the input gradients (each product's
        gradient with respect to both of its operands: twice the forward)."""
        q, k = inputs[0], inputs[1]
        forward = 2 * q[0].numel() * k.shape[-2]
        return forward, 2 * forward


class SelfAttention(nn.Module):
    """Multi-head self-attention: causal (each position sees itself and the past) for the GPT,
    over all positions for the ViT."""

    def __init__(self, width: int, heads: int, dropout: float, causal: bool = False):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.attend = Attention(dropout, causal)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, T, C = x.shape
        q, k, v = self.qkv(x).view(N, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(self.attend(q, k, v).transpose(1, 2).reshape(N, T, C))


class Residual(nn.Module):
    """x + f(LN(x)) (pre-LayerNorm), with dropout on the branch."""

    def __init__(self, width: int, branch: nn.Module, dropout: float):
        super().__init__()
        self.norm, self.branch, self.drop = nn.LayerNorm(width), branch, nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.branch(self.norm(x)))


class GPT(nn.Module):
    def __init__(self, vocab: int, context: int = 128, layers: int = 4, width: int = 128, heads: int = 4,
                 dropout: float = 0.0, points: str = "block"):
        super().__init__()
        if width % heads:
            raise DflearnError(f"gpt: width {width} is not divisible by heads {heads}; choose heads dividing it")
        if points not in ("block", "sublayer"):
            raise DflearnError(f"gpt: unknown points '{points}'; choose block or sublayer")
        if min(vocab, context, layers, width, heads) < 1 or not 0 <= dropout < 1:
            raise DflearnError("gpt: vocab, context, layers, width and heads must be >= 1 and dropout in [0, 1)")
        self.context = context
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.zeros(context, width))
        nn.init.normal_(self.position, std=0.02)
        self.drop = nn.Dropout(dropout)
        blocks: list[nn.Module] = []
        for _ in range(layers):
            mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
            attention = Residual(width, SelfAttention(width, heads, dropout, causal=True), dropout)
            feedforward = Residual(width, mlp, dropout)
            if points == "sublayer":
                blocks += [attention, FeedbackPoint(), feedforward, FeedbackPoint()]
            else:
                blocks += [attention, feedforward, FeedbackPoint()]
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    @staticmethod
    def macs(inputs: tuple, output: torch.Tensor) -> tuple[int, int]:
        """For `dflearn cost`: the model's own parameter, the position table, is added elementwise
        (0 MACs); its submodules are counted on their own."""
        return 0, 0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        if T > self.context:
            raise DflearnError(f"gpt: a sequence of {T} tokens is longer than the context {self.context}")
        x = self.drop(self.embed(ids) + self.position[:T])
        return self.head(self.norm(self.blocks(x)))


@register_model("gpt")
@register_model("gpt-sublayer", points="sublayer")  # its own name, so grids keep both placements apart
def gpt(input_shape, num_classes, context: int = 128, layers: int = 4, width: int = 128, heads: int = 4,
        dropout: float = 0.0, points: Literal["block", "sublayer"] = "block") -> GPT:
    """Character GPT for text data (tinyshakespeare, text:PATH): pre-LN causal transformer, points per block or sublayer."""
    if len(input_shape) != 1:
        raise DflearnError(f"gpt models text (ids of shape (N, T)), not input {tuple(input_shape)}; "
                           f"use --dataset tinyshakespeare or text:PATH")
    return GPT(num_classes, context, layers, width, heads, dropout, points)


@torch.no_grad()
def generate(model: GPT, ids: torch.Tensor, tokens: int, temperature: float = 1.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Append `tokens` ids to the 1-D `ids`, each drawn from softmax(logits / temperature)
    of the last position given at most the last `context` ids, with `generator`'s draws."""
    was_training = model.training
    model.eval()
    out = ids.clone()
    try:
        for _ in range(tokens):
            logits = model(out[-model.context:][None])[0, -1].float()
            probs = torch.softmax(logits / temperature, dim=-1)
            out = torch.cat([out, torch.multinomial(probs, 1, generator=generator)])
    finally:
        model.train(was_training)
    return out
