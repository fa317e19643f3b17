"""The contract between the engine and a learning rule.

A rule is an `nn.Module` built from a model and an example input. It never holds
the model; it holds only its own feedback state (matrices, local modules), created
eagerly in `__init__`, so that `state_dict` round-trips it. Like a
`torch.optim.Optimizer`, a rule owns its `step()`:

    step(model, x, y, optimizer, feedback_optimizer=None, loss_fn=None, sync=None)

The base class gives the step of most rules, built from small pieces that a rule
overrides one at a time (or it overrides `step` whole, e.g. to run two forward
passes and no backward):

    forward_pass  one forward with the rule's cuts and `forward_context`: a `Pass`
    signals       g_i for each feedback point (None: nothing injected there)
    backward      one backward: the exact error e at the logits, g_i at each cut point
    learn_feedback  a step of the feedback optimizer on `feedback_loss` (rules with
                  parameters: DKP's B_i, LAS/LTAS's M_i, KP's and WM's B)

A rule *learns its feedback* exactly when it has parameters (`learns_feedback`);
fixed feedback lives in buffers. Two descriptions let the tools around the engine
(alignment, cost) read a rule without knowing its attributes:

    feedback_pairs(model)     [(name, B, forward counterpart)]: the matrices the rule
                              uses in place of the forward path's, beside them
    feedback_cost(batch_size) {block name: {count: value}}: what the rule's own
                              feedback adds to a step (see cost.BlockCost's fields)

Output shapes: logits (N, *S, d_L), the loss a mean over batch and positions
(`default_loss`), e of the logits' shape; see `layout` for how points are read.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .layout import Layout, probe
from .tape import recording

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# called with an optimizer whose gradients are complete, just before its step
# (data-parallel training sums them over processes there)
Sync = Callable[[torch.optim.Optimizer], None]


def default_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the last dimension, the mean over batch and positions."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


@dataclass
class Pass:
    """The record of one forward pass, what the rule's pieces read.

    points: each feedback point's tensor h_i (attached to its block's graph;
            rules read it detached),
    output: the logits a_L, attached (the backward starts here),
    logits: a_L detached,
    error:  e = dLoss/da_L (mean cross-entropy: (softmax(a_L) - onehot(y)) / (N prod(S))),
    target: the labels y, (N, *S),
    loss:   the loss, detached.
    """

    points: list[torch.Tensor]
    output: torch.Tensor
    logits: torch.Tensor
    error: torch.Tensor
    target: torch.Tensor
    loss: torch.Tensor


def output_error(logits: torch.Tensor, y: torch.Tensor, loss_fn: Loss | None = None):
    """(loss, e): the loss at detached logits and its gradient e with respect to them.

    The default loss gets e in closed form, (softmax(a_L) - onehot(y)) / rows,
    from the one log-softmax that gives the loss: no second autograd pass in every step
    (equal to autograd's, tests/test_engine.py). Any other loss goes through autograd."""
    if loss_fn is None or loss_fn is default_loss:
        z = logits.detach()
        with torch.no_grad(), torch.autocast(z.device.type, enabled=False):  # fp32 under autocast, as CE is
            rows = z.reshape(-1, z.shape[-1])
            logp = torch.log_softmax(rows if rows.dtype == torch.float64 else rows.float(), dim=-1)
            target = y.reshape(-1, 1)
            loss = -logp.gather(1, target).mean()
            error = logp.exp_().scatter_add_(1, target, torch.full(target.shape, -1.0, dtype=logp.dtype,
                                                                   device=logp.device))
            return loss, error.div_(len(rows)).to(z.dtype).view_as(z)
    z = logits.detach().requires_grad_()
    with torch.enable_grad():
        loss = (loss_fn or default_loss)(z, y)
        (error,) = torch.autograd.grad(loss, z)
    return loss.detach(), error


def own_precision(param: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off, for a gradient formed by hand in its parameter's dtype (fp32 under bf16
    autocast), as autograd would hand it to the optimizer."""
    return torch.autocast(param.device.type, enabled=False)


def optimizer_step(optimizer: torch.optim.Optimizer, sync: Sync | None) -> None:
    if sync is not None:
        sync(optimizer)
    optimizer.step()


class Rule(nn.Module):
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line of maths, shown by `dflearn rules`
    # optimizer settings for learned feedback where the reference code differs from the network's
    feedback_defaults: ClassVar[dict] = {}

    def __init__(self, model: nn.Module, example_input: torch.Tensor):
        super().__init__()
        self.layout: Layout = probe(model, example_input)
        self.cuts: list[bool] = [False] * len(self.layout.points)  # nothing cut: BP reaches every point

    # ------------------------------------------------------------ building
    def cut_points(self, *, keep_last: bool = False) -> list[int]:
        """Cut the graph at every point (all but the last with `keep_last`) after checking
        that a direct signal is defined there; returns the cut points' indices."""
        self.layout.check_direct(self.name)
        n = len(self.layout.points)
        self.cuts = [not (keep_last and i == n - 1) for i in range(n)]
        return [i for i, cut in enumerate(self.cuts) if cut]

    @property
    def last(self) -> int:
        return len(self.layout.points) - 1

    @property
    def learns_feedback(self) -> bool:
        """True when the rule has parameters (learned feedback) for a feedback optimizer."""
        return any(True for _ in self.parameters())

    # ------------------------------------------------------------ the step
    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
             feedback_optimizer: torch.optim.Optimizer | None = None, loss_fn: Loss | None = None,
             sync: Sync | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Update `model` (and the rule's learned feedback) on one batch; returns the loss
        and the logits, detached and left on the device (no host synchronisation)."""
        optimizer.zero_grad(set_to_none=True)
        fwd = self.forward_pass(model, x, y, loss_fn)
        self.backward(fwd)
        self.learn_feedback(model, fwd, feedback_optimizer, sync)  # DKP: W and B move together
        optimizer_step(optimizer, sync)
        return fwd.loss, fwd.logits

    def forward_pass(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Loss | None = None) -> Pass:
        """Forward with the rule's cuts (and `forward_context`)."""
        with recording(model, self.cuts) as tape, self.forward_context(model):
            output = model(x)
        loss, error = output_error(output, y, loss_fn)
        return Pass(tape.outputs, output, output.detach(), error, y, loss)

    def signals(self, fwd: Pass) -> list[torch.Tensor | None]:
        """g_i per feedback point; None where nothing is injected."""
        return [None] * len(fwd.points)

    def on_cut_points(self, values) -> list[torch.Tensor | None]:
        """Place one value per cut point (in order) into a per-point list, None elsewhere."""
        it = iter(values)
        return [next(it) if cut else None for cut in self.cuts]

    def injection(self, fwd: Pass) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The (tensors, gradients) of the step's one backward: the exact error at the
        logits, and each signal at its point (points carrying no graph are skipped)."""
        tensors, grads = [fwd.output], [fwd.error]
        for h, g in zip(fwd.points, self.signals(fwd)):
            if g is not None and h.requires_grad:
                tensors.append(h)
                grads.append(g)
        return tensors, grads

    def backward(self, fwd: Pass) -> None:
        if fwd.output.requires_grad:
            torch.autograd.backward(*self.injection(fwd))

    def feedback_loss(self, model: nn.Module, fwd: Pass) -> torch.Tensor:
        """A loss whose gradient with respect to the rule's parameters is the feedback update."""
        raise NotImplementedError(f"rule '{self.name}' has parameters but no feedback_loss")

    def learn_feedback(self, model: nn.Module, fwd: Pass, feedback_optimizer: torch.optim.Optimizer | None,
                       sync: Sync | None = None) -> None:
        if feedback_optimizer is None or not self.learns_feedback:
            return
        feedback_optimizer.zero_grad(set_to_none=True)
        self.feedback_loss(model, fwd).backward()
        optimizer_step(feedback_optimizer, sync)

    def forward_context(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """Context around `model(x)` in a training step; rules whose backward differs inside
        the blocks (FA and the sequential family) swap their layers in here."""
        return contextlib.nullcontext()

    # ------------------------------------------------------------ descriptions
    def feedback_pairs(self, model: nn.Module) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """(name, B, forward counterpart) for each matrix the rule uses in place of the forward
        path's: B_i (n_i, d_L) beside (W_L...W_{i+1})^T for direct rules, B beside W for the
        sequential ones. Empty where the rule has none or the counterpart is undefined."""
        return []

    def feedback_cost(self, batch_size: int) -> dict[str, dict[str, int]]:
        """What the rule's own feedback adds to one step of `batch_size` samples, per block
        (a point's name, or 'head'), in the counts of `dflearn.cost.BlockCost`. The network's
        own forward and backward are traced by `cost`, not described here."""
        return {}

    def extra_repr(self) -> str:
        return f"points={[p.name for p in self.layout.points]}, outputs={self.layout.num_outputs}"
