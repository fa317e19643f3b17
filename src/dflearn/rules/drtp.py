import torch.nn.functional as F

from ..feedback.operators import DenseFeedback
from ..feedback.step import Pass
from .base import Rule, register_rule
from .dfa import fixed_init


@register_rule
class DRTP(Rule):
    """Direct Random Target Projection (Frenkel et al. 2021): the one-hot target,
    not the error, is projected: g_i = -(onehot(y)/N) B_i^T."""

    name = "drtp"
    summary = "direct random target projection: g_i = -(onehot(y)/N) B_i^T, B_i fixed random"

    def __init__(self, model, example_input, *, init: str = "kaiming"):
        super().__init__(model, example_input)
        self.feedback = DenseFeedback(self.layout, list(range(len(self.cuts))),
                                      init=fixed_init(init, model, self.layout, range(len(self.cuts))))

    def signals(self, fwd: Pass):
        target = F.one_hot(fwd.target, fwd.error.shape[1]).to(fwd.error.dtype)
        return self.on_cut_points(self.feedback.project(target.div_(-len(target))))
