import math

import torch
from torch import nn

from ..feedback.sequential import feedback_layers, substituted
from .base import Rule, register_rule


class FeedbackWeights(nn.Module):
    """One tensor per substituted layer, in W's shape, under the layer's index:
    buffers (fixed) or parameters (learned), so `state_dict` holds them all."""

    def __init__(self, tensors: list[torch.Tensor], learned: bool = False):
        super().__init__()
        for k, t in enumerate(tensors):
            if learned:
                self.register_parameter(str(k), nn.Parameter(t))
            else:
                self.register_buffer(str(k), t)

    def __getitem__(self, k: int) -> torch.Tensor:
        return getattr(self, str(k))

    def __len__(self) -> int:
        return len(self._parameters) + len(self._buffers)


@register_rule
class FA(Rule):
    """Feedback alignment (Lillicrap et al. 2016; seed 001 eq. 10-13): the error
    travels layer by layer, but every Linear/Conv2d passes delta down through a
    fixed random B instead of W^T. Nothing is cut; the head's gradient is exact.

    Base of the sequential family (usf, brsf, frsf, kp, wm): a subclass changes
    `feedback(k, module)`, the B in effect for layer k at this forward pass.
    `layers` names the substituted modules: every Linear/Conv2d whose input needs
    a gradient (all but the first); other modules (BN, ...) keep exact BP. Works on
    any model, feedback points or not, and on any output shape.

    Cost: each layer's B (W's shape; uSF and brSF derive it from sign(W) each step
    and hold no values of their own, but use as many) replaces W^T in the backward,
    which the traced backward already counts; the rule adds the values it holds.
    """

    name = "fa"
    summary = "feedback alignment: delta_i = (B_{i+1} delta_{i+1}) * f'(a_i), B fixed random"
    learned = False  # B a parameter (kp, wm) or a buffer

    def __init__(self, model, example_input):
        super().__init__(model, example_input)
        self.layers = feedback_layers(model, example_input)
        modules = dict(model.named_modules())
        self.bounds = [init_bound(modules[n].weight) for n in self.layers]
        self.weight_sizes = [modules[n].weight.numel() for n in self.layers]
        self.feedback_weights = FeedbackWeights(self.initial(modules), learned=self.learned)

    def initial(self, modules) -> list[torch.Tensor]:
        """The stored tensors: B drawn like PyTorch's default layer init (same scale as W)."""
        return [torch.empty_like(modules[n].weight.detach()).uniform_(-b, b) for n, b in zip(self.layers, self.bounds)]

    def feedback(self, k: int, module: nn.Module) -> torch.Tensor:
        return self.feedback_weights[k].detach()

    def forward_context(self, model):
        return substituted(model, self.layers, self.feedback, self.name)

    def layer_loss(self, model, term) -> torch.Tensor:
        """sum_k <B_k, term(module_k)>: its gradient with respect to B_k is term(module_k),
        so the feedback optimizer's step applies that term (KP: W's gradient; WM: the mirror)."""
        modules = dict(model.named_modules())
        loss = torch.zeros((), device=self.feedback_weights[0].device)
        for k, name in enumerate(self.layers):
            t = term(modules[name])
            if t is not None:
                loss = loss + (self.feedback_weights[k] * t).sum()
        return loss

    def feedback_pairs(self, model) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """(layer name, B in effect, W) per substituted layer: B stands in for W (W's shape)."""
        modules = dict(model.named_modules())
        with torch.no_grad():
            return [(n, self.feedback(k, modules[n]), modules[n].weight.detach()) for k, n in enumerate(self.layers)]

    def feedback_cost(self, batch_size):
        out: dict[str, dict[str, int]] = {}
        for name, size in zip(self.layers, self.weight_sizes):
            counts = out.setdefault(self.layout.block_of(name), {})
            for key, value in self.layer_cost(size, batch_size).items():
                counts[key] = counts.get(key, 0) + value
        return out

    def layer_cost(self, size: int, batch_size: int) -> dict[str, int]:
        """One substituted layer's feedback counts, W having `size` entries."""
        return {"feedback_values": size}

    def extra_repr(self) -> str:
        return f"layers={list(self.layers)}"


def init_bound(weight: torch.Tensor) -> float:
    """1/sqrt(fan_in): the bound of nn.Linear/nn.Conv2d's default uniform init."""
    return 1 / math.sqrt(weight[0].numel())
