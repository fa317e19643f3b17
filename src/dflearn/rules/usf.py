import torch

from .base import register_rule
from .fa import FA


@register_rule
class USF(FA):
    """Uniform sign-concordant feedback (Liao et al. 2016): B = s sign(W), taken
    from W's current sign at every forward pass, s = 1/sqrt(fan_in) (the default
    init's bound, so delta keeps BP's scale; s does not change any direction)."""

    name = "usf"
    summary = "uniform sign-concordant feedback: B_i = sign(W_i^T) / sqrt(fan_in)"

    def initial(self, modules):
        return []  # nothing stored: B is a function of W

    def feedback(self, k, module):
        return torch.sign(module.weight.detach()) * self.bounds[k]
