"""How close a rule's learning signal is to backprop's (seed 001, Figure 4).

For each feedback point i, the cosine similarity between the rule's error
signal at the block's pre-activation (delta_i = g_i * f'(a_i), carried by
autograd through the block) and BP's delta_i, on the same batch and the same
parameters. 1 means the rule moves that layer exactly as BP would.
"""
from __future__ import annotations

import contextlib
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

    BP's delta comes from a plain forward pass; the rule's from a second one under
    its cuts and `forward_context`, with the same backward as `train_step` (exact
    error at the logits, the rule's signal at each cut point), so rules that change
    the backward inside the blocks (FA, KP, ...) are measured as well. Points that
    get no gradient (Shallow's frozen blocks) give NaN. Parameters, gradients and
    BN statistics are left as they were.
    """
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    try:
        with torch.enable_grad():
            hs, at, logits = _forward(model, rule, x, [False] * len(rule.cuts), contextlib.nullcontext())
            loss = loss_fn(logits, y)
            bp = torch.autograd.grad(loss, at)
            hs, at, logits = _forward(model, rule, x, rule.cuts, rule.forward_context(model))
            z = logits.detach().requires_grad_()
            (error,) = torch.autograd.grad(loss_fn(z, y), z)
            signals = rule.signals(Pass(hs, logits.detach(), error, y, model))
            outputs, grads = [logits], [error]
            for h, g in zip(hs, signals):
                if g is not None:
                    outputs.append(h)
                    grads.append(g)
            deltas = torch.autograd.grad(outputs, at, grads, allow_unused=True)
    finally:
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
    return [math.nan if d is None else cosine(d, b) for d, b in zip(deltas, bp)]


def _forward(model, rule, x, cuts, context):
    """One forward pass: the points' tensors, the pre-activations (the point itself
    when its block has no parametrised module) and the logits."""
    modules = dict(model.named_modules())
    pre: dict[int, torch.Tensor] = {}
    handles = []
    for i, point in enumerate(rule.layout.points):
        if point.preactivation is not None:
            def keep(module, inputs, output, i=i):
                pre[i] = output
            handles.append(modules[point.preactivation].register_forward_hook(keep))
    try:
        with recording(model, cuts) as tape, context:
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    hs = tape.outputs
    return hs, [pre.get(i, hs[i]) for i in range(len(hs))], logits


def feedback_angles(model: nn.Module, rule: Rule) -> dict[str, float]:
    """Per substituted layer of a sequential rule (fa, usf, brsf, frsf, kp, wm): the
    angle in degrees between its feedback weight B and W^T (0: BP's backward)."""
    if not hasattr(rule, "pairs"):
        from .errors import DflearnError
        raise DflearnError(f"rule '{rule.name}' has no layer feedback weights; feedback angles are for "
                           f"fa, usf, brsf, frsf, kp and wm")
    return {name: math.degrees(math.acos(max(-1.0, min(1.0, cosine(b, w))))) for name, b, w in rule.pairs(model)}
