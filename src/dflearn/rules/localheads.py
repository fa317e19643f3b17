import math

import torch
from torch import nn

from ..feedback.layout import Point
from ..feedback.rule import default_loss, optimizer_step
from .base import Rule, register_rule


class PredictionHead(nn.Module):
    """A block's own classifier: Linear(features, d_L) with bias, per position where the
    point has the output's positions; on conv maps (C, H, W) of an output without
    positions, the mean over H x W first (a pooled linear head)."""

    def __init__(self, point: Point, num_outputs: int):
        super().__init__()
        self.pooled = len(point.shape) == 3 and not point.positions
        self.lead = len(point.positions)
        self.linear = nn.Linear(point.shape[0] if self.pooled else point.features, num_outputs)
        self.positions = math.prod(point.positions)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.pooled:
            return self.linear(h.mean((2, 3)))
        return self.linear(h.flatten(1 + self.lead))

    def macs(self) -> int:
        return self.linear.weight.numel() * self.positions


@register_rule
class LocalHeads(Rule):
    """Local classifier heads, the "local error signals" family (Nøkland & Eidnes 2019,
    the prediction loss): each hidden block i has a learned head M_i on its output and is
    trained by that head's own loss,

        g_i = d CE(M_i(h_i), y) / d h_i,        M_i <- M_i - lr dCE(M_i(h_i), y)/dM_i,

    the mean over batch and positions; no error from the network's output reaches a
    block (the graph is cut at every point) and the output layer learns by its own exact
    gradient. Unlike LTAS, the cotangent is the head's own error, not the network's e.
    Heads are the rule's parameters, trained by the feedback optimizer on the same
    loss, in the same backward as the blocks (the blocks see the heads before the step).
    """

    name = "localheads"
    summary = "local classifier heads: g_i = dCE(M_i h_i, y)/dh_i, M_i learned on the same loss"

    def __init__(self, model, example_input):
        super().__init__(model, example_input)
        self.cut_points()
        self.heads = nn.ModuleList(PredictionHead(p, self.layout.num_outputs) for p in self.layout.points)

    def step(self, model, x, y, optimizer, feedback_optimizer=None, loss_fn=None, sync=None):
        optimizer.zero_grad(set_to_none=True)
        if feedback_optimizer is not None:
            feedback_optimizer.zero_grad(set_to_none=True)
        fwd = self.forward_pass(model, x, y, loss_fn)
        local = [(loss_fn or default_loss)(head(h), y) for head, h in zip(self.heads, fwd.points)]
        # one backward: e at the logits, each head's loss into its head and its block
        roots = [(t, g) for t, g in zip([fwd.output, *local], [fwd.error, *(torch.ones_like(l) for l in local)])
                 if t.requires_grad]
        if roots:
            torch.autograd.backward(*zip(*roots))
        optimizer_step(optimizer, sync)
        if feedback_optimizer is not None:
            optimizer_step(feedback_optimizer, sync)
        return fwd.loss, fwd.logits

    def feedback_cost(self, batch_size):
        """Head i: forward, weight gradient and the signal into the block, each its MACs; the
        block receives only the labels (one per sample and position), no weights from above."""
        out = {}
        for point, head in zip(self.layout.points, self.heads):
            macs = batch_size * head.macs()
            out[point.name] = {"signal": macs, "feedback_update": 2 * macs,
                               "feedback_values": sum(p.numel() for p in head.parameters()),
                               "received_errors": self.layout.rows(batch_size)}
        return out
