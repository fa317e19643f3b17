from typing import Literal

import torch.nn.functional as F

from ..feedback.operators import DenseFeedback
from .base import Pass, register_rule
from .direct import DirectRule, fixed_init


@register_rule
class DRTP(DirectRule):
    """Direct Random Target Projection (Frenkel et al. 2021): the one-hot target,
    not the error, is projected: g_i = -(onehot(y)/N) B_i^T (per position on sequence
    outputs, divided by N prod(S) as the error is)."""

    name = "drtp"
    summary = "direct random target projection: g_i = -(onehot(y)/N) B_i^T, B_i fixed random"

    def __init__(self, model, example_input, *, init: Literal["kaiming", "kaiming_n", "product", "zeros"] = "kaiming"):
        super().__init__(model, example_input)
        direct = self.cut_points()
        self.feedback = DenseFeedback(self.layout, direct, init=fixed_init(init, model, self.layout, direct))

    def signals(self, fwd: Pass):
        target = F.one_hot(fwd.target, fwd.error.shape[-1]).to(fwd.error.dtype)
        return self.on_cut_points(self.feedback.project(target.div_(-fwd.target.numel())))
