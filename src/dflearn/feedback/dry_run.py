"""A rule's own step, run for a look and then undone: what the diagnostics and the
cost tool measure, so that they measure what training does, for any rule.

`dry_step` runs `rule.step` with an optimizer that records the gradients it is
handed instead of stepping, inside `preserved`, which puts back everything a step
may change: the model's parameters, gradients and buffers (BN statistics), the
rule's state, the feedback optimizer's state and the random number generators
(so that measuring does not change the training run that follows).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .rule import Loss, Rule


class GradientCapture:
    """Stands in for the network's optimizer: `step()` records each parameter's gradient."""

    def __init__(self, params):
        self.params = list(params)
        self.param_groups = [{"params": self.params, "lr": 0.0}]
        self.grads: list[torch.Tensor | None] | None = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        self.grads = [None if p.grad is None else p.grad.detach().clone() for p in self.params]


@contextmanager
def preserved(model: nn.Module, rule: Rule | None = None,
              optimizer: torch.optim.Optimizer | None = None) -> Iterator[None]:
    tensors = [t for t in (*model.parameters(), *model.buffers())]
    values = [t.detach().clone() for t in tensors]
    grads = [p.grad for p in model.parameters()]
    rule_state = {k: v.clone() for k, v in rule.state_dict().items()} if rule is not None else None
    optimizer_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    devices = sorted({t.device.index or 0 for t in values if t.is_cuda})
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for t, v in zip(tensors, values):
                t.copy_(v)
        for p, g in zip(model.parameters(), grads):
            p.grad = g
        if rule_state is not None:
            rule.load_state_dict(rule_state)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)


def dry_step(model: nn.Module, rule: Rule, x: torch.Tensor, y: torch.Tensor, loss_fn: Loss | None = None,
             feedback_optimizer: torch.optim.Optimizer | None = None) -> list[torch.Tensor | None]:
    """The gradient of each model parameter (in `model.parameters()` order) that the rule's
    step would hand the optimizer on this batch; nothing is changed. With the feedback
    optimizer, the step learns its feedback first where the rule does (LAS: the signal of
    the updated modules), and that is undone too."""
    capture = GradientCapture(model.parameters())
    with preserved(model, rule, feedback_optimizer), torch.enable_grad():
        rule.step(model, x, y, capture, feedback_optimizer, loss_fn)
    return capture.grads if capture.grads is not None else [None] * len(capture.params)


@contextmanager
def gradients_at(model: nn.Module, names: list[str | None], points: list[str]) -> Iterator[list]:
    """Within the block, the gradient that reaches the output of module `names[i]` (the
    point `points[i]` itself where the name is None) in any backward is kept in the list
    it yields (None where none arrives; the last call of a module counts)."""
    modules = dict(model.named_modules())
    found: list[torch.Tensor | None] = [None] * len(names)
    handles = []
    for i, (name, point) in enumerate(zip(names, points)):
        def keep(module, inputs, output, i=i):
            if isinstance(output, torch.Tensor) and output.requires_grad:
                def store(g, i=i):
                    found[i] = g.detach().clone()
                output.register_hook(store)
        handles.append(modules[name if name is not None else point].register_forward_hook(keep, prepend=True))
    try:
        yield found
    finally:
        for h in handles:
            h.remove()
