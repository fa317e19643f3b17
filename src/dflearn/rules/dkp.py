import torch

from ..errors import DflearnError
from ..feedback.operators import DenseFeedback
from ..feedback.step import Pass
from .base import Rule, register_rule


@register_rule
class DKP(Rule):
    """Direct Kolen-Pollack (Webster et al.): DFA whose B_i learn as if they were
    direct forward connections h_i -> output: dB_i = h_i^T e (plus the feedback
    optimizer's weight decay), so B_i and the forward path converge."""

    name = "dkp"
    summary = "direct Kolen-Pollack: g_i = e B_i^T, B_i <- B_i - lr (h_i^T e + wd B_i)"
    learns_feedback = True
    # (ref) B has its own Adam, lr 1e-4, weight decay 1e-6, decayed x0.8 per epoch
    feedback_defaults = {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-6, "gamma": 0.8}

    def __init__(self, model, example_input, *, init: str = "kaiming"):
        super().__init__(model, example_input)
        if init not in ("kaiming", "zeros"):
                raise DflearnError(f"dkp: unknown feedback init '{init}'; choose kaiming or zeros")
        self.feedback = DenseFeedback(self.layout, list(range(len(self.cuts))), learned=True, init=init)

    def signals(self, fwd: Pass):
        return self.on_cut_points(self.feedback.project(fwd.error))

    def feedback_loss(self, fwd: Pass) -> torch.Tensor:
        # d/dB of sum((H B) * e) is H^T e, stacked over points: one matmul for all B_i
        H = torch.cat([h.detach().flatten(1) for h in fwd.points], dim=1)
        return ((H @ self.feedback.B) * fwd.error).sum()
