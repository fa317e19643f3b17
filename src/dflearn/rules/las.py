import torch
from torch import nn

from ..errors import DflearnError
from ..feedback.layout import forward_weight_product
from ..feedback.operators import LinearLocal, local_module
from ..feedback.step import Pass
from .base import Rule, register_rule


@register_rule
class LAS(Rule):
    """Local Alignment Support (seed 001, Algorithm 1).

    Every hidden block but the last gets a local module M_i (linear, or conv +
    global average pooling on maps) trained to mimic the logits:
    loss_i = 1/2 ||M_i(h_i) - a_L||^2, batch mean, h_i and a_L detached. The signal is
    the VJP of the *updated* M_i at h_i with cotangent e (for linear M_i: e M_i).
    The last hidden block gets the exact BP signal W_L^T e.

    `init`: 'product' (M_i = W_L...W_{i+1} of the initial weights, the reference
    for MLPs), 'default' (as nn.Linear / nn.Conv2d), or 'auto' (product where the
    layers above are all Linear, default otherwise).
    """

    name = "las"
    summary = "local alignment support: g_i = e dM_i/dh_i, M_i trained on ||M_i h_i - a_L||^2; last block by BP"
    learns_feedback = True
    update_feedback_first = True

    def __init__(self, model, example_input, *, init: str = "auto"):
        super().__init__(model, example_input)
        self.cuts[self.last] = False
        modules = dict(model.named_modules())
        locals_ = []
        for point in self.layout.points[:-1]:
            convs = [modules[n] for n in point.block if isinstance(modules[n], nn.Conv2d)]
            kernel = convs[-1].kernel_size[0] if convs else 3
            locals_.append(local_module(point, self.layout.num_outputs, kernel))
        self.local = nn.ModuleList(locals_)
        if init not in ("auto", "product", "default"):
            raise DflearnError(f"{self.name}: unknown init '{init}'; choose auto, product or default")
        linear = all(isinstance(m, LinearLocal) for m in self.local)
        if init == "product" or (init == "auto" and linear):
            try:
                products = forward_weight_product(model, self.layout)
            except DflearnError:
                if init == "product":
                    raise
            else:
                with torch.no_grad():
                    for m, p in zip(self.local, products):
                        m.weight.copy_(p)

    def signals(self, fwd: Pass):
        return [m.vjp(fwd.error) for m in self.local] + [None]

    def feedback_loss(self, fwd: Pass) -> torch.Tensor:
        return sum(self.local_loss(m(h.detach()), fwd) for m, h in zip(self.local, fwd.points))

    def local_loss(self, y_i: torch.Tensor, fwd: Pass) -> torch.Tensor:
        # gradient h_i^T (y_i - a_L) / N: eq. 21, averaged over the batch like e
        return 0.5 * (y_i - fwd.logits).pow(2).sum(1).mean()
