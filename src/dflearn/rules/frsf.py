import torch

from .base import register_rule
from .fa import FA


@register_rule
class FRSF(FA):
    """Fixed random magnitude sign-concordant feedback (Liao et al.; seed 001
    eq. 14): B = M * sign(W), M fixed with entries uniform in (0, 1/sqrt(fan_in)),
    the sign taken from W at every forward pass."""

    name = "frsf"
    summary = "fixed random-magnitude sign-concordant feedback: B_i = M_i * sign(W_i^T), M_i > 0 fixed"

    def initial(self, modules):
        return [b.abs() for b in super().initial(modules)]  # the magnitudes M

    def feedback(self, k, module):
        return self.feedback_weights[k] * torch.sign(module.weight.detach())
