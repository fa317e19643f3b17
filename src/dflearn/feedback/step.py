"""`train_step`, the public function: the rule's own step (see `rule.Rule.step`)."""
from __future__ import annotations

import torch
from torch import nn

from .rule import Loss, Pass, Rule, Sync


def train_step(model: nn.Module, rule: Rule, x: torch.Tensor, y: torch.Tensor,
               optimizer: torch.optim.Optimizer,
               feedback_optimizer: torch.optim.Optimizer | None = None,
               loss_fn: Loss | None = None, sync: Sync | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Update `model` (and the rule's learned feedback) on one batch, as `rule.step` does.

    For most rules: the head gets the exact gradient e; each cut point i gets the
    rule's signal g_i, which autograd carries through block i alone. `sync`, if
    given, sees each optimizer right before its step. Returns the loss and the
    logits, both detached and left on the device (no host synchronisation).
    """
    return rule.step(model, x, y, optimizer, feedback_optimizer, loss_fn, sync)


def forward(model: nn.Module, rule: Rule, x: torch.Tensor, y: torch.Tensor, loss_fn: Loss | None = None) -> Pass:
    """The rule's forward pass on a batch (its cuts and context): the `Pass` its pieces read."""
    return rule.forward_pass(model, x, y, loss_fn)
