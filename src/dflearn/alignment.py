"""How close a rule's learning signal is to backprop's (seed 001, Figure 4).

For each feedback point i, the cosine similarity between the rule's error
signal at the block's pre-activation (delta_i = g_i * f'(a_i), carried by
autograd through the block) and BP's delta_i, on the same batch and the same
parameters. 1 means the rule moves that layer exactly as BP would.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .feedback.step import Loss, Pass
from .feedback.tape import recording
from .rules.base import Rule


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors flattened whole (batch included); NaN if either is zero."""
    a, b = a.flatten().double(), b.flatten().double()
    denom = a.norm() * b.norm()
    return float(a @ b / denom) if denom > 0 else math.nan


def signal_alignment(model: nn.Module, rule: Rule, x: torch.Tensor, y: torch.Tensor,
                     loss_fn: Loss = F.cross_entropy) -> list[float]:
    """Per feedback point: cos(delta_rule, delta_BP) at the block's pre-activation.

    Points the rule leaves attached get BP's delta (cosine 1); points it cuts
    without a signal (Shallow's frozen blocks) give NaN. Parameters, gradients
    and BN statistics are left as they were.
    """
    modules = dict(model.named_modules())
    pre: dict[int, torch.Tensor] = {}
    handles = []
    for i, point in enumerate(rule.layout.points):
        if point.preactivation is not None:
            def keep(module, inputs, output, i=i):
                pre[i] = output
            handles.append(modules[point.preactivation].register_forward_hook(keep))
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    try:
        with torch.enable_grad(), recording(model, [False] * len(rule.cuts)) as tape:
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
    hs = tape.outputs
    at = [pre.get(i, hs[i]) for i in range(len(hs))]
    loss = loss_fn(logits, y)
    (error,) = torch.autograd.grad(loss, logits, retain_graph=True)
    bp = torch.autograd.grad(loss, at, retain_graph=True)
    signals = rule.signals(Pass(hs, logits.detach(), error, y))
    result = []
    for i, (h, a, g) in enumerate(zip(hs, at, signals)):
        if not rule.cuts[i]:
            result.append(1.0)
        elif g is None:
            result.append(math.nan)
        else:
            (delta,) = torch.autograd.grad(h, a, g, retain_graph=True) if a is not h else (g,)
            result.append(cosine(delta, bp[i]))
    return result
