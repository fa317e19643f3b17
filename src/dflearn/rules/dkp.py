from typing import Literal

import torch

from ..feedback.operators import DenseFeedback
from ..feedback.rule import optimizer_step, own_precision
from .base import Pass, register_rule
from .direct import DirectRule


@register_rule
class DKP(DirectRule):
    """Direct Kolen-Pollack (Webster et al.): DFA whose B_i learn as if they were
    direct forward connections h_i -> output: dB_i = h_i^T e (plus the feedback
    optimizer's weight decay), so B_i and the forward path converge. Per position on
    sequence outputs, summed over positions: dB_i = sum_{n,t} h_i[n,t]^T e[n,t].

    `init`: 'kaiming' (uniform, fan-in d_L), 'kaiming_n' (uniform, bound sqrt(6/n_i), what
    the reference's kaiming_uniform_ on its (d_L, n_i) tensor draws for the small net) or
    'zeros' (the reference's AlexNet)."""

    name = "dkp"
    summary = "direct Kolen-Pollack: g_i = e B_i^T, B_i <- B_i - lr (h_i^T e + wd B_i)"
    # (ref) B has its own Adam, lr 1e-4, weight decay 1e-6, decayed x0.8 per epoch
    feedback_defaults = {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-6, "gamma": 0.8}

    def __init__(self, model, example_input, *, init: Literal["kaiming", "kaiming_n", "zeros"] = "kaiming"):
        super().__init__(model, example_input)
        self.feedback = DenseFeedback(self.layout, self.cut_points(), learned=True, init=init)

    def signals(self, fwd: Pass):
        return self.on_cut_points(self.feedback.project(fwd.error))

    def feedback_loss(self, model, fwd: Pass) -> torch.Tensor:
        # d/dB of sum((H B) * E) is H^T E, stacked over points (rows: one per sample and position)
        return ((self._stacked_points(fwd) @ self.feedback.B) * self.layout.error_rows(fwd.error)).sum()

    def learn_feedback(self, model, fwd, feedback_optimizer, sync=None):
        """dB = H^T E in closed form: one matmul for all B_i, no autograd graph (equal to the
        gradient of feedback_loss, tests/test_engine.py)."""
        if feedback_optimizer is None:
            return
        feedback_optimizer.zero_grad(set_to_none=True)
        B = self.feedback.B
        with own_precision(B):
            B.grad = self._stacked_points(fwd).to(B.dtype).t() @ self.layout.error_rows(fwd.error).to(B.dtype)
        optimizer_step(feedback_optimizer, sync)

    def _stacked_points(self, fwd: Pass) -> torch.Tensor:
        return torch.cat([self.layout.points[i].rows(fwd.points[i].detach()) for i in self.feedback.points], dim=1)

    def feedback_cost(self, batch_size):
        """As DFA, plus the update dB_i = h_i^T e: as many MACs again."""
        out = super().feedback_cost(batch_size)
        for counts in out.values():
            counts["feedback_update"] = counts["signal"]
        return out
