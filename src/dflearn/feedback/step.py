"""One training step under any rule: forward once, inject, backward once."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .tape import recording

if TYPE_CHECKING:
    from ..rules.base import Rule

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# called with an optimizer whose gradients are complete, just before its step
# (data-parallel training sums them over processes there)
Sync = Callable[[torch.optim.Optimizer], None]


@dataclass
class Pass:
    """What a rule may read after the forward pass.

    points: each feedback point's tensor h_i (still attached to its block's graph;
            rules read it detached),
    logits: the output a_L (detached),
    error:  e = dLoss/da_L (for mean cross-entropy, (softmax(a_L) - onehot(y)) / N),
    target: the labels y,
    model:  the model, for rules whose feedback follows its weights (KP reads their
            gradients, the weight mirror their values); rules must not keep it.
    """

    points: list[torch.Tensor]
    logits: torch.Tensor
    error: torch.Tensor
    target: torch.Tensor
    model: nn.Module | None = None


def forward(model: nn.Module, rule: "Rule", x: torch.Tensor, y: torch.Tensor,
            loss_fn: Loss = F.cross_entropy) -> tuple[Pass, torch.Tensor, torch.Tensor]:
    """Forward with the rule's cuts; returns the Pass, the loss and the attached logits."""
    with recording(model, rule.cuts) as tape, rule.forward_context(model):
        logits = model(x)
    z = logits.detach().requires_grad_()
    loss = loss_fn(z, y)
    (error,) = torch.autograd.grad(loss, z)
    return Pass(tape.outputs, z.detach(), error, y, model), loss.detach(), logits


def injection(logits: torch.Tensor, fwd: Pass, signals: list[torch.Tensor | None]):
    """The (tensors, gradients) of the step's one backward: the exact error at the
    logits, and each rule signal at its feedback point (points that carry no graph,
    a block without parameters, are skipped)."""
    tensors, grads = [logits], [fwd.error]
    for h, g in zip(fwd.points, signals):
        if g is not None and h.requires_grad:
            tensors.append(h)
            grads.append(g)
    return tensors, grads


def train_step(model: nn.Module, rule: "Rule", x: torch.Tensor, y: torch.Tensor,
               optimizer: torch.optim.Optimizer,
               feedback_optimizer: torch.optim.Optimizer | None = None,
               loss_fn: Loss = F.cross_entropy, sync: Sync | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Update `model` (and the rule's learned feedback) on one batch.

    The head gets the exact gradient e; each cut point i gets the rule's signal
    g_i, which autograd carries through block i alone. `sync`, if given, sees each
    optimizer right before its step. Returns the loss and the logits, both
    detached and left on the device (no host synchronisation).
    """
    optimizer.zero_grad(set_to_none=True)
    fwd, loss, logits = forward(model, rule, x, y, loss_fn)
    learns = feedback_optimizer is not None and rule.learns_feedback
    if learns and rule.update_feedback_first:  # LAS/LTAS: the signal uses the updated module
        _update_feedback(rule, fwd, feedback_optimizer, sync)
    tensors, grads = injection(logits, fwd, rule.signals(fwd))
    if logits.requires_grad:
        torch.autograd.backward(tensors, grads)
    if learns and not rule.update_feedback_first:  # DKP: W and B move together
        _update_feedback(rule, fwd, feedback_optimizer, sync)
    if sync is not None:
        sync(optimizer)
    optimizer.step()
    return loss, logits.detach()


def _update_feedback(rule: "Rule", fwd: Pass, feedback_optimizer: torch.optim.Optimizer,
                     sync: Sync | None) -> None:
    feedback_optimizer.zero_grad(set_to_none=True)
    rule.feedback_loss(fwd).backward()
    if sync is not None:
        sync(feedback_optimizer)
    feedback_optimizer.step()
