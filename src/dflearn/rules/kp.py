import torch

from .base import register_rule
from .fa import FA


@register_rule
class KP(FA):
    """Kolen-Pollack, as modified by Akrout et al. (2019): B starts random and
    gets the forward weight's own update, dB = dW^T (W's gradient delta x^T, then
    the same optimizer and weight decay), so B - W^T decays and B aligns with W^T.

    Feedback settings default to the network's optimizer, lr and weight decay
    (without weight decay, B - W^T never shrinks: use some)."""

    name = "kp"
    summary = "Kolen-Pollack: delta_i = (B_{i+1} delta_{i+1}) * f'(a_i), B <- B - lr (dL/dW^T + wd B)"
    learned = True

    def feedback_loss(self, model, fwd) -> torch.Tensor:
        return self.layer_loss(model, lambda module: module.weight.grad)  # W's gradient from this step

    def layer_cost(self, size, batch_size):
        """B <- B - lr (dW + wd B): one multiply-add per entry, and B receives W's gradient."""
        return {"feedback_values": size, "feedback_update": size, "received_weights": size}
