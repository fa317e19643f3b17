import torch

from .base import register_rule
from .fa import FA


@register_rule
class BRSF(FA):
    """Batchwise random magnitude sign-concordant feedback (Liao et al. 2016):
    B = M * sign(W) with M redrawn, uniform in (0, 1/sqrt(fan_in)), at every
    forward pass (from torch's global generator, so seeded runs repeat)."""

    name = "brsf"
    summary = "batchwise random-magnitude sign-concordant feedback: B_i = M_i * sign(W_i^T), M_i redrawn each step"

    def initial(self, modules):
        return []  # nothing stored: the magnitudes are redrawn every step

    def feedback(self, k, module):
        w = module.weight.detach()
        return torch.rand_like(w) * self.bounds[k] * torch.sign(w)
