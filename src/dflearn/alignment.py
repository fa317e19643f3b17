"""How close a rule's learning is to backprop's (seed 001, Figure 4), per feedback point.

- signal alignment: cosine of the rule's error signal at the block's
  pre-activation (delta_i = g_i * f'(a_i), carried by autograd through the
  block) with BP's delta_i;
- update alignment: cosine of the rule's gradient of block i's parameters with BP's;
- feedback angle: for matrix feedback, the angle in degrees between B_i and
  (W_L ... W_{i+1})^T, the matrix BP would use if the network were linear.

All on the same batch and the same parameters. 1 (or 0 degrees) means the
rule moves that layer exactly as BP would. `diagnostics` gathers all three.
"""
from __future__ import annotations

import contextlib
import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .errors import DflearnError
from .feedback.layout import forward_weight_product
from .feedback.operators import DenseFeedback, LinearLocal, SparseFeedback
from .feedback.step import Loss, Pass, forward, injection
from .feedback.tape import recording
from .rules.base import Rule


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors flattened whole (batch included); NaN if either is zero."""
    a, b = a.flatten().double(), b.flatten().double()
    denom = a.norm() * b.norm()
    return float(a @ b / denom) if denom > 0 else math.nan


@contextmanager
def buffers_kept(model: nn.Module):
    """A measuring forward pass must not move BN running statistics."""
    saved = {k: v.clone() for k, v in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(saved[k])


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
    with torch.enable_grad(), buffers_kept(model):
        hs, at, logits = _forward(model, rule, x, [False] * len(rule.cuts), contextlib.nullcontext())
        loss = loss_fn(logits, y)
        bp = torch.autograd.grad(loss, at)
        hs, at, logits = _forward(model, rule, x, rule.cuts, rule.forward_context(model))
        z = logits.detach().requires_grad_()
        (error,) = torch.autograd.grad(loss_fn(z, y), z)
        fwd = Pass(hs, logits.detach(), error, y, model)
        outputs, grads = injection(logits, fwd, rule.signals(fwd))
        deltas = torch.autograd.grad(outputs, at, grads, allow_unused=True)
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


def update_alignment(model: nn.Module, rule: Rule, x: torch.Tensor, y: torch.Tensor,
                     loss_fn: Loss = F.cross_entropy) -> list[float]:
    """Per feedback point: cos(rule's gradient of the block's parameters, BP's).

    The rule's gradient is what `train_step` would hand the optimizer (before
    weight decay); for LAS/LTAS it uses the local modules as they are, not
    after this step's update. Blocks the rule leaves without a gradient give NaN.
    """
    modules = dict(model.named_modules())
    blocks = [[p for n in point.block for p in modules[n].parameters(recurse=False)]
              for point in rule.layout.points]
    params = [p for block in blocks for p in block]
    with torch.enable_grad(), buffers_kept(model):
        bp = torch.autograd.grad(loss_fn(model(x), y), params, allow_unused=True)
        fwd, _, logits = forward(model, rule, x, y, loss_fn)
        tensors, grads = injection(logits, fwd, rule.signals(fwd))
        ours = torch.autograd.grad(tensors, params, grads, allow_unused=True)
    result, start = [], 0
    for block in blocks:
        a, b = ours[start:start + len(block)], bp[start:start + len(block)]
        start += len(block)
        if not block or all(g is None for g in a):
            result.append(math.nan)
        else:  # per tensor, no concatenation or float64 copies: this runs every align_every steps
            pairs = [(g.flatten(), h.flatten()) for g, h in zip(a, b) if g is not None and h is not None]
            dot = sum(float(g @ h) for g, h in pairs)
            norms = math.prod(math.sqrt(sum(float(g.flatten() @ g.flatten()) for g in gs if g is not None))
                              for gs in (a, b))
            result.append(dot / norms if norms > 0 else math.nan)
    return result


def feedback_matrices(rule: Rule) -> list[torch.Tensor | None]:
    """B_i (n_i, d_L) per feedback point where the rule's feedback is a matrix:
    DenseFeedback / SparseFeedback operators (DFA, DRTP, DKP, sparse DFA) and
    linear LAS/LTAS local modules (B_i = M_i^T); None elsewhere."""
    sizes = rule.layout.sizes
    out: list[torch.Tensor | None] = [None] * len(sizes)
    op = getattr(rule, "feedback", None)
    if isinstance(op, (DenseFeedback, SparseFeedback)):
        stacked = op.B.detach() if isinstance(op, DenseFeedback) else op.dense()
        for i, B in zip(op.points, stacked.split([sizes[i] for i in op.points])):
            out[i] = B
    for i, m in enumerate(getattr(rule, "local", ())):
        if isinstance(m, LinearLocal):
            out[i] = m.weight.detach().t()
    return out


def feedback_angle(model: nn.Module, rule: Rule) -> list[float] | None:
    """Per point: the angle (degrees) between B_i and (W_L...W_{i+1})^T of the
    current weights; NaN where the point has no matrix feedback. None when the
    rule has no matrix feedback or the layers above are not all Linear."""
    matrices = feedback_matrices(rule)
    if all(B is None for B in matrices):
        return None
    try:
        products = forward_weight_product(model, rule.layout)
    except DflearnError:
        return None
    return [math.nan if B is None else _degrees(cosine(B, P.t())) for B, P in zip(matrices, products)]


def _degrees(cos: float) -> float:
    return math.nan if math.isnan(cos) else math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def diagnostics(model: nn.Module, rule: Rule, x: torch.Tensor, y: torch.Tensor,
                loss_fn: Loss = F.cross_entropy) -> dict[str, list[float]]:
    """Everything above on one batch: {'alignment', 'update_alignment'[, 'feedback_angle']}."""
    out = {"alignment": signal_alignment(model, rule, x, y, loss_fn),
           "update_alignment": update_alignment(model, rule, x, y, loss_fn)}
    angle = feedback_angle(model, rule)
    if angle is not None:
        out["feedback_angle"] = angle
    return out


def feedback_angles(model: nn.Module, rule: Rule) -> dict[str, float]:
    """Per substituted layer of a sequential rule (fa, usf, brsf, frsf, kp, wm): the
    angle in degrees between its feedback weight B and W^T (0: BP's backward)."""
    if not hasattr(rule, "pairs"):
        raise DflearnError(f"rule '{rule.name}' has no layer feedback weights; feedback angles are for "
                           f"fa, usf, brsf, frsf, kp and wm")
    return {name: math.degrees(math.acos(max(-1.0, min(1.0, cosine(b, w))))) for name, b, w in rule.pairs(model)}
