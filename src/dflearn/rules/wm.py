import torch

from ..errors import DflearnError
from ..feedback.sequential import mirror
from .base import register_rule
from .fa import FA


@register_rule
class WM(FA):
    """Weight mirror (Akrout et al. 2019): B starts random and learns in a mirror
    phase that drives each layer with noise x ~ N(0, noise^2), y = W x, and moves
    B += lr (y x^T averaged over the noise batch) - lr wd B; since E[y x^T] = noise^2 W,
    B settles at (noise^2 / wd) W, i.e. aligned with W^T.

    The mirror phase runs once per training step, after the backward (the next
    step's backward uses the mirrored B), as this rule's feedback update: rate and
    decay are the feedback optimizer's lr and weight decay (default SGD, lr 1e-3,
    wd 1, with the network's momentum). Options: `noise` (sigma), `mirror_batch`
    (noise samples per layer and step; a conv layer is mirrored on single
    receptive fields, its unfolded kernel).
    """

    name = "wm"
    summary = "weight mirror: B_i += lr (y x^T - wd B_i), x ~ N(0, s^2), y = W_i x; delta as FA with B_i"
    learned = True
    feedback_defaults = {"optimizer": "sgd", "lr": 1e-3, "weight_decay": 1.0}

    def __init__(self, model, example_input, *, noise: float = 1.0, mirror_batch: int = 64):
        super().__init__(model, example_input)
        if not noise > 0 or mirror_batch < 1:
            raise DflearnError(f"wm: noise must be > 0 and mirror_batch >= 1 (got {noise}, {mirror_batch})")
        self.noise, self.mirror_batch = float(noise), int(mirror_batch)

    def feedback_loss(self, model, fwd) -> torch.Tensor:
        # the gradient -y x^T: a descent step of the feedback optimizer is the mirror's update
        return -self.layer_loss(model, lambda module: mirror(module, self.mirror_batch, self.noise))

    def layer_cost(self, size, batch_size):
        """The mirror pass: per noise sample y = W x and y x^T, |W| MACs each (a conv layer on one
        receptive field); then B's update, one multiply-add per entry. Independent of the batch."""
        return {"feedback_values": size, "feedback_update": size, "extra_pass": 2 * self.mirror_batch * size}
